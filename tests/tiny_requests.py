"""Tiny llava-hf LLaVA-NeXT / LLaVA-OneVision checkpoints (the tiled-input tests: test_next_hf.py,
test_tiled_probes.py) and the lmms-eval requests those tests and test_prefix_sharing.py send."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

from lmms_eval.api.instance import Instance

Doc = Dict[str, Any]


def build_tiny_tiled(kind: str, tmp_path_factory) -> str:
    """The tiny checkpoint of ``kind`` (``llava_next`` | ``llava_onevision``) in the hub layout; its folder."""
    if kind == "llava_next":
        from lmms_ac.testing.tiny_next import build_llava_next_hf

        return build_llava_next_hf(str(tmp_path_factory.mktemp("next") / "llava-v1.6-vicuna-7b-hf"))["checkpoint"]
    from lmms_ac.testing.tiny_onevision import build_llava_onevision_hf

    target = tmp_path_factory.mktemp("ov") / "llava-onevision-qwen2-7b-ov-hf"
    return build_llava_onevision_hf(str(target))["checkpoint"]


def single_image(doc: Doc) -> List[Any]:
    return [doc["image"]]


def tiny_model(checkpoint: str, docs: Sequence[Doc], share: bool, batch: int, task: str = "nx", **kw):
    """``lmms_ac_llava`` on ``checkpoint`` (float32, CPU) with ``docs`` as the test split of ``task``."""
    from lmms_ac.models.lmms_ac_llava import LmmsAcLlava

    lm = LmmsAcLlava(pretrained=checkpoint, device="cpu", dtype="float32", batch_size=batch, prefix_sharing=share, **kw)
    lm.task_dict[task] = {"test": list(docs)}
    return lm


def generate_requests(
    docs: Sequence[Doc],
    max_new_tokens: int,
    visual: Callable[[Doc], List[Any]] = single_image,
    task: str = "nx",
    order: Optional[Sequence[int]] = None,
) -> List[Instance]:
    """One ``generate_until`` request per doc (its question, answers capped, stopping at a blank line), for
    the doc ids in ``order`` (default: every doc, in order)."""
    return [
        Instance(
            "generate_until",
            (docs[i]["question"], {"max_new_tokens": max_new_tokens, "until": ["\n\n"]}, visual, i, task, "test"),
            idx=0,
            metadata={"task": task, "doc_id": i, "repeats": 1},
        )
        for i in (range(len(docs)) if order is None else order)
    ]


def loglikelihood_requests(docs: Sequence[Doc], answers: Sequence[str] = ("Yes", "No"), task: str = "nx"):
    """One ``loglikelihood`` request per (doc, answer)."""
    return [
        Instance(
            "loglikelihood",
            (doc["question"], answer, single_image, i, task, "test"),
            idx=0,
            metadata={"task": task, "doc_id": i, "repeats": 1},
        )
        for i, doc in enumerate(docs)
        for answer in answers
    ]
