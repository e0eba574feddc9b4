"""One request record for both inference paths: lmms-eval's gen_kwargs parsed once, with errors that
name the key; a doc's images decoded once per call on the shared path while they fit the keep budget."""

from __future__ import annotations

import pytest
from lmms_eval.api.instance import Instance

import lmms_ac.models.shared_prefix as shared_prefix
from lmms_ac.models.lmms_ac_llava import LmmsAcLlava
from lmms_ac.models.requests import Sampling, parse_sampling, parse_stops, with_leading_space
from lmms_ac.testing.prefix_data import mme_many_questions


def test_sampling_parsed_once_with_clear_errors():
    s = parse_sampling({"until": ["\n", "</s>"], "max_new_tokens": 5}, 128, "</s>")
    assert s == Sampling(max_new_tokens=5, stops=("\n",), do_sample=False, temperature=0.0, top_p=None, num_beams=1)
    assert s.greedy
    assert parse_sampling({"until": "Q:"}, 7, None).stops == ("Q:",)
    assert parse_sampling({}, 7, None).max_new_tokens == 7  # the model's default
    warm = parse_sampling({"temperature": 0.7, "top_p": "0.9"}, 7, None)
    assert warm.do_sample and warm.top_p == 0.9 and not warm.greedy
    assert not parse_sampling({"num_beams": 3}, 7, None).greedy
    with pytest.raises(ValueError, match=r"gen_kwargs\['until'\]"):
        parse_stops(5)
    with pytest.raises(ValueError, match=r"gen_kwargs\['until'\]"):
        parse_stops(["ok", 3])
    with pytest.raises(ValueError, match=r"max_new_tokens'\] must be >= 1"):
        parse_sampling({"max_new_tokens": -1}, 7, None)
    with pytest.raises(ValueError, match="do_sample"):
        parse_sampling({"do_sample": "maybe"}, 7, None)
    assert with_leading_space("A") == " A" and with_leading_space(" A") == " A" and with_leading_space("\nA") == "\nA"


@pytest.fixture(scope="module")
def shared_lm(llava_hf_dir):
    import torch

    torch.set_num_threads(1)
    lm = LmmsAcLlava(pretrained=llava_hf_dir, device="cpu", dtype="float32", batch_size=4, variant="tiny")
    lm.task_dict["q"] = {"test": mme_many_questions(2, 4)}
    return lm


def _requests(lm, calls):
    docs = lm.task_dict["q"]["test"]

    def visual(doc):
        calls.append(doc["question_id"])
        return [doc["image"]]

    return [
        Instance(
            "generate_until",
            (d["question"], {"max_new_tokens": 2, "until": ["\n\n"]}, visual, i, "q", "test"),
            idx=0,
            metadata={"task": "q", "doc_id": i, "repeats": 1},
        )
        for i, d in enumerate(docs)
    ]


def test_shared_path_decodes_each_doc_once_within_budget(shared_lm, monkeypatch):
    calls: list = []
    first = shared_lm.generate_until(_requests(shared_lm, calls))
    assert len(calls) == 8  # 2 images x 4 questions, each doc fetched once
    monkeypatch.setattr(shared_prefix, "KEEP_IMAGE_BYTES", 0)  # nothing kept: fetched again for its batch
    calls.clear()
    again = shared_lm.generate_until(_requests(shared_lm, calls))
    assert len(calls) == 16 and again == first


def test_unshared_and_shared_records_agree(shared_lm):
    calls: list = []
    reqs = _requests(shared_lm, calls)
    assert shared_lm.generate_until_unshared(reqs) == shared_lm.generate_until(reqs)
