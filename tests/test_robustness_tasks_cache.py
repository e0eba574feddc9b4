"""Pruning of stale generated-task directories in ``$LMMS_AC_CACHE/tasks``: only our marked hash
directories go, the newest K and the current one stay, anything used in the last hour stays, and a
prune never runs while another process holds the cache lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path
from typing import Optional

import pytest

from lmms_ac.plugin import TaskManagerIndex
from lmms_ac.robustness import task_cache as C

HOUR = 3600.0


@pytest.fixture
def T():
    from lmms_ac.robustness import tasks

    return tasks


def make_dir(T, root: Path, index_id: str, base_yaml: str, age_s: float = 0.0, now: Optional[float] = None) -> Path:
    """A real generated directory (one tokperm task of mme) last used ``age_s`` seconds ago."""
    specs = T.task_specs(["mme"], [T.VARIANTS.get("tokperm")])[:1]
    directory = T.generate(root / index_id, specs, {"mme": base_yaml}, index_id)
    set_age(directory, age_s, now)
    return directory


def set_age(directory: Path, age_s: float, now: Optional[float] = None) -> None:
    stamp = (time.time() if now is None else now) - age_s
    os.utime(directory / ".lmms_ac_generated", (stamp, stamp))


def hid(i: int) -> str:
    return f"{i:016x}"


def test_generated_directory_carries_the_marker(T, tmp_path, base_yaml):
    d = make_dir(T, tmp_path / "tasks", hid(1), base_yaml)
    marker = json.loads((d / T.MARKER).read_text())
    assert marker["hash"] == hid(1) and marker["kind"] == T.MARKER_KIND
    assert C.marker_time(d) == pytest.approx(time.time(), abs=60)
    assert sorted(p.name for p in d.iterdir()) == sorted(
        [T.MARKER, "index.json", "lmms_ac_shim.py", "mme_tokperm.yaml"]
    )
    assert not [p for p in d.parent.iterdir() if p.name.startswith(".") and p.is_dir()]  # no temp dir left


def test_prune_keeps_the_current_and_the_newest(T, tmp_path, base_yaml):
    root = tmp_path / "tasks"
    current = make_dir(T, root, hid(100), base_yaml)
    old = {i: make_dir(T, root, hid(i), base_yaml, age_s=(i + 1) * HOUR) for i in range(1, 6)}  # 2h .. 6h
    removed = T.prune_cache(current, keep=3)
    assert sorted(removed) == sorted(old[i] for i in (3, 4, 5))
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == [hid(1), hid(2), hid(100)]
    assert not [p for p in root.iterdir() if p.name.startswith(T.TRASH_PREFIX)]
    assert T.prune_cache(current, keep=3) == []  # idempotent
    assert T.prune_cache(current, keep=1) == [old[1], old[2]]
    assert (current / "index.json").is_file()


def test_prune_never_touches_what_is_not_ours(T, tmp_path, base_yaml):
    root = tmp_path / "tasks"
    current = make_dir(T, root, hid(100), base_yaml)
    unmarked = make_dir(T, root, hid(1), base_yaml, age_s=9 * HOUR)
    (unmarked / T.MARKER).unlink()  # a hash-named directory without our marker
    other_hash = make_dir(T, root, hid(2), base_yaml, age_s=9 * HOUR)
    (other_hash / T.MARKER).write_text(json.dumps({"kind": T.MARKER_KIND, "hash": hid(3)}))
    wrong_kind = make_dir(T, root, hid(4), base_yaml, age_s=9 * HOUR)
    (wrong_kind / T.MARKER).write_text(json.dumps({"kind": "something else", "hash": hid(4)}))
    garbage = make_dir(T, root, hid(5), base_yaml, age_s=9 * HOUR)
    (garbage / T.MARKER).write_text("not json")
    not_a_hash = root / "my-notes"
    not_a_hash.mkdir()
    (not_a_hash / T.MARKER).write_text(json.dumps({"kind": T.MARKER_KIND, "hash": "my-notes"}))
    (root / hid(6)).write_text("a file named like a hash")
    outside = make_dir(T, tmp_path / "elsewhere", hid(7), base_yaml, age_s=9 * HOUR)
    (root / hid(7)).symlink_to(outside, target_is_directory=True)  # a link to a marked directory
    in_progress = root / f".{hid(8)}.abc123"  # generate()'s temporary directory of another process
    in_progress.mkdir()
    for d in (unmarked, other_hash, wrong_kind, garbage, not_a_hash, in_progress):
        os.utime(d, (time.time() - 9 * HOUR,) * 2)
    before = sorted(p.name for p in root.iterdir())
    assert T.prune_cache(current, keep=1) == []
    assert sorted(p.name for p in root.iterdir() if p.name != T.LOCK_FILE) == before
    assert (outside / "index.json").is_file()


def test_prune_spares_directories_in_use(T, tmp_path, base_yaml):
    root = tmp_path / "tasks"
    now = time.time()
    current = make_dir(T, root, hid(100), base_yaml, age_s=2 * HOUR, now=now)  # indexed 2 h ago, still running
    recent = make_dir(T, root, hid(1), base_yaml, age_s=0.5 * HOUR, now=now)  # another run's, 30 min ago
    newer_but_old = make_dir(T, root, hid(2), base_yaml, age_s=1.5 * HOUR, now=now)  # used after current
    stale = make_dir(T, root, hid(3), base_yaml, age_s=3 * HOUR, now=now)
    assert T.prune_cache(current, keep=1, now=now) == [stale]
    assert recent.is_dir() and newer_but_old.is_dir() and current.is_dir()
    # claiming a directory (what every indexing process does) refreshes its last use
    old = make_dir(T, root, hid(4), base_yaml, age_s=5 * HOUR)
    assert T.claim_directory(old) and C.marker_time(old) == pytest.approx(time.time(), abs=60)
    assert T.prune_cache(current, keep=1) == [] and old.is_dir()
    assert not T.claim_directory(root / hid(9))  # absent: the caller generates it


def test_claim_adopts_a_complete_directory_without_marker(T, tmp_path, base_yaml):
    d = make_dir(T, tmp_path / "tasks", hid(1), base_yaml)
    (d / T.MARKER).unlink()
    assert C.marker_time(d) is None
    assert T.claim_directory(d) and C.marker_time(d) is not None


@pytest.mark.slow
def test_no_prune_while_another_process_holds_the_lock(T, tmp_path, base_yaml):
    root = tmp_path / "tasks"
    current = make_dir(T, root, hid(100), base_yaml)
    stale = make_dir(T, root, hid(1), base_yaml, age_s=5 * HOUR)
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from lmms_ac.robustness.task_cache import cache_lock
        with cache_lock(Path({str(root)!r}), exclusive=False):
            print("locked", flush=True)
            sys.stdin.readline()
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        assert T.prune_cache(current, keep=1) == [] and stale.is_dir()
    finally:
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.wait(timeout=60) == 0
    assert T.prune_cache(current, keep=1) == [stale] and not stale.exists()


def test_leftover_trash_is_removed(T, tmp_path, base_yaml):
    root = tmp_path / "tasks"
    current = make_dir(T, root, hid(100), base_yaml)
    trash = root / f"{T.TRASH_PREFIX}{hid(1)}-123-456"
    (trash / "sub").mkdir(parents=True)
    T.prune_cache(current, keep=3)
    assert not trash.exists() and current.is_dir()


def test_keep_setting(T, tmp_path, base_yaml, monkeypatch):
    root = tmp_path / "tasks"
    current = make_dir(T, root, hid(100), base_yaml)
    olds = [make_dir(T, root, hid(i), base_yaml, age_s=(i + 1) * HOUR) for i in range(1, 5)]
    monkeypatch.setenv(T.KEEP_ENV, "0")
    assert T.prune_cache(current) == []
    monkeypatch.setenv(T.KEEP_ENV, "lots")
    assert T.prune_cache(current) == olds[2:]  # falls back to the default, 3
    monkeypatch.delenv(T.KEEP_ENV)
    assert T.prune_cache(current, keep=2) == olds[1:2]


def test_extend_index_prunes_once_per_process(T, tmp_path, base_yaml, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("LMMS_AC_CACHE", str(cache))
    monkeypatch.delenv(T.KEEP_ENV, raising=False)
    monkeypatch.setattr(C, "prune_once", C.PruneOnce())
    root = T.cache_root()
    olds = [make_dir(T, root, hid(i), base_yaml, age_s=(i + 1) * HOUR) for i in range(1, 6)]
    foreign = root / hid(99)
    foreign.mkdir()

    def fake_tm():
        return types.SimpleNamespace(_task_index={"mme": {"type": "task", "yaml_path": base_yaml}})

    families = [T.VARIANTS.get("tokperm")]
    info = T.extend_index(TaskManagerIndex(fake_tm()), families=families)
    assert info.generated and info.tasks == 5 and info.directory.parent == root
    assert C.marker_time(info.directory) is not None
    names = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
    assert names == sorted([info.hash, hid(1), hid(2), hid(99)])  # current + the 2 newest others; foreign stays
    late = make_dir(T, root, hid(50), base_yaml, age_s=9 * HOUR)
    again = T.extend_index(TaskManagerIndex(fake_tm()), families=families)
    assert not again.generated and again.directory == info.directory
    assert late.is_dir()  # pruned once per process and cache root
    assert [d.exists() for d in olds] == [True, True, False, False, False]


@pytest.mark.slow
def test_unwritable_cache_leaves_lmms_eval_working(tmp_path, monkeypatch):
    """The TaskManager hook runs in every lmms-eval invocation: a cache it cannot write only costs
    the robustness tasks, with a warning naming the fix."""
    import subprocess
    import sys

    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    code = (
        "import lmms_eval.models\nfrom lmms_eval.tasks import TaskManager\n"
        "tm = TaskManager(verbosity='ERROR')\nprint('seed' in tm.all_tasks, 'mme' in tm.all_tasks, 'mme_tokperm' in "
        "tm.all_tasks)"
    )
    env = {**__import__("os").environ, "LMMS_AC_CACHE": str(blocker / "cache")}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "True True False"
    assert "set LMMS_AC_CACHE to a writable directory" in proc.stdout + proc.stderr
