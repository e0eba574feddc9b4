"""The lmms-eval wrapper, called in-process the way lmms-eval's evaluator calls it."""

from __future__ import annotations

import pytest
from lmms_eval.api.instance import Instance

from lmms_ac.models.lmms_ac_llava import MODEL_ARGS, LmmsAcLlava
from lmms_ac.testing.datasets import sample_images
from lmms_ac.vlm.prompts import build_prompt

DOCS = [{"image": im, "question": f"question {i}?", "answer": "Yes"} for i, im in enumerate(sample_images(6))]


@pytest.fixture(scope="module")
def model(llava_hf_dir):
    lm = LmmsAcLlava(pretrained=llava_hf_dir, device="cpu", batch_size=4, variant="tiny")
    lm.task_dict["toy"] = {"test": DOCS}
    return lm


def _visual(doc):
    return [doc["image"]]


def _gen_requests(gen_kwargs):
    return [
        Instance(
            "generate_until",
            (doc["question"], dict(gen_kwargs), _visual, i, "toy", "test"),
            idx=0,
            metadata={"task": "toy", "doc_id": i, "repeats": 1},
        )
        for i, doc in enumerate(DOCS)
    ]


def test_generate_until_matches_the_library_and_honours_until(model):
    out = model.generate_until(_gen_requests({"max_new_tokens": 6, "until": ["\n\n"]}))
    prompts = [build_prompt(d["question"], 1, model.prompt_format, model.tokenizer) for d in DOCS]
    assert out == model.vlm.generate(prompts, [[d["image"]] for d in DOCS], max_new_tokens=6, until=["\n\n"])
    cut = model.generate_until(_gen_requests({"max_new_tokens": 6, "until": "e"}))  # a string works too
    assert all("e" not in t for t in cut)
    with pytest.raises(ValueError, match="must be a string or a list"):
        model.generate_until(_gen_requests({"until": 5}))


def test_loglikelihood_requests(model):
    reqs = [
        Instance(
            "loglikelihood",
            (d["question"], "Yes", _visual, i, "toy", "test"),
            idx=0,
            metadata={"task": "toy", "doc_id": i, "repeats": 1},
        )
        for i, d in enumerate(DOCS)
    ]
    out = model.loglikelihood(reqs)
    prompts = [build_prompt(d["question"], 1, model.prompt_format, model.tokenizer) for d in DOCS]
    expected = model.vlm.loglikelihood(prompts, [" Yes"] * len(DOCS), [[d["image"]] for d in DOCS])
    assert [round(a, 4) for a, _ in out] == [round(b, 4) for b, _ in expected]
    assert all(isinstance(g, bool) for _, g in out)


def test_multi_round_is_a_clear_error(model):
    with pytest.raises(NotImplementedError, match="generate_until_multi_round"):
        model.generate_until_multi_round([])


def test_unknown_argument_lists_valid_ones(llava_hf_dir):
    with pytest.raises(ValueError, match="unknown model argument\\(s\\) for lmms_ac_llava: colour") as err:
        LmmsAcLlava(pretrained=llava_hf_dir, device="cpu", colour="red")
    assert all(name in str(err.value) for name in ("pretrained", "vision_tower", "perturbation"))
    assert "unknown" not in MODEL_ARGS


def test_vision_tower_override_with_the_same_weights(original_dirs, model):
    """vision_tower= replaces the checkpoint's tower: pointing it at the same tower gives the same outputs."""
    ckpt, tower = original_dirs["full"]["checkpoint"], original_dirs["full"]["tower"]
    a = LmmsAcLlava(pretrained=ckpt, device="cpu", prompt_format="vicuna_v1", image_aspect_ratio="original")
    b = LmmsAcLlava(
        pretrained=ckpt,
        device="cpu",
        prompt_format="vicuna_v1",
        image_aspect_ratio="original",
        vision_tower=f"clip:{tower}",
    )
    assert b.vlm.vision.spec == f"clip:{tower}"
    for lm in (a, b):
        lm.task_dict["toy"] = {"test": DOCS}
    reqs = _gen_requests({"max_new_tokens": 5})
    assert a.generate_until(reqs) == b.generate_until(_gen_requests({"max_new_tokens": 5}))
