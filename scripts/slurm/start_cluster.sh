#!/usr/bin/env bash
# Start a single-node SLURM cluster with accounting on this machine, from Debian 12's packages:
#   apt-get install -y --no-install-recommends munge slurmctld slurmd slurmdbd slurm-client mariadb-server
# Installs nothing. Needs root. Writes /etc/slurm/{slurm,slurmdbd}.conf (marked as ours; a config that is
# not ours is never touched: the script refuses instead) and keeps all state under $LMMS_AC_SLURM_STATE
# (default /var/tmp/lmms-ac-slurm). Waits until the node is idle. Stop with scripts/slurm/stop_cluster.sh.
# Why each setting: no cgroups here (proctrack/linuxproc, task/none); cons_tres + CR_Core to share the node;
# slurmdbd + MariaDB because without sacct a job that dies without a result leaves submitit waiting forever.
set -euo pipefail

STATE=${LMMS_AC_SLURM_STATE:-/var/tmp/lmms-ac-slurm}
CONF_DIR=/etc/slurm
MARK="# lmms-ac test cluster (scripts/slurm/start_cluster.sh)"
CLUSTER=lmmsac
DB_PASS=lmmsac-slurmdbd
WAIT_S=${LMMS_AC_SLURM_WAIT_S:-90}

say() { echo "slurm-start: $*" >&2; }
die() { say "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (it starts munged, mariadb, slurmdbd, slurmctld and slurmd)"
for b in munged slurmctld slurmd slurmdbd sinfo sacctmgr mariadbd mariadb; do
  command -v "$b" >/dev/null || [ -x "/usr/sbin/$b" ] || die "$b is missing: apt-get install -y munge slurmctld slurmd slurmdbd slurm-client mariadb-server"
done
for f in "$CONF_DIR/slurm.conf" "$CONF_DIR/slurmdbd.conf"; do
  if [ -e "$f" ] && ! head -n1 "$f" | grep -qF "$MARK"; then
    die "$f exists and was not written by this script; refusing to replace a real SLURM configuration"
  fi
done
if sinfo -h -o %T 2>/dev/null | grep -q idle && head -n1 "$CONF_DIR/slurm.conf" 2>/dev/null | grep -qF "$MARK"; then
  say "already running (node idle)"; exit 0
fi

mkdir -p "$STATE"/{ctld,spool,log,mysql-run} "$CONF_DIR"
HOST=$(hostname -s)

# ---- munge: only /run/munge and munged run as user munge
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
chmod 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
  say "creating /etc/munge/munge.key"
  mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null || dd if=/dev/urandom of=/etc/munge/munge.key bs=128 count=1 status=none
  chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
fi
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged --force
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.2; done
fi
munge -n | unmunge >/dev/null || die "munge does not work (see /var/log/munge/munged.log)"

# ---- MariaDB for slurmdbd (root logs in through the unix socket)
mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
if ! mariadb -u root -e "SELECT 1" >/dev/null 2>&1; then
  [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
  (setsid /usr/sbin/mariadbd --user=mysql --datadir=/var/lib/mysql --socket=/run/mysqld/mysqld.sock \
      --pid-file=/run/mysqld/lmms-ac-mariadb.pid --skip-networking=0 --bind-address=127.0.0.1 \
      >"$STATE/log/mariadb.log" 2>&1 &)
  for _ in $(seq 100); do mariadb -u root -e "SELECT 1" >/dev/null 2>&1 && break; sleep 0.3; done
fi
mariadb -u root -e "SELECT 1" >/dev/null 2>&1 || die "MariaDB did not start (see $STATE/log/mariadb.log)"
mariadb -u root <<SQL
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
SQL

# ---- configuration
NODE=$(slurmd -C | head -n1 | sed -E "s/^NodeName=[^ ]+/NodeName=$HOST/")
case "$NODE" in NodeName=*) ;; *) die "slurmd -C printed no node line";; esac
cat >"$CONF_DIR/slurmdbd.conf" <<EOF
$MARK
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
PidFile=$STATE/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
EOF
chmod 0600 "$CONF_DIR/slurmdbd.conf"
cat >"$CONF_DIR/slurm.conf" <<EOF
$MARK
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SlurmdTimeout=60
InactiveLimit=0
KillWait=10
MinJobAge=300
MaxArraySize=10001
$NODE NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

# ---- daemons (each started once; pid files under $STATE)
running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
running "$STATE/slurmdbd.pid" || /usr/sbin/slurmdbd
for _ in $(seq 100); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.3; done
sacctmgr -n list cluster >/dev/null 2>&1 || die "slurmdbd did not answer (see $STATE/log/slurmdbd.log)"
sacctmgr -n list cluster format=cluster | grep -qw "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
running "$STATE/slurmctld.pid" || /usr/sbin/slurmctld
running "$STATE/slurmd.pid" || /usr/sbin/slurmd

# ---- wait for an idle node (poll; no fixed sleep)
for i in $(seq $((WAIT_S * 2))); do
  st=$(sinfo -h -n "$HOST" -o %T 2>/dev/null | head -n1 || true)
  case "$st" in
    idle*) say "cluster $CLUSTER up: node $HOST idle ($(echo "$NODE" | grep -oE 'CPUs=[0-9]+') $(echo "$NODE" | grep -oE 'RealMemory=[0-9]+'))"; exit 0;;
    down*|drain*|unknown*) [ $((i % 10)) = 0 ] && scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true;;
  esac
  sleep 0.5
done
die "node $HOST not idle after ${WAIT_S}s (state: ${st:-none}); logs in $STATE/log"
