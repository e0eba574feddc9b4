"""The catalogue: registry, string forms, construction, and seeding (in-process and across processes)."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch

from lmms_ac.registry import UnknownEntryError
from lmms_ac.robustness import (
    PERTURBATIONS,
    STAGES,
    KeepGroup,
    Perturbation,
    PerturbationContext,
    RandomPatchDrop,
    SalientPatchDrop,
    make_perturbation,
    parse_perturbation,
    robust_task_name,
    stable_seed,
)
from lmms_ac.robustness.catalogue import register

EXPECTED = {
    "patchshuffle",
    "pdrop_random",
    "pdrop_salient",
    "pdrop_nonsalient",
    "synthetic",
    "tokperm",
    "tokperm_global",
    "tokgroup",
    "toknoise",
    "layernoise",
    "modnoise",
}


def all_examples():
    for name in PERTURBATIONS.names():
        cls = PERTURBATIONS.get(name)
        for params in cls.examples:
            for seed in (0, 3):
                yield cls(**params, seed=seed)


def test_registry_holds_the_catalogue():
    assert set(PERTURBATIONS.names()) == EXPECTED
    for name in PERTURBATIONS.names():
        cls = PERTURBATIONS.get(name)
        assert cls.name == name and cls.stage in STAGES and isinstance(cls.stochastic, bool)
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UnknownEntryError, match="did you mean 'pdrop_salient'"):
        PERTURBATIONS.get("pdrop_salinet")
    with pytest.raises(UnknownEntryError, match="did you mean 'pdrop_salient'"):
        parse_perturbation("pdrop_salinet30")
    with pytest.raises(UnknownEntryError, match="did you mean 'tokperm'"):
        make_perturbation("tokprem")


@pytest.mark.parametrize("p", list(all_examples()), ids=str)
def test_string_form_round_trips(p):
    text = p.to_string()
    assert text.replace("_", "").isalnum()
    back = parse_perturbation(text)
    assert back == p and type(back) is type(p) and back.to_string() == text


def test_string_forms_of_the_brief():
    assert parse_perturbation("patchshuffle4").params == {"n": 4}
    assert parse_perturbation("pdrop_random50") == RandomPatchDrop(ratio=0.5)
    assert parse_perturbation("pdrop_salient30") == SalientPatchDrop(ratio=0.3)
    assert parse_perturbation("tokgroup_m4_g5") == KeepGroup(m=4, group=5)
    assert parse_perturbation("tokperm_s2").seed == 2
    assert parse_perturbation("modnoise_text_l12").params == {"modality": "text", "layer": 12}
    assert make_perturbation("pdrop_nonsalient", ratio=0.7, by="count").to_string() == "pdrop_nonsalient70_count"
    assert make_perturbation("pdrop_nonsalient", ratio=0.7).to_string() == "pdrop_nonsalient70"  # by mass
    assert parse_perturbation("pdrop_salient30_count") == SalientPatchDrop(ratio=0.3, by="count")


def test_malformed_and_invalid_parameters():
    with pytest.raises(ValueError, match="expected 'tokgroup_m"):
        parse_perturbation("tokgroup_m4")
    with pytest.raises(ValueError):
        parse_perturbation("tokgroup_m2_g4")  # group out of range
    with pytest.raises(ValueError):
        RandomPatchDrop(ratio=1.5)
    with pytest.raises(ValueError, match="whole percent"):
        RandomPatchDrop(ratio=0.125)
    with pytest.raises(TypeError, match="parameters are"):
        make_perturbation("patchshuffle", m=4)
    assert RandomPatchDrop(ratio=0.1 + 0.2) == RandomPatchDrop(ratio=0.3)


def test_task_names():
    p = make_perturbation("pdrop_random", ratio=0.5, seed=1)
    assert robust_task_name("mme", p) == "mme_pdrop_random50_s1"
    from lmms_ac.robustness.names import base_task, perturbation_for_task  # the one name -> perturbation lookup

    assert perturbation_for_task("mme_pdrop_random50_s1") == p and base_task("mme_pdrop_random50_s1") == "mme"
    assert perturbation_for_task("scienceqa_img_tokgroup_m4_g5") == KeepGroup(m=4, group=5)
    assert base_task("scienceqa_img_tokgroup_m4_g5") == "scienceqa_img"
    assert perturbation_for_task("scienceqa_img") is None and base_task("scienceqa_img") == "scienceqa_img"


def test_registry_is_extensible_and_restorable():
    snap = PERTURBATIONS.snapshot()
    try:

        @register
        @dataclasses.dataclass(frozen=True, kw_only=True)
        class Invert(Perturbation):
            name, stage, form = "invert", "image", "invert"

            def apply(self, x, ctx):
                return 1 - x

        assert parse_perturbation("invert_s1") == Invert(seed=1)
    finally:
        PERTURBATIONS.restore(snap)
    assert "invert" not in PERTURBATIONS


def ctx(**kw):
    base = dict(task="mme_tokperm", doc_id=7, seed=0, grid=(4, 4), patch_size=14)
    base.update(kw)
    return PerturbationContext(**base)


def perm(c):
    x = torch.arange(16, dtype=torch.float32)[:, None]
    return make_perturbation("tokperm").apply(x, c)[:, 0].long().tolist()


def test_same_inputs_same_perturbation_and_different_doc_id_differs():
    assert perm(ctx()) == perm(ctx())
    assert ctx().generator().initial_seed() == ctx().generator().initial_seed()
    assert perm(ctx(doc_id=8)) != perm(ctx())
    assert perm(ctx(seed=1)) != perm(ctx())
    assert perm(ctx(image_index=1)) != perm(ctx())
    assert perm(ctx(task="mmbench_tokperm")) != perm(ctx())
    noise = make_perturbation("layernoise", layer=2)
    h = torch.randn(6, 4)
    assert torch.equal(noise.apply(h, ctx()), noise.apply(h, ctx()))
    assert not torch.equal(noise.apply(h, ctx(doc_id=8)), noise.apply(h, ctx()))


def test_context_helper_carries_the_perturbation_seed():
    p = make_perturbation("tokperm", seed=4)
    c = p.context("mme_tokperm_s4", 3, (2, 2), 14)
    assert c.seed == 4 and c.grid == (2, 2)


_CHILD = """
import json, sys, torch
from lmms_ac.robustness import PerturbationContext, make_perturbation, stable_seed
c = PerturbationContext(task="mme_tokperm", doc_id=7, seed=0, grid=(4, 4), patch_size=14)
x = torch.arange(16, dtype=torch.float32)[:, None]
print(json.dumps({
    "seed": stable_seed(3, "pope_pdrop_random50", 123, 1),
    "perm": make_perturbation("tokperm").apply(x, c)[:, 0].long().tolist(),
    "transformers": "transformers" in sys.modules,
}))
"""


@pytest.mark.slow
def test_identical_across_processes_and_hash_seeds():
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    child = json.loads(out.stdout.strip().splitlines()[-1])
    assert child["seed"] == stable_seed(3, "pope_pdrop_random50", 123, 1)
    assert child["perm"] == perm(ctx())
    assert child["transformers"] is False  # importing the package does not import transformers


@pytest.mark.slow
def test_package_import_is_lazy():
    """`import lmms_ac.robustness` (and so `lmms-ac --help`) does not import torch, nor does reading a string
    form (the grammar is torch-free); applying the perturbation does."""
    import subprocess
    import sys

    code = (
        "import sys, lmms_ac.robustness as r\nprint('torch' in sys.modules)\n"
        "p = r.parse_perturbation('tokperm')\nprint('torch' in sys.modules)\n"
        "p.context('t', 0, (2, 2), 1).generator()\nprint('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["False", "False", "True"], done.stderr[-2000:]
