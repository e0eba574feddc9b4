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
