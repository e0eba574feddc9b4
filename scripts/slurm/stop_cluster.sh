#!/usr/bin/env bash
# Stop the cluster started by scripts/slurm/start_cluster.sh: cancel its jobs, stop slurmd, slurmctld,
# slurmdbd and the MariaDB it started (by their pid files under the state folder, nothing else), remove
# the configuration files it wrote and its state (pass --keep-state to keep logs and state for a look).
# munged is left running only if it was not started by the start script... it always is: it is stopped too.
set -uo pipefail

STATE=${LMMS_AC_SLURM_STATE:-/var/tmp/lmms-ac-slurm}
CONF_DIR=/etc/slurm
MARK="# lmms-ac test cluster (scripts/slurm/start_cluster.sh)"
KEEP=0
[ "${1:-}" = "--keep-state" ] && KEEP=1

say() { echo "slurm-stop: $*" >&2; }
ours() { [ -e "$1" ] && head -n1 "$1" | grep -qF "$MARK"; }

if ! ours "$CONF_DIR/slurm.conf"; then
  say "no cluster of ours is configured ($CONF_DIR/slurm.conf is absent or not ours); nothing to stop"
  exit 0
fi
command -v scancel >/dev/null && scancel --full --quiet --user=root 2>/dev/null || true

stop_pid() {  # stop_pid NAME PIDFILE: TERM, wait, then KILL
  local name=$1 file=$2 pid
  [ -s "$file" ] || return 0
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && { say "$name did not stop; killing $pid"; kill -KILL "$pid" 2>/dev/null; }
  fi
  rm -f "$file"
}
stop_pid slurmd "$STATE/slurmd.pid"
stop_pid slurmctld "$STATE/slurmctld.pid"
stop_pid slurmdbd "$STATE/slurmdbd.pid"
stop_pid mariadb /run/mysqld/lmms-ac-mariadb.pid
stop_pid munged /run/munge/munged.pid

rm -f "$CONF_DIR/slurm.conf" "$CONF_DIR/slurmdbd.conf"
if [ "$KEEP" = 0 ]; then rm -rf "$STATE"; else say "state and logs kept in $STATE"; fi
say "stopped"
