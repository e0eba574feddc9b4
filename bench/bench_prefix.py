"""Shared-prefix inference against what a user would otherwise run: ``lmms_ac_llava`` with
``prefix_sharing`` on vs off, and vs lmms-eval's built-in ``llava_hf`` (batch 1), on the same random
llava-hf checkpoint and the same ``mme`` task requests, for each answer cap (default 1, 2, 4, 8 new
tokens) at each number of questions per image (default 2 and 20).

Two tables, each about 8 minutes of one core at the defaults (``--no-llava-hf``: about 5):

* default, **in-process** (start-up taken off): the three models are loaded once; for every (questions
  per image, answer cap) the same requests run through each model, interleaved (the order rotates
  each round), ``--repeats`` rounds, the median time counts. Outputs of sharing on and off are checked
  identical. Columns: docs/s of each, and sharing-on's ratio against each.
* ``--whole-process``: whole ``python -m lmms_eval`` runs (imports, model load, task build, inference)
  of ``llava_hf`` and of ``lmms_ac_llava`` (sharing on), paired and interleaved, the median of
  ``--repeats`` pairs; wall and CPU seconds, and the ratio. ``--whole-requests`` requests per run.

Everything the tables depend on is a flag, so they can be taken on a checkpoint and questions the
code was not written around: ``--image-tokens`` (a square: 64, 144, 256, 576), ``--llm-layers``,
``--llm-hidden``, ``--question-set {mme,gqa}``. A random model never stops by itself, so every answer
is exactly the cap: the cap is the answer length (real benchmark answers are 1-5 tokens).

    python bench/bench_prefix.py                       # in-process table, defaults
    python bench/bench_prefix.py --whole-process       # whole-process table vs llava_hf
    python bench/bench_prefix.py --image-tokens 144 --question-set gqa --caps 1 2 4 8 --per-image 2 20
    python bench/bench_prefix.py --architecture llava_next --image-tokens 64 --batch 1   # NeXT tiles, bs 1 and 8
    python bench/bench_prefix.py --architecture llava_next --image-tokens 64 --batch 8
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from prefix_fixture import (  # noqa: E402
    ARCHITECTURES,
    QUESTION_SETS,
    copy_requests,
    load_model,
    make_checkpoint,
    mme_requests,
    texts,
    write_mirror,
)

GOALS = {2: 1.7, 20: 5.0}  # sharing on over off, start-up off (issue 25)
WHOLE_GOAL = 3.0  # over llava_hf, whole process, 20 questions per image


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--caps", type=int, nargs="+", default=[1, 2, 4, 8], help="answer caps (new tokens)")
    parser.add_argument("--per-image", type=int, nargs="+", default=[2, 20], help="questions per image")
    parser.add_argument(
        "--requests", type=int, default=40, help="requests per in-process measurement (images = requests / per-image)"
    )
    parser.add_argument("--image-tokens", type=int, default=256, help="visual tokens per image (a square number)")
    parser.add_argument("--llm-layers", type=int, default=8)
    parser.add_argument("--llm-hidden", type=int, default=512)
    parser.add_argument("--llm-kv-heads", type=int, help="key/value heads (default: one per head)")
    parser.add_argument("--question-set", choices=QUESTION_SETS, default="mme")
    parser.add_argument(
        "--architecture", choices=ARCHITECTURES, default="llava", help="llava (1.5, one view) or llava_next (tiles)"
    )
    parser.add_argument("--batch", type=int, default=8, help="lmms_ac_llava's batch size (llava_hf: 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the median counts")
    parser.add_argument("--no-llava-hf", action="store_true", help="in-process: skip llava_hf")
    parser.add_argument("--whole-process", action="store_true", help="the whole-process table against llava_hf")
    parser.add_argument("--whole-requests", type=int, default=160, help="requests per whole-process run")
    parser.add_argument("--whole-caps", type=int, nargs="+", default=[4], help="answer caps of the whole-process table")
    return parser.parse_args(argv)


def timed(lm, instances, cap: int):
    """(seconds, texts) of one ``generate_until``; the models' progress bars kept off the table."""
    with contextlib.redirect_stderr(io.StringIO()):
        start = time.perf_counter()
        out = lm.generate_until(copy_requests(instances, cap))
        return time.perf_counter() - start, texts(out)


def in_process(args, ckpt: str, work: str) -> None:
    names = ["off", "on"] + ([] if args.no_llava_hf else ["llava_hf"])
    models = {
        "off": load_model("lmms_ac_llava", ckpt, args.batch, ",prefix_sharing=false"),
        "on": load_model("lmms_ac_llava", ckpt, args.batch, ",prefix_sharing=true"),
    }
    if not args.no_llava_hf:
        models["llava_hf"] = load_model("llava_hf", ckpt, 1)
    print(
        f"{'q/img':>5s} {'cap':>3s} {'reqs':>4s} {'off docs/s':>10s} {'on docs/s':>9s} {'hf docs/s':>9s} "
        f"{'on/off':>7s} {'on/hf':>7s} {'tokens':>8s}  goal"
    )
    verdicts = []
    for per_image in args.per_image:
        n_images = max(1, args.requests // per_image)
        mirror = write_mirror(os.path.join(work, f"mirror_{per_image}"), args.question_set, n_images, per_image)
        os.environ["LMMS_AC_DATASETS"] = mirror
        n = n_images * per_image
        requests = {}
        for name in names:
            lm = models[name]
            task, requests[name] = mme_requests(n, "simple" if lm.is_simple else "chat")
            lm.task_dict[task.config.task] = task.dataset
            timed(lm, requests[name][:2], 2)  # warm-up
        for cap in args.caps:
            seconds = {name: [] for name in names}
            outputs = {}
            for r in range(args.repeats):
                for name in names[r % len(names) :] + names[: r % len(names)]:
                    before = models[name].prefix_runner.stats.as_dict() if name == "on" else None
                    took, outputs[name] = timed(models[name], requests[name], cap)
                    seconds[name].append(took)
                    if before is not None:
                        after = models[name].prefix_runner.stats.as_dict()
                        token_ratio = (after["full_tokens"] - before["full_tokens"]) / max(
                            1, after["prefill_tokens"] - before["prefill_tokens"]
                        )
            if outputs["on"] != outputs["off"]:
                raise SystemExit(f"{per_image} q/image, cap {cap}: outputs differ between prefix_sharing on and off")
            rate = {name: n / statistics.median(s) for name, s in seconds.items()}
            ratio = rate["on"] / rate["off"]
            hf = rate.get("llava_hf")
            goal = GOALS.get(per_image)
            met = "" if goal is None else f"{goal}x {'met' if ratio >= goal else 'NOT met'}"
            hf_rate = f"{hf:9.2f}" if hf else f"{'-':>9s}"
            vs_hf = f"{rate['on'] / hf:6.2f}x" if hf else f"{'-':>7s}"
            print(
                f"{per_image:5d} {cap:3d} {n:4d} {rate['off']:10.2f} {rate['on']:9.2f} {hf_rate} "
                f"{ratio:6.2f}x {vs_hf} {token_ratio:7.2f}x  {met}",
                flush=True,
            )
            if goal is not None and cap <= 4:
                verdicts.append(ratio >= goal)
    print(
        "tokens: prefill tokens without sharing / with it (every prefix + suffix against each distinct prefix once + "
        "every suffix), the on/off ratio if time went by prefill tokens alone"
    )
    print(
        f"in-process, start-up off, median of {args.repeats} interleaved rounds; outputs on == off in every cell; "
        f"goal (on/off at answers <= 4 tokens): {'met' if verdicts and all(verdicts) else 'NOT met'} "
        f"in {sum(verdicts)}/{len(verdicts)} cells"
    )


def lmms_eval_run(model: str, model_args: str, batch: int, cap: int, out: str, threads: int):
    """(wall seconds, CPU seconds) of one whole ``python -m lmms_eval`` process."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [
        sys.executable,
        "-m",
        "lmms_eval",
        "--model",
        model,
        "--model_args",
        model_args,
        "--tasks",
        "mme",
        "--batch_size",
        str(batch),
        "--device",
        "cpu",
        "--gen_kwargs",
        f"max_new_tokens={cap}",
        "--output_path",
        out,
    ]
    before = os.times()
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - start
    after = os.times()
    if proc.returncode:
        raise SystemExit(f"{model} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}")
    return wall, (after.children_user - before.children_user) + (after.children_system - before.children_system)


def whole_process(args, ckpt: str, work: str) -> None:
    runs = {
        "llava_hf": ("llava_hf", f"pretrained={ckpt},device_map=cpu", 1),
        "lmms_ac_llava": ("lmms_ac_llava", f"pretrained={ckpt}", args.batch),
    }
    print(
        f"{'q/img':>5s} {'cap':>3s} {'reqs':>4s} {'llava_hf wall/CPU s':>19s} {'ours wall/CPU s':>15s} "
        f"{'x wall':>7s} {'x CPU':>6s}  goal"
    )
    for per_image in args.per_image:
        n_images = max(1, args.whole_requests // per_image)
        mirror = write_mirror(os.path.join(work, f"whole_{per_image}"), args.question_set, n_images, per_image)
        os.environ["LMMS_AC_DATASETS"] = mirror
        for cap in args.whole_caps:
            got = {name: [] for name in runs}
            for r in range(args.repeats):
                order = list(runs) if r % 2 == 0 else list(runs)[::-1]
                for name in order:
                    model, margs, batch = runs[name]
                    out = os.path.join(work, f"out_{name}_{per_image}_{cap}_{r}")
                    got[name].append(lmms_eval_run(model, margs, batch, cap, out, args.threads))
            hf_wall = statistics.median(w for w, _ in got["llava_hf"])
            hf_cpu = statistics.median(c for _, c in got["llava_hf"])
            our_wall = statistics.median(w for w, _ in got["lmms_ac_llava"])
            our_cpu = statistics.median(c for _, c in got["lmms_ac_llava"])
            ratio = hf_wall / our_wall
            goal = f"{WHOLE_GOAL}x {'met' if ratio >= WHOLE_GOAL else 'NOT met'}" if per_image >= 20 else ""
            print(
                f"{per_image:5d} {cap:3d} {n_images * per_image:4d} {hf_wall:10.1f}/{hf_cpu:8.1f} "
                f"{our_wall:7.1f}/{our_cpu:7.1f} {ratio:6.2f}x {hf_cpu / our_cpu:5.2f}x  {goal}",
                flush=True,
            )
    print(f"whole lmms-eval processes (start-up included), median of {args.repeats} interleaved pairs")


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    work = tempfile.mkdtemp(prefix="bench_prefix_")
    ckpt, llm_params = make_checkpoint(
        os.path.join(work, "ckpt"),
        args.image_tokens,
        args.llm_layers,
        args.llm_hidden,
        args.architecture,
        args.llm_kv_heads,
    )
    print(
        f"checkpoint: {args.architecture}, CLIP-like ViT ({args.image_tokens} image tokens per view) + Llama "
        f"{args.llm_layers}x{args.llm_hidden}"
        f"{'' if args.llm_kv_heads is None else f' ({args.llm_kv_heads} KV heads)'} "
        f"({llm_params / 1e6:.1f}M params), float32, CPU x{args.threads} thread(s); questions: {args.question_set}; "
        f"lmms_ac_llava batch {args.batch}, llava_hf batch 1"
    )
    if args.whole_process:
        whole_process(args, ckpt, work)
    else:
        in_process(args, ckpt, work)


if __name__ == "__main__":
    main()
