"""lmms-eval's task-folder index is reused from the cache when no YAML changed, and rebuilt when one did."""

from __future__ import annotations

import os

from lmms_ac.entry_point import task_dir_index


def test_cached_index_is_reused_until_a_yaml_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("LMMS_AC_CACHE", str(tmp_path / "cache"))
    tasks = tmp_path / "tasks"
    (tasks / "sub").mkdir(parents=True)
    (tasks / "sub" / "a.yaml").write_text("task: a\n")
    calls = []

    def compute():
        calls.append(1)
        return {"a": {"type": "task", "yaml_path": str(tasks / "sub" / "a.yaml")}, "t": {"type": "tag", "task": ["a"]}}

    first = task_dir_index(str(tasks), compute)
    assert task_dir_index(str(tasks), compute) == first and len(calls) == 1  # second start: read back
    (tasks / "sub" / "b.yaml").write_text("task: b\n")
    task_dir_index(str(tasks), compute)
    assert len(calls) == 2  # a new YAML: indexed again
    st = os.stat(tasks / "sub" / "a.yaml")
    os.utime(tasks / "sub" / "a.yaml", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    task_dir_index(str(tasks), compute)
    assert len(calls) == 3  # an edited YAML: indexed again


def test_unwritable_cache_computes(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("LMMS_AC_CACHE", str(blocker))  # a file, not a folder
    assert task_dir_index(str(tmp_path), lambda: {"x": {"type": "task"}}) == {"x": {"type": "task"}}


def test_task_manager_index_equals_uncached(tmp_path, monkeypatch):
    monkeypatch.setenv("LMMS_AC_CACHE", str(tmp_path / "cache"))
    import lmms_eval.models  # noqa: F401  (installs the hooks)
    from lmms_eval.tasks import TaskManager

    patched = TaskManager._get_task_and_group
    original = patched.__wrapped__
    tm = TaskManager.__new__(TaskManager)
    tm.logger = None
    import lmms_eval.tasks as tasks_module

    tm.logger = tasks_module.eval_logger
    folder = os.path.dirname(os.path.abspath(tasks_module.__file__)) + "/"
    plain = dict(original(tm, folder))
    assert dict(patched(tm, folder)) == plain  # computed and stored
    assert patched(tm, folder) == plain  # read back
    assert any((tmp_path / "cache" / "task_dirs").iterdir())
