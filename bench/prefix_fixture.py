"""The checkpoint, data and requests the shared-prefix benchmarks run on, all chosen by flags so a
run can use a checkpoint and a question set the code was not tuned on.

* ``make_checkpoint``: a random llava-hf checkpoint (both ``lmms_ac_llava`` and lmms-eval's
  ``llava_hf`` load it): a CLIP-like tower whose image size gives ``image_tokens`` visual tokens per view
  and a Llama of ``llm_layers`` x ``llm_hidden``; LLaVA-1.5's one view or LLaVA-NeXT's anyres tiles.
* ``write_mirror``: ``n_images x per_image`` questions in MME's schema from one of ``QUESTION_SETS``,
  saved where the ``mme`` task reads its local copy (``LMMS_AC_DATASETS``).
* ``mme_requests`` / ``copy_requests``: the ``mme`` task's own requests, answers capped.
"""

from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Optional, Tuple

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars would interleave with the tables

# "mme": lmms_ac.testing.prefix_data's yes/no questions (what the benchmark defaults were written on);
# "gqa": longer, open questions in GQA's style with a one-word answer instruction, not seen by the defaults
_GQA = [
    "What is the colour of the {o} that is to the left of the {o2}?",
    "Which kind of object is standing next to the large {c} {o}?",
    "Is the {o} in front of or behind the {o2} near the middle of the picture?",
    "What is the {o} on the right side of this photograph made of?",
    "How many {o}s can be seen in total, counting the ones that are only partly visible?",
    "Where is the small {c} {o} located relative to the {o2}?",
    "Who or what is holding the {o}?",
    "What does the {c} sign above the {o} say?",
    "Are the {o} and the {o2} the same colour?",
    "What is the weather like in the scene with the {o}?",
    "Which side of the image is the {c} {o} on, left or right?",
]
_GQA_POST = "\nAnswer the question using a single word or phrase."
QUESTION_SETS = ("mme", "gqa")


ARCHITECTURES = ("llava", "llava_next")


def make_checkpoint(
    directory: str,
    image_tokens: int = 256,
    llm_layers: int = 8,
    llm_hidden: int = 512,
    architecture: str = "llava",
    llm_kv_heads: Optional[int] = None,
) -> Tuple[str, int]:
    """Write the checkpoint; returns (directory, LLM parameters). ``llava_next``: LLaVA-NeXT's anyres tiling with
    the released pinpoints scaled to the tower (base view + up to 2 x 2 tiles, ``image_tokens`` each).
    ``llm_kv_heads``: key/value heads (grouped-query attention, as Mistral/Qwen2); default one per head."""
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
        LlavaProcessor,
    )

    if architecture not in ARCHITECTURES:
        raise SystemExit(f"unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}")

    from lmms_ac.testing.prefix_data import mme_many_questions
    from lmms_ac.testing.tiny import VICUNA_TEMPLATE, make_tokenizer

    side = math.isqrt(image_tokens)
    if side * side != image_tokens:
        raise SystemExit(f"--image-tokens must be a square number (a side x side patch grid), got {image_tokens}")
    size = 14 * side
    torch.manual_seed(0)
    corpus = [r["question"] for r in mme_many_questions(4, 20)] + [t + _GQA_POST for t in _GQA]
    tokenizer = make_tokenizer(vocab_size=1000, corpus=corpus)
    vision = CLIPVisionConfig(
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=4,
        num_attention_heads=4,
        image_size=size,
        patch_size=14,
        projection_dim=256,
    )
    heads = max(1, llm_hidden // 64)
    kv_heads = heads if llm_kv_heads is None else int(llm_kv_heads)
    if kv_heads < 1 or heads % kv_heads:
        raise SystemExit(f"--llm-kv-heads must divide the {heads} attention heads (hidden / 64), got {kv_heads}")
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=llm_hidden,
        intermediate_size=int(llm_hidden * 2.75),
        num_hidden_layers=llm_layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
    )
    common = dict(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        projector_hidden_act="gelu",
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    sizes = dict(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    processor_args = dict(
        tokenizer=tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=VICUNA_TEMPLATE,
    )
    if architecture == "llava_next":  # LLaVA-1.6's pinpoints (336 px towers) scaled to this tower
        pinpoints = [[size * h, size * w] for h, w in ([1, 2], [2, 1], [2, 2], [3, 1], [1, 3])]
        model = LlavaNextForConditionalGeneration(LlavaNextConfig(**common, image_grid_pinpoints=pinpoints)).eval()
        image_processor = LlavaNextImageProcessor(**sizes, image_grid_pinpoints=pinpoints)
        processor = LlavaNextProcessor(image_processor=image_processor, **processor_args)
    else:
        model = LlavaForConditionalGeneration(LlavaConfig(**common)).eval()
        processor = LlavaProcessor(image_processor=CLIPImageProcessor(**sizes), **processor_args)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    llm = sum(p.numel() for p in model.model.language_model.parameters()) + model.lm_head.weight.numel()
    return directory, llm


def question_records(question_set: str, n_images: int, per_image: int, seed: int = 0) -> List[Dict[str, Any]]:
    """MME-schema records, the questions about one image adjacent."""
    from lmms_ac.testing.prefix_data import distinct_images, mme_many_questions

    if question_set == "mme":
        return mme_many_questions(n_images, per_image, seed=seed)
    if question_set != "gqa":
        raise SystemExit(f"unknown question set {question_set!r}; choose one of {', '.join(QUESTION_SETS)}")
    objects = ["bus", "umbrella", "horse", "laptop", "bench", "kite", "bottle", "sheep", "train", "lamp", "cup"]
    colours = ["orange", "purple", "grey", "brown", "pink"]
    records = []
    for i, image in enumerate(distinct_images(n_images, seed=seed + 1)):
        for q in range(per_image):
            text = _GQA[(q * 3 + i) % len(_GQA)].format(
                o=objects[(q + 2 * i) % len(objects)], o2=objects[(q + 5) % len(objects)], c=colours[(q + i) % 5]
            )
            records.append(
                {
                    "question_id": f"gqa/{i:04d}.png",
                    "image": image,
                    "category": "gqa",
                    "answer": "Yes" if (q + i) % 2 == 0 else "No",
                    "question": text + _GQA_POST,
                }
            )
    return records


def write_mirror(directory: str, question_set: str, n_images: int, per_image: int) -> str:
    """Save the records as the ``mme`` task's local copy under ``directory`` (a ``LMMS_AC_DATASETS`` root)."""
    import datasets

    from lmms_ac.testing.datasets import write_mme_copy

    datasets.disable_progress_bars()
    write_mme_copy(directory, question_records(question_set, n_images, per_image))
    return directory


def mme_requests(limit: int, task_type: str) -> Tuple[Any, List[Any]]:
    """The ``mme`` task (from ``$LMMS_AC_DATASETS``) and its first ``limit`` requests."""
    import lmms_eval.models  # noqa: F401  (installs the lmms-ac task/dataset hooks)
    from lmms_eval.tasks import TaskManager, get_task_dict

    task = get_task_dict(["mme"], TaskManager(verbosity="ERROR"), task_type)["mme"]
    task.build_all_requests(limit=limit, rank=0, world_size=1)
    return task, list(task.instances)


def copy_requests(instances: List[Any], max_new_tokens: int) -> List[Any]:
    """Fresh copies (models pop keys from gen_kwargs) with answers capped at ``max_new_tokens``."""
    out = []
    for i in instances:
        args = tuple(dict(a) if isinstance(a, dict) else a for a in i.arguments)
        for a in args:
            if isinstance(a, dict) and "max_new_tokens" in a:
                a["max_new_tokens"] = max_new_tokens
        out.append(type(i)(request_type=i.request_type, arguments=args, idx=i.idx, metadata=i.metadata))
    return out


def load_model(name: str, ckpt: str, batch: int, extra: str = "") -> Any:
    """An lmms-eval model on CPU: ``llava_hf`` (batch 1) or ``lmms_ac_llava`` with ``extra`` model args."""
    from lmms_eval.models import get_model

    args = f"pretrained={ckpt},device_map=cpu" if name == "llava_hf" else f"pretrained={ckpt}{extra}"
    return get_model(name).create_from_arg_string(args, {"batch_size": batch, "device": "cpu"})


def texts(outputs: List[Any]) -> List[str]:
    return [o if isinstance(o, str) else getattr(o, "text", str(o)) for o in outputs]
