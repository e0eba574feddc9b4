"""Tiny llava-hf LLaVA-NeXT and OneVision checkpoints in the hub's layout, and both in their original
releases' layouts, evaluate through the real ``lmms-eval --model lmms_ac_llava`` CLI on an MME-schema task,
with and without prefix sharing (same samples), PatchDrop per view, and a setting that would change the tiled
input stops the run."""

from __future__ import annotations

import os
import subprocess

import pytest
from test_plugin_cli import BIN, run_lmms_eval

pytestmark = pytest.mark.slow  # each test starts the lmms-eval CLI


@pytest.fixture(scope="module")
def next_dir(tmp_path_factory) -> str:
    from lmms_ac.testing.tiny_next import build_llava_next_hf

    return build_llava_next_hf(str(tmp_path_factory.mktemp("next_cli") / "llava-v1.6-vicuna-7b-hf"))["checkpoint"]


@pytest.fixture(scope="module")
def onevision_dir(tmp_path_factory) -> str:
    from lmms_ac.testing.tiny_onevision import build_llava_onevision_hf

    target = tmp_path_factory.mktemp("ov_cli") / "llava-onevision-qwen2-7b-ov-hf"
    return build_llava_onevision_hf(str(target))["checkpoint"]


@pytest.fixture(scope="module")
def next_original_dir(tmp_path_factory):
    """Original-format LLaVA-NeXT (liuhaotian/llava-v1.6-vicuna-7b layout); its mm_vision_tower hub id resolves
    through a hub cache under HF_HOME."""
    from lmms_ac.testing.released import build_hf_cache
    from lmms_ac.testing.tiny_next_original import build_llava_next_original

    root = tmp_path_factory.mktemp("next_original_cli")
    build_hf_cache(str(root / "hf"))
    return build_llava_next_original(str(root / "llava-v1.6-vicuna-7b"))["checkpoint"], {"HF_HOME": str(root / "hf")}


@pytest.fixture(scope="module")
def onevision_original_dir(tmp_path_factory, onevision_dir):
    """Original-format LLaVA-OneVision (lmms-lab/llava-onevision-qwen2-7b-ov layout), the SigLIP id from a hub cache."""
    from lmms_ac.testing.tiny_next_original import build_siglip_cache, onevision_twin_of

    root = tmp_path_factory.mktemp("ov_original_cli")
    build_siglip_cache(str(root / "hf"), layers=4)
    target = str(root / "llava-onevision-qwen2-7b-ov")
    return onevision_twin_of(onevision_dir, target)["checkpoint"], {"HF_HOME": str(root / "hf")}


@pytest.mark.parametrize("kind", ["next", "onevision", "next_original", "onevision_original"])
def test_tiled_checkpoint_scores_mme_through_the_cli(request, kind, mirror_dir, tmp_path):
    next_dir = request.getfixturevalue(f"{kind}_dir")
    next_dir, env = next_dir if isinstance(next_dir, tuple) else (next_dir, None)
    # float32 (the files are float16, as on the hub): sharing reorders sums, exact only where rounding is fine
    shared = run_lmms_eval(
        tmp_path / "a", next_dir, mirror_dir, "mme", str(tmp_path / "a" / "out"), "dtype=float32", extra_env=env
    )
    plain = run_lmms_eval(
        tmp_path / "b",
        next_dir,
        mirror_dir,
        "mme",
        str(tmp_path / "b" / "out"),
        model_args="dtype=float32,prefix_sharing=false",
        extra_env=env,
    )
    res = shared["results"]["results"]["mme"]
    assert "mme_perception_score,none" in res and "mme_cognition_score,none" in res
    assert shared["results"]["n-samples"]["mme"]["effective"] == 12
    assert shared["samples"]["mme"] == plain["samples"]["mme"]  # sharing changes no answer


def test_patch_drop_on_next_runs_through_the_cli_per_view(next_dir, mirror_dir, tmp_path):
    """PatchDrop on tiles (each view loses its own cells) through the real CLI: the generated robustness task
    scores, and the fraction of cells dropped over all views is reported."""
    run = run_lmms_eval(tmp_path, next_dir, mirror_dir, "mme_pdrop_random50", str(tmp_path / "out"))
    res = run["results"]["results"]["mme_pdrop_random50"]
    assert "mme_perception_score,none" in res
    assert res["cells_dropped,none"] == pytest.approx(0.5, abs=0.07)


def test_a_setting_that_would_change_the_tiled_input_stops_the_run(next_dir, mirror_dir, tmp_path):
    """image_aspect_ratio=pad on LLaVA-NeXT would feed one padded view instead of its tiles: refused at load, no
    results file (lmms-eval itself exits 0 when evaluation fails)."""
    env = {**os.environ, "LMMS_AC_DATASETS": mirror_dir, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    cmd = [
        str(BIN / "lmms-eval"),
        "--model",
        "lmms_ac_llava",
        "--model_args",
        f"pretrained={next_dir},device=cpu,image_aspect_ratio=pad",
        "--tasks",
        "mme",
        "--output_path",
        str(tmp_path / "out"),
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert "image_aspect_ratio='pad' on a LLaVA-NeXT checkpoint" in proc.stdout + proc.stderr
    assert not list((tmp_path / "out").rglob("*_results.json"))
