"""Docs/s of lmms-eval's built-in ``llava_hf`` against ``lmms_ac_llava`` on the same tiny llava-hf
checkpoint and the same local MME requests, side by side in one run.

Both models get exactly the requests lmms-eval's evaluator would build (``build_all_requests``), and
only ``generate_until`` is timed (model loading and task indexing are the same for both and excluded).
``llava_hf`` only supports batch size 1 (it asserts so), so both ratios are against its batch-1 speed.

    python bench/bench_plugin.py [--docs 48] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def build_requests(task_name: str, limit: int, task_type: str):
    """The requests lmms-eval's evaluator builds for a model of ``task_type`` ('simple' or 'chat')."""
    import lmms_eval.models  # noqa: F401  (installs the lmms-ac task/dataset hooks)
    from lmms_eval.tasks import TaskManager, get_task_dict

    task = get_task_dict([task_name], TaskManager(verbosity="ERROR"), task_type)[task_name]
    task.build_all_requests(limit=limit, rank=0, world_size=1)
    return task, [inst for inst in task.instances]


def time_model(name: str, model_args: str, batch_size: int, limit: int, repeats: int) -> float:
    from lmms_eval.models import get_model

    # resolved exactly as `lmms-eval --model NAME` resolves it (llava_hf -> its chat implementation)
    lm = get_model(name).create_from_arg_string(model_args, {"batch_size": batch_size, "device": "cpu"})
    task, instances = build_requests("mme", limit, "simple" if lm.is_simple else "chat")
    lm.task_dict[task.config.task] = task.dataset
    lm.generate_until([i for i in instances][:2])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        # models pop keys from gen_kwargs, so every repeat gets fresh copies of the dict arguments
        requests = [
            type(i)(
                request_type=i.request_type,
                arguments=tuple(dict(a) if isinstance(a, dict) else a for a in i.arguments),
                idx=i.idx,
                metadata=i.metadata,
            )
            for i in instances
        ]
        start = time.perf_counter()
        lm.generate_until(requests)
        best = min(best, time.perf_counter() - start)
    return len(instances) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    from lmms_ac.testing.datasets import write_mirror
    from lmms_ac.testing import datasets as tiny_data
    from lmms_ac.testing.tiny import make_llava_hf

    work = tempfile.mkdtemp(prefix="bench_plugin_")
    ckpt = make_llava_hf(os.path.join(work, "ckpt"), image_size=64, patch_size=8)
    tiny_data.mme_records.__defaults__ = (max(6, args.docs // 2),)  # enough MME docs for the run
    write_mirror(os.path.join(work, "mirror"))
    os.environ["LMMS_AC_DATASETS"] = os.path.join(work, "mirror")
    print(
        f"{args.docs} MME requests, tiny llava-hf checkpoint (64px, 64 visual tokens), CPU x{torch.get_num_threads()}"
    )
    # llava_hf's default device_map="" is rejected by transformers 5, so a user must name the device map
    base = time_model("llava_hf", f"pretrained={ckpt},device_map=cpu", 1, args.docs, args.repeats)
    rows = [("llava_hf (lmms-eval built-in)", 1, base)]
    for bs in (1, 8):
        rows.append(
            ("lmms_ac_llava", bs, time_model("lmms_ac_llava", f"pretrained={ckpt}", bs, args.docs, args.repeats))
        )
    print(f"{'model':32s} {'batch':>5s} {'docs/s':>8s} {'vs llava_hf@1':>14s}")
    for name, bs, rate in rows:
        print(f"{name:32s} {bs:5d} {rate:8.2f} {rate / base:13.2f}x")


if __name__ == "__main__":
    main()
