"""Cost of the generated robustness tasks' bookkeeping (not a test; the timings that used to be
assertions in tests/test_robustness_tasks.py live here, on a machine you can trust to be quiet):

* name -> perturbation lookup, cached: 1000 calls of ``perturbation_for_task`` (target < 0.05 s);
* indexing the cached variants into a TaskManager index (``extend_index`` when the directory for
  the hash exists: one ``index.json`` read, no YAML parsed; target < 1 s).

    python bench/bench_task_index.py [--repeats 5]

Uses a throw-away ``$LMMS_AC_CACHE``; builds one real TaskManager first (to find the base YAMLs and
generate the directory), which is not timed.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import types


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="best of N")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        os.environ["LMMS_AC_CACHE"] = cache
        from lmms_ac.plugin import TaskManagerIndex, task_manager

        from lmms_ac.benchmarks import base_tasks
        from lmms_ac.robustness import tasks as T

        tm = task_manager(verbosity="INFO")
        T.perturbation_for_task("mme_tokperm")  # fill the cache
        lookups = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for _ in range(1000):
                T.perturbation_for_task("mme_tokperm")
            lookups.append(time.perf_counter() - t0)
        bases = [b for b in base_tasks() if b in tm.task_index]
        indexing = []
        for _ in range(args.repeats):
            fake = types.SimpleNamespace(_task_index={b: dict(tm.task_index[b]) for b in bases})
            t0 = time.perf_counter()
            info = T.extend_index(TaskManagerIndex(fake))
            indexing.append(time.perf_counter() - t0)
            assert not info.generated
        print(f"1000 cached name lookups: {min(lookups):.4f} s (target < 0.05)")
        print(f"indexing {info.tasks} cached variants: {min(indexing):.3f} s (target < 1.0)")


if __name__ == "__main__":
    main()
