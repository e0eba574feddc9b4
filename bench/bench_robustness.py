"""Cost of each robustness probe relative to the clean run of the same task and model (not a test).

``lmms_ac_llava.generate_until`` is timed on the same MME docs for the clean ``mme`` task and for
each probe: the generated tasks (``mme_tokperm``, ``mme_patchshuffle4``, ...) and the probes that
only exist as model arguments here (``perturbation=layernoise_l1``, ``perturbation=modnoise_image_l0``;
``toknoise_m2_g0`` too unless ``mme_toknoise_m2_g0`` is generated). Requests are exactly those
lmms-eval's evaluator builds (``build_all_requests``); model loading and task indexing are excluded.

Beating the noise of shared cores: the speed of this machine drifts by tens of percent from one
second to the next, so whole passes (clean pass, probe pass, ...) compare badly. The interleaving
is therefore per batch: for every batch of requests (one doc at batch size 1) the clean run and
every probe call ``generate_until`` on it back to back, in an order that rotates with the batch
and the repeat; each (arm, batch) keeps its best of N repeats and an arm's time is the sum of its
batches' best times. The ratio is that over the clean run's. Targets: 1.05x for token- and
hidden-state probes, 1.2x for image-level ones. The whole-pass ratio (median over repeats of
sum(probe) / sum(clean)) is printed beside it to show the noise. Every answer is made
``max_new_tokens`` long, so clean and probe decode the same number of tokens (``--variable-length``
turns that off).

Salient PatchDrop needs a saliency model; the default (DINO from the hub) is replaced by a random
``ViTModel`` of DINO ViT-S/16's shape (``--saliency dino-shape``, the same compute) or a tiny one
(``--saliency tiny``). Its cost is reported apart: the table's row runs on a WARM saliency cache
(filled before timing), and a COLD arm runs the same docs with a cache emptied at the start of every
repeat (the second question on an image hits it, as in a real run); the saliency model's own calls
are timed separately.

    python bench/bench_robustness.py [--docs 24] [--repeats 10] [--batch-size 1] [--profile tokgroup_m2_g0]
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import io
import os
import pstats
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

TARGETS = {"tokens": 1.05, "hidden": 1.05, "image": 1.2}
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
CLOCK: List[Callable[[], float]] = [time.process_time]

# label, generated task (None: model argument only), model-argument fallback when the task is not indexed
PROBES = [
    ("tokperm", "mme_tokperm", None),
    ("tokgroup_m2_g0", "mme_tokgroup_m2_g0", None),
    ("toknoise_m2_g0", "mme_toknoise_m2_g0", "toknoise_m2_g0"),
    ("patchshuffle4", "mme_patchshuffle4", None),
    ("pdrop_random50", "mme_pdrop_random50", None),
    ("pdrop_salient30", "mme_pdrop_salient30", None),
    ("layernoise_l1", None, "layernoise_l1"),
    ("modnoise_image_l0", None, "modnoise_image_l0"),
]
SALIENT = "pdrop_salient30"


@dataclass
class Arm:
    """One side of a comparison: a model instance, the requests it runs, and its timings
    ``times[repeat][batch]``."""

    label: str
    lm: Any
    instances: List[Any]
    stage: str = "clean"
    how: str = ""
    before: Optional[Callable[[], None]] = None  # called (untimed) before each of its calls
    times: List[List[float]] = field(default_factory=list)
    op_times: List[float] = field(default_factory=list)  # per call: time inside the probe's own code
    new_tokens: int = 0

    def call(self, start: int = 0, stop: Optional[int] = None) -> float:
        """Time ``generate_until`` on requests ``start:stop``."""
        if self.before is not None:
            self.before()
        # models pop keys from gen_kwargs, so every call gets fresh copies of the dict arguments
        requests = [
            type(i)(
                request_type=i.request_type,
                idx=i.idx,
                metadata=i.metadata,
                arguments=tuple(dict(a) if isinstance(a, dict) else a for a in i.arguments),
            )
            for i in self.instances[start:stop]
        ]
        counter, ops = self.lm._bench_new_tokens, self.lm._bench_op_seconds
        counter[0] = ops[0] = 0
        t0 = CLOCK[0]()
        self.lm.generate_until(requests)
        elapsed = CLOCK[0]() - t0
        self.new_tokens = counter[0]
        self.op_times.append(ops[0])
        return elapsed

    def best(self) -> float:
        """Sum over batches of each batch's best time."""
        return sum(min(column) for column in zip(*self.times))

    def passes(self) -> List[float]:
        """Whole-pass time of each repeat."""
        return [sum(row) for row in self.times]


def count_new_tokens(lm, fixed_length: bool = True) -> None:
    """Wrap the instance's ``llm.generate`` to count generated tokens and, with ``fixed_length``,
    to make every answer ``max_new_tokens`` long (``min_new_tokens``: no early EOS), so that clean
    and probe do the same decoding work: the random tiny model stops early on some docs and a
    perturbation changes which (a few percent of the decode steps, as much as the targets' margin)."""
    llm = lm.vlm.llm
    inner = llm.generate
    counter = [0]

    def generate(*args, **kwargs):
        if fixed_length and kwargs.get("max_new_tokens"):
            kwargs["min_new_tokens"] = kwargs["max_new_tokens"]
        out = inner(*args, **kwargs)
        counter[0] += int(out.shape[0] * out.shape[1])
        return out

    llm.generate = generate
    lm._bench_new_tokens = counter


def time_probe_ops(lm) -> None:
    """Wrap the instance's ``hook_factory.for_request`` so that the time spent building a request's
    hooks and inside them (the probe's own code: the perturbation op, its context and RNG) is
    counted apart; the rest of a probe's overhead is indirect (e.g. a registered forward hook)."""
    factory = lm.hook_factory
    inner = factory.for_request
    acc = [0.0]

    def timed(fn):
        if fn is None:
            return None

        def wrapper(*args):
            t0 = CLOCK[0]()
            try:
                return fn(*args)
            finally:
                acc[0] += CLOCK[0]() - t0

        return wrapper

    def for_request(task, doc_id):
        t0 = CLOCK[0]()
        hooks = inner(task, doc_id)
        if hooks is not None:
            hooks = dataclasses.replace(
                hooks, image=timed(hooks.image), tokens=timed(hooks.tokens), hidden=timed(hooks.hidden)
            )
        acc[0] += CLOCK[0]() - t0
        return hooks

    factory.for_request = for_request
    lm._bench_op_seconds = acc


def quiet_progress() -> None:
    """No progress bar per generate_until call (the model passes ``disable=`` itself)."""
    from tqdm import tqdm

    import lmms_ac.models.lmms_ac_llava as module

    def quiet(*args, **kwargs):
        kwargs["disable"] = True
        return tqdm(*args, **kwargs)

    module.tqdm = quiet


class TimedSaliency:
    """The saliency model, with its calls and time counted."""

    def __init__(self, model):
        self.model = model
        self.model_id = getattr(model, "model_id", "bench-vit")
        self.calls = 0
        self.seconds = 0.0

    def __call__(self, pixels):
        t0 = CLOCK[0]()
        out = self.model(pixels)
        self.seconds += CLOCK[0]() - t0
        self.calls += 1
        return out


def saliency_vit(kind: str):
    import torch
    from transformers import ViTConfig, ViTModel

    from lmms_ac.robustness.saliency import ViTCLSAttention

    torch.manual_seed(0)
    if kind == "dino-shape":  # facebook/dino-vits16's architecture, random weights: the same compute
        config = ViTConfig(
            image_size=224,
            patch_size=16,
            hidden_size=384,
            num_hidden_layers=12,
            num_attention_heads=6,
            intermediate_size=1536,
        )
    elif kind == "tiny":
        config = ViTConfig(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
        )
    else:
        raise ValueError(f"--saliency: dino-shape or tiny, got {kind!r}")
    model = ViTModel(config, add_pooling_layer=False).eval()  # ViTCLSAttention switches it to eager attention
    return ViTCLSAttention(model, model_id=f"bench-{kind}-vit")


def load_model(ckpt: str, batch_size: int, perturbation: Optional[str] = None, fixed_length: bool = True):
    from lmms_eval.models import get_model

    args = f"pretrained={ckpt}" + (f",perturbation={perturbation}" if perturbation else "")
    lm = get_model("lmms_ac_llava").create_from_arg_string(args, {"batch_size": batch_size, "device": "cpu"})
    count_new_tokens(lm, fixed_length)
    time_probe_ops(lm)
    return lm


def build_requests(task_names: List[str], limit: int, task_type: str) -> Dict[str, Any]:
    """task -> (task object, instances), as lmms-eval's evaluator builds them."""
    import lmms_eval.models  # noqa: F401  (installs the lmms-ac task/dataset hooks)
    from lmms_eval.tasks import TaskManager, get_task_dict

    tm = TaskManager(verbosity="ERROR")
    known = set(tm.all_tasks)
    task_dict = get_task_dict([t for t in task_names if t in known], tm, task_type)
    out = {}
    for name, task in task_dict.items():
        task.build_all_requests(limit=limit, rank=0, world_size=1)
        out[name] = (task, list(task.instances))
    return out


def profile(arm: Arm, top: int) -> str:
    prof = cProfile.Profile()
    prof.enable()
    arm.call()
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).strip_dirs().sort_stats("cumulative").print_stats(top)
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=24, help="MME docs (two per image)")
    parser.add_argument("--repeats", type=int, default=10, help="interleaved repeats; best of N per batch and arm")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--patch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument(
        "--clock",
        default="cpu",
        choices=sorted(CLOCKS),
        help="cpu: this process's CPU time (default), wall: elapsed time",
    )
    parser.add_argument("--saliency", default="dino-shape", choices=("dino-shape", "tiny"))
    parser.add_argument(
        "--variable-length",
        action="store_true",
        help="let answers stop at EOS (default: every answer is max_new_tokens long, see count_new_tokens)",
    )
    parser.add_argument("--only", default="", help="comma-separated probe labels to run (default: all)")
    parser.add_argument(
        "--profile", default="", help="comma-separated probe labels (or 'clean') to cProfile after timing"
    )
    parser.add_argument("--profile-top", type=int, default=30)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(max(1, args.threads))
    CLOCK[0] = CLOCKS[args.clock]
    quiet_progress()
    work = tempfile.mkdtemp(prefix="bench_robustness_")
    try:
        run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: str) -> None:
    import torch

    from lmms_ac.robustness import CachedSaliency, parse_perturbation, set_default_saliency
    from lmms_ac.testing import datasets as tiny_data
    from lmms_ac.testing.datasets import write_mirror
    from lmms_ac.testing.tiny import make_llava_hf

    setup_start = time.perf_counter()
    os.environ["LMMS_AC_CACHE"] = os.path.join(work, "cache")  # generated tasks: a private cache
    ckpt = make_llava_hf(os.path.join(work, "ckpt"), image_size=args.image_size, patch_size=args.patch_size)
    tiny_data.mme_records.__defaults__ = (max(1, (args.docs + 1) // 2),)  # two docs per image
    write_mirror(os.path.join(work, "mirror"))
    os.environ["LMMS_AC_DATASETS"] = os.path.join(work, "mirror")

    # two saliency caches on one timed model: the table's arm runs warm, the cold arm on an emptied one
    timed = TimedSaliency(saliency_vit(args.saliency))
    warm_cache, cold_cache = CachedSaliency(timed), CachedSaliency(timed)
    set_default_saliency(warm_cache)  # never the hub's DINO (unreachable here)

    probes = [p for p in PROBES if not args.only or p[0] in args.only.split(",")]
    fixed = not args.variable_length
    clean_lm = load_model(ckpt, args.batch_size, fixed_length=fixed)
    task_type = "simple" if clean_lm.is_simple else "chat"
    requests = build_requests(["mme"] + [t for _, t, _ in probes if t], args.docs, task_type)
    for name, (task, _) in requests.items():
        clean_lm.task_dict[name] = task.dataset
    mme_task, mme_instances = requests["mme"]
    clean = Arm("clean", clean_lm, mme_instances, how="task mme")

    arms: List[Arm] = []
    for label, task, fallback in probes:
        stage = parse_perturbation(label).stage
        if task and task in requests:
            arms.append(Arm(label, clean_lm, requests[task][1], stage, how=f"task {task}"))
        elif fallback:
            lm = load_model(ckpt, args.batch_size, fallback, fixed_length=fixed)
            lm.task_dict["mme"] = mme_task.dataset
            arms.append(Arm(label, lm, mme_instances, stage, how=f"task mme + model arg perturbation={fallback}"))
        else:
            raise SystemExit(f"task {task} is not indexed and has no model-argument fallback")
    salient = next((a for a in arms if a.label == SALIENT), None)
    cold = None
    if salient is not None:
        salient.before = lambda: set_default_saliency(warm_cache)
        cold = Arm(
            f"{SALIENT} (cold)",
            salient.lm,
            salient.instances,
            "image",
            salient.how,
            before=lambda: set_default_saliency(cold_cache),
        )

    n_docs = len(mme_instances)
    bs = max(1, args.batch_size)
    batches = [(s, min(s + bs, n_docs)) for s in range(0, n_docs, bs)]
    print(
        f"{n_docs} MME requests, tiny llava-hf checkpoint ({args.image_size}px, "
        f"{(args.image_size // args.patch_size) ** 2} visual tokens), batch size {bs}, "
        f"torch threads {torch.get_num_threads()}, {args.clock} clock, best of {args.repeats} repeats per batch "
        f"(setup {time.perf_counter() - setup_start:.0f} s, untimed)"
    )
    for arm in arms:
        print(f"  {arm.label:18s} {arm.stage:7s} {arm.how}")

    # warm-up, untimed: every model instance and request path; fills the warm saliency cache
    timed.model(torch.rand(3, args.image_size, args.image_size))  # the ViT's first-call costs
    everyone = [clean] + arms + ([cold] if cold is not None else [])
    for arm in everyone:
        arm.call()
    tokens = {arm.label: arm.new_tokens / n_docs for arm in everyone}

    sal_per_repeat: List[tuple] = []  # (calls, seconds, cache hits) of the cold arm per repeat
    for repeat in range(args.repeats):
        for arm in everyone:
            arm.times.append([0.0] * len(batches))
        if cold is not None:
            cold_cache.clear()
            before = (timed.calls, timed.seconds, cold_cache.hits)
            cold_seconds = 0.0
        for b, (start, stop) in enumerate(batches):
            shift = (repeat * 3 + b) % len(everyone)  # rotate who goes first
            for arm in everyone[shift:] + everyone[:shift]:
                if arm is cold:
                    secs = timed.seconds
                    arm.times[-1][b] = arm.call(start, stop)
                    cold_seconds += timed.seconds - secs
                else:
                    arm.times[-1][b] = arm.call(start, stop)
        if cold is not None:
            sal_per_repeat.append((timed.calls - before[0], cold_seconds, cold_cache.hits - before[2]))

    clean_best = clean.best()
    clean_passes = clean.passes()

    def op_ms(arm: Arm) -> float:
        return 1e3 * statistics.median(arm.op_times) / (n_docs / len(batches))  # per call -> per doc

    print()
    print(
        f"clean mme: {n_docs / clean_best:.2f} docs/s (sum of per-batch bests); whole passes: best "
        f"{n_docs / min(clean_passes):.2f}, median {n_docs / statistics.median(clean_passes):.2f} docs/s "
        f"(the machine's drift); {tokens['clean']:.1f} generated tokens/doc"
    )
    header = (
        f"{'probe':22s} {'stage':7s} {'docs/s':>8s} {'clean':>8s} {'ratio':>7s} {'target':>7s} {'result':>6s} "
        f"{'pass ratio':>10s} {'+ms/doc':>8s} {'op ms/doc':>9s} {'tok/doc':>8s}"
    )
    print(header)
    print("-" * len(header))
    missed = []
    for arm in arms:
        best = arm.best()
        ratio = best / clean_best
        target = TARGETS[arm.stage]
        if ratio > target:
            missed.append(arm.label)
        pass_ratio = statistics.median(p / c for p, c in zip(arm.passes(), clean_passes))
        print(
            f"{arm.label + (' (warm)' if arm is salient else ''):22s} {arm.stage:7s} {n_docs / best:8.2f} "
            f"{n_docs / clean_best:8.2f} {ratio:6.3f}x {target:6.2f}x {'pass' if ratio <= target else 'FAIL':>6s} "
            f"{pass_ratio:9.3f}x {1e3 * (best - clean_best) / n_docs:8.2f} {op_ms(arm):9.2f} {tokens[arm.label]:8.1f}"
        )
    print(
        "ratio: sum of per-batch best times / the clean run's (pass/fail); pass ratio: median over repeats of "
        "whole-pass time / clean whole-pass time (noisier); +ms/doc: best time minus the clean best, per doc; "
        "op ms/doc: median time inside the probe's hooks (perturbation op, context, RNG) per doc"
    )
    if cold is not None and sal_per_repeat:
        cold_best = cold.best()
        calls = statistics.median(c for c, _, _ in sal_per_repeat)
        hits = statistics.median(h for _, _, h in sal_per_repeat)
        secs = min(s for _, s, _ in sal_per_repeat)
        print()
        print(f"saliency ({args.saliency} ViT, random weights), apart from the table:")
        print(
            f"  cold cache: {n_docs / cold_best:.2f} docs/s = {cold_best / clean_best:.3f}x clean; per pass "
            f"{calls:.0f} saliency calls ({hits:.0f} cache hits) taking {secs:.3f} s at best = "
            f"{1e3 * secs / max(calls, 1):.1f} ms/image"
        )
        print(
            f"  cold minus the saliency calls: {max(cold_best - secs, 0.0) / clean_best:.3f}x clean; "
            f"warm cache (the table's row): {salient.best() / clean_best:.3f}x clean"
        )
    print()
    print(
        "all probes meet their targets"
        if not missed
        else f"missed: {', '.join(missed)} (profile with --profile clean,{','.join(missed)})"
    )

    for label in [s for s in args.profile.split(",") if s]:
        arm = next((a for a in everyone if a.label == label), None)
        if arm is None:
            raise SystemExit(f"--profile: no probe {label!r}")
        print(f"\n===== cProfile: {label} ({arm.how}), {n_docs} docs in one generate_until call, cumulative time")
        print(profile(arm, args.profile_top))


if __name__ == "__main__":
    main()
