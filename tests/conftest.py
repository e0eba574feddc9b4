"""Session fixtures: tiny random checkpoints in both formats and tiny datasets in real schemas.

Nothing reaches a hub: HF_HUB_OFFLINE/HF_DATASETS_OFFLINE are set for the whole session.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest


@pytest.fixture(scope="session")
def llava_hf_dir(tmp_path_factory) -> str:
    from lmms_ac.testing.tiny import make_llava_hf

    return make_llava_hf(str(tmp_path_factory.mktemp("ckpt") / "tiny-llava-hf"))


@pytest.fixture(scope="session")
def original_dirs(tmp_path_factory, llava_hf_dir):
    """The same weights in the original LLaVA layout: full checkpoint, stage-1 projector only,
    and a checkpoint whose weights lack the projector."""
    from lmms_ac.testing.tiny import convert_to_original

    root = tmp_path_factory.mktemp("orig")
    full = convert_to_original(llava_hf_dir, str(root / "full" / "llava-v1.5-tiny"))
    stage1 = convert_to_original(llava_hf_dir, str(root / "stage1" / "llava-v1.5-tiny-pretrain"), stage1_only=True)
    noproj = convert_to_original(llava_hf_dir, str(root / "noproj" / "llava-v1.5-tiny"), drop_projector=True)
    return {"full": full, "stage1": stage1, "noproj": noproj}


@pytest.fixture(scope="session")
def mirror_dir(tmp_path_factory) -> str:
    from lmms_ac.testing.datasets import write_mirror

    root = tmp_path_factory.mktemp("mirror")
    write_mirror(str(root))
    return str(root)


@pytest.fixture(scope="session")
def llava_hf_vlm(llava_hf_dir):
    from lmms_ac.vlm.loaders import load_vlm

    return load_vlm(llava_hf_dir)


@pytest.fixture
def base_yaml(tmp_path):
    """A minimal base task YAML (``mme``) for generating robustness variants from."""
    path = tmp_path / "base" / "mme.yaml"
    path.parent.mkdir()
    path.write_text("task: mme\noutput_type: generate_until\nmetadata:\n  - version: 0.0\n", encoding="utf-8")
    return str(path)


#: what a fast test may not start: lmms-eval, lmms-ac, a launcher, a cluster command, a browser, and any
#: Python interpreter or Python script (a test's fake lmms-eval too: a second or more with our imports).
#: Small system helpers stay allowed (git for provenance, ldconfig when a library is first imported).
SLOW_PROGRAMS = {
    "lmms-eval",
    "lmms-ac",
    "accelerate",
    "torchrun",
    "sbatch",
    "srun",
    "squeue",
    "scancel",
    "sacct",
    "sinfo",
    "chromium",
    "chromedriver",
}


def starts_something_slow(args) -> bool:
    import shlex
    import shutil

    argv = shlex.split(args) if isinstance(args, str) else [os.fsdecode(a) for a in args]
    if not argv:
        return False
    name = os.path.basename(argv[0])
    if name in SLOW_PROGRAMS or name.startswith("python"):
        return True
    path = shutil.which(argv[0]) or argv[0]
    try:
        with open(path, "rb") as fh:
            return b"python" in fh.readline(200)  # a script run by Python (#!...python)
    except OSError:
        return False


@pytest.fixture(autouse=True)
def _fast_tests_stay_fast(request, monkeypatch):
    """A test not marked ``slow`` (``make test-fast`` skips those) may not start Python or one of
    SLOW_PROGRAMS, nor build an lmms-eval TaskManager: it fails here, naming the mark."""
    if request.node.get_closest_marker("slow"):
        return
    import subprocess

    def refused(what):
        return AssertionError(f"{request.node.nodeid} {what}: mark it @pytest.mark.slow")

    original_popen = subprocess.Popen.__init__

    def popen(self, args, *rest, **kwargs):
        if starts_something_slow(args):
            raise refused(f"starts {str(args)[:100]!r}")
        return original_popen(self, args, *rest, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", popen)

    def task_manager(*args, **kwargs):
        raise refused("builds an lmms-eval TaskManager")

    # our code builds TaskManagers through the adapter; a test that imported lmms-eval's own is caught too
    # (importing lmms_eval.tasks here would cost every fast run 8 s)
    monkeypatch.setattr("lmms_ac.plugin.task_manager", task_manager)
    import sys

    tasks = sys.modules.get("lmms_eval.tasks")
    if tasks is not None:
        monkeypatch.setattr(tasks.TaskManager, "__init__", task_manager)
