"""Shared-prefix inference: docs/s and prefill work of ``lmms_ac_llava`` with ``prefix_sharing`` on and
off, and of lmms-eval's built-in ``llava_hf``, on the same checkpoint and the same MME requests, at 2
and at 20 questions per image, side by side in one run.

The checkpoint is one where compute dominates: a CLIP-like tower at 224 px (patch 14, 256 image
tokens) and a ~26M-parameter Llama, random weights built from configs (llava-hf layout, so both
models load it). Requests are built by lmms-eval's own ``mme`` task from a local MME-schema copy.
Only ``generate_until`` is timed (best of ``--repeats``). "prefill positions" counts the positions run through the
language
model in forward passes of more than one token (padding included), counted by a hook on the
decoder of each model, so the saving can be checked on any machine. ``llava_hf`` supports batch
size 1 only; ``lmms_ac_llava`` runs at ``--batch``. Answers are capped at ``--max-new-tokens`` (default
2: "Yes"/"No" plus end of sequence, what a trained model generates on MME; a random model never
stops by itself, and decoding is the same for all three, so a longer cap only adds a fixed cost).

    python bench/bench_prefix.py [--batch 8] [--threads 1] [--max-new-tokens 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

GOALS = {2: 1.7, 20: 5.0}  # docs/s over sharing off (issue 13)


def make_checkpoint(directory: str) -> str:
    """llava-hf checkpoint: CLIP-like ViT (224 px, patch 14 -> 256 tokens) + ~26M-parameter Llama."""
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    from lmms_ac.testing.prefix_data import mme_many_questions
    from lmms_ac.testing.tiny import VICUNA_TEMPLATE, make_tokenizer

    torch.manual_seed(0)
    # trained on the prompts' words too, so that common words are single tokens as in Llama's 32k vocabulary
    tokenizer = make_tokenizer(vocab_size=1000, corpus=[r["question"] for r in mme_many_questions(4, 20)])
    vision = CLIPVisionConfig(
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=4,
        num_attention_heads=4,
        image_size=224,
        patch_size=14,
        projection_dim=256,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=512,
        intermediate_size=1408,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=8,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        projector_hidden_act="gelu",
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}),
        tokenizer=tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=VICUNA_TEMPLATE,
    )
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    llm = sum(p.numel() for p in model.model.language_model.parameters()) + model.lm_head.weight.numel()
    return directory, llm


class PrefillCounter:
    """Positions entering the decoder in forward passes longer than one token (prefill, not decoding)."""

    def __init__(self, decoder):
        self.positions = 0
        self.handle = decoder.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        x = kwargs.get("inputs_embeds")
        if x is None:
            x = kwargs.get("input_ids", args[0] if args else None)
        if x is not None and x.shape[1] > 1:
            self.positions += int(x.shape[0] * x.shape[1])


def build_requests(limit: int, task_type: str):
    import lmms_eval.models  # noqa: F401  (installs the lmms-ac task/dataset hooks)
    from lmms_eval.tasks import TaskManager, get_task_dict

    task = get_task_dict(["mme"], TaskManager(verbosity="ERROR"), task_type)["mme"]
    task.build_all_requests(limit=limit, rank=0, world_size=1)
    return task, list(task.instances)


MAX_NEW_TOKENS = {"value": 0}


def copy_requests(instances):
    """Fresh copies of the dict arguments (models pop keys from gen_kwargs), with ``max_new_tokens``
    set when the run caps the answers' length."""
    out = []
    for i in instances:
        args = tuple(dict(a) if isinstance(a, dict) else a for a in i.arguments)
        if MAX_NEW_TOKENS["value"]:  # the gen_kwargs dict (its place differs between simple and chat models)
            for a in args:
                if isinstance(a, dict) and "max_new_tokens" in a:
                    a["max_new_tokens"] = MAX_NEW_TOKENS["value"]
        out.append(type(i)(request_type=i.request_type, arguments=args, idx=i.idx, metadata=i.metadata))
    return out


def run_model(name: str, model_args: str, batch: int, limit: int, repeats: int = 1):
    """(best docs/s over ``repeats``, prefill positions, outputs) of one model on the mme requests."""
    from lmms_eval.models import get_model

    lm = get_model(name).create_from_arg_string(model_args, {"batch_size": batch, "device": "cpu"})
    task, instances = build_requests(limit, "simple" if lm.is_simple else "chat")
    lm.task_dict[task.config.task] = task.dataset
    lm.generate_until(copy_requests(instances[:2]))  # warm-up
    decoder = lm.vlm.llm.model if name == "lmms_ac_llava" else lm.model.model.language_model
    best, positions = float("inf"), None
    for _ in range(max(1, repeats)):
        counter = PrefillCounter(decoder)
        start = time.perf_counter()
        out = lm.generate_until(copy_requests(instances))
        best = min(best, time.perf_counter() - start)
        counter.handle.remove()
        if positions is not None and counter.positions != positions:
            raise RuntimeError(
                f"{name}: prefill positions changed between repeats ({positions} vs {counter.positions})"
            )
        positions = counter.positions
    texts = [o if isinstance(o, str) else getattr(o, "text", str(o)) for o in out]
    return len(instances) / best, positions, texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8, help="lmms_ac_llava's batch size (llava_hf: 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadiest on a shared CPU)")
    parser.add_argument(
        "--images",
        type=int,
        nargs=2,
        default=(12, 2),
        metavar=("AT2", "AT20"),
        help="images at 2 and at 20 questions per image",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=2,
        help="answer length: 2 = a word + end of sequence, as a trained model answers MME (random "
        "weights never stop early); 0 keeps the mme task's 16",
    )
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per model (the best counts)")
    parser.add_argument("--no-llava-hf", action="store_true", help="skip lmms-eval's llava_hf")
    args = parser.parse_args()
    MAX_NEW_TOKENS["value"] = args.max_new_tokens
    import torch

    torch.set_num_threads(args.threads)
    from lmms_ac.testing.prefix_data import write_mme_mirror

    work = tempfile.mkdtemp(prefix="bench_prefix_")
    ckpt, llm_params = make_checkpoint(os.path.join(work, "ckpt"))
    print(
        f"checkpoint: CLIP-like ViT 224px/14 (256 image tokens) + Llama {llm_params / 1e6:.1f}M params, float32, "
        f"CPU x{torch.get_num_threads()} thread(s); lmms_ac_llava batch {args.batch}, llava_hf batch 1; "
        f"{args.max_new_tokens or 'the task default of'} new tokens per answer"
    )
    header = (
        f"{'q/image':>7s} {'model':34s} {'batch':>5s} {'docs/s':>7s} {'prefill pos.':>12s} {'x vs off':>8s} "
        f"{'x vs llava_hf':>13s}"
    )
    lines, verdicts = [header], []
    for per_image, n_images in zip((2, 20), args.images):
        mirror = os.path.join(work, f"mirror_{per_image}")
        write_mme_mirror(mirror, n_images, per_image)
        os.environ["LMMS_AC_DATASETS"] = mirror
        n = n_images * per_image
        rows = []
        if not args.no_llava_hf:
            rows.append(
                (
                    "llava_hf (lmms-eval built-in)",
                    1,
                    *run_model("llava_hf", f"pretrained={ckpt},device_map=cpu", 1, n, args.repeats)[:2],
                )
            )
        off = run_model("lmms_ac_llava", f"pretrained={ckpt},prefix_sharing=false", args.batch, n, args.repeats)
        on = run_model("lmms_ac_llava", f"pretrained={ckpt},prefix_sharing=true", args.batch, n, args.repeats)
        if on[2] != off[2]:
            raise SystemExit(f"{per_image} q/image: outputs differ between prefix_sharing on and off")
        rows += [
            ("lmms_ac_llava prefix_sharing=false", args.batch, *off[:2]),
            ("lmms_ac_llava prefix_sharing=true", args.batch, *on[:2]),
        ]
        hf = rows[0][2] if not args.no_llava_hf else None
        for name, bs, rate, positions in rows:
            vs_hf = f"{rate / hf:12.2f}x" if hf else f"{'-':>13s}"
            lines.append(f"{per_image:7d} {name:34s} {bs:5d} {rate:7.2f} {positions:12d} {rate / off[0]:7.2f}x {vs_hf}")
        speedup = on[0] / off[0]
        verdicts.append(
            f"{per_image} q/image ({n} requests): sharing on/off {speedup:.2f}x docs/s (goal {GOALS[per_image]}x: "
            f"{'met' if speedup >= GOALS[per_image] else 'NOT met'}), prefill positions {off[1] / max(on[1], 1):.2f}x "
            "fewer; "
            "outputs identical"
        )
    print("\n".join(lines))
    print("\n".join(verdicts))


if __name__ == "__main__":
    main()
