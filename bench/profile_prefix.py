"""Where one ``lmms_ac_llava`` run's time goes, with prefix sharing on: start-up (lmms-eval's imports,
our entry point, the task index with our robustness tasks, the model load with our checks, the task
build) and inference (image encoding, shared prefill, suffix prefill, each decoding step, and the
rest: Python, request preparation, planning, detokenisation), with the prefill-token and decode-step
counts, the same requests' time with ``prefix_sharing=false``, and the bound the phases imply: the
time if only the unique prefixes were prefilled and decoding cost nothing (image encoding + shared
prefill), i.e. the largest speed-up over sharing off that suffix and decode work allows.

Start-up is timed in a fresh child process (the parent writes the checkpoint and data first) in
lmms-eval's own order (``python -m lmms_eval`` does the same steps), before anything else is
imported. Take the numbers on an idle machine; on a loaded one only the shares mean something.

    python bench/profile_prefix.py [--per-image 20] [--cap 4] [--requests 200] [--image-tokens 256]
                                   [--question-set mme|gqa] [--batch 8] [--threads 1]
"""

from __future__ import annotations

import time

T0 = time.perf_counter()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from typing import Dict  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import prefix_fixture  # noqa: E402


class Clock:
    """Named wall-time spans, in the order first seen."""

    def __init__(self) -> None:
        self.seconds: Dict[str, float] = {}

    @contextlib.contextmanager
    def span(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def wrap(self, module, attr: str, name: str) -> None:
        """Time every call of ``module.attr`` under ``name``."""
        inner = getattr(module, attr)

        def timed(*a, **kw):
            with self.span(name):
                return inner(*a, **kw)

        setattr(module, attr, timed)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-image", type=int, default=20)
    p.add_argument("--cap", type=int, default=4, help="answer length in new tokens")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--image-tokens", type=int, default=256)
    p.add_argument("--llm-layers", type=int, default=8)
    p.add_argument("--llm-hidden", type=int, default=512)
    p.add_argument("--llm-kv-heads", type=int, help="key/value heads (default: one per head)")
    p.add_argument("--question-set", choices=prefix_fixture.QUESTION_SETS, default="mme")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--fixture", help=argparse.SUPPRESS)  # set by the parent for the measuring child
    return p.parse_args()


def start_up(clock: Clock, ckpt: str, batch: int, n: int):
    """lmms-eval's start-up steps, ours timed apart; returns (model, task, requests)."""
    with clock.span("ours: entry point module"):
        import lmms_ac.entry_point as entry

    clock.wrap(entry, "get_manifests", "ours: entry point (hooks, manifest)")
    with clock.span("lmms-eval: imports (torch, transformers, its registry)"):
        import lmms_eval.evaluator  # noqa: F401
        import lmms_eval.models  # noqa: F401  (calls our entry point)
    import lmms_ac.robustness.index as index

    clock.wrap(index, "extend_index", "ours: robustness task index")
    from lmms_eval.tasks import TaskManager, get_task_dict

    with clock.span("lmms-eval: task index (TaskManager)"):
        manager = TaskManager(verbosity="ERROR")
    import lmms_ac.doctor as doctor
    import lmms_ac.vlm.loaders as loaders

    clock.wrap(doctor, "require_runtime", "ours: runtime check (doctor)")
    clock.wrap(loaders, "load_vlm", "ours: checkpoint load (load_vlm)")
    with clock.span("model construction"):
        lm = prefix_fixture.load_model("lmms_ac_llava", ckpt, batch)
    with clock.span("lmms-eval: task build (dataset, docs, requests)"):
        task = get_task_dict(["mme"], manager, "simple")["mme"]
        task.build_all_requests(limit=n, rank=0, world_size=1)
    lm.task_dict[task.config.task] = task.dataset
    return lm, task, list(task.instances)


def main() -> None:
    args = parse_args()
    n_images = max(1, args.requests // args.per_image)
    n = n_images * args.per_image
    if args.fixture is None:  # parent: write the fixture, then measure in a clean interpreter
        import subprocess

        work = tempfile.mkdtemp(prefix="profile_prefix_")
        _, llm_params = prefix_fixture.make_checkpoint(
            os.path.join(work, "ckpt"),
            args.image_tokens,
            args.llm_layers,
            args.llm_hidden,
            llm_kv_heads=args.llm_kv_heads,
        )
        prefix_fixture.write_mirror(os.path.join(work, "mirror"), args.question_set, n_images, args.per_image)
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), LLM_PARAMS=str(llm_params))
        sys.exit(subprocess.run([sys.executable, __file__, *sys.argv[1:], "--fixture", work], env=env).returncode)
    clock = Clock()
    ckpt = os.path.join(args.fixture, "ckpt")
    llm_params = int(os.environ.get("LLM_PARAMS", "0"))
    os.environ["LMMS_AC_DATASETS"] = os.path.join(args.fixture, "mirror")
    lm, task, instances = start_up(clock, ckpt, args.batch, n)
    ours_model = clock.seconds.get("ours: runtime check (doctor)", 0) + clock.seconds.get(
        "ours: checkpoint load (load_vlm)", 0
    )
    clock.seconds["ours: model construction (the rest)"] = clock.seconds.pop("model construction") - ours_model

    from lmms_ac.vlm.phases import PhaseTimes

    runner = lm.prefix_runner
    lm.generate_until(prefix_fixture.copy_requests(instances[:2], args.cap))  # warm-up
    runner.stats.__init__()
    runner.times = PhaseTimes(device=lm.device)
    start = time.perf_counter()
    on = prefix_fixture.texts(lm.generate_until(prefix_fixture.copy_requests(instances, args.cap)))
    total_on = time.perf_counter() - start
    times, stats = runner.times, runner.stats
    runner.times = None
    lm.prefix_sharing = False  # the same loaded model, every request in full
    start = time.perf_counter()
    off = prefix_fixture.texts(lm.generate_until(prefix_fixture.copy_requests(instances, args.cap)))
    total_off = time.perf_counter() - start
    lm.prefix_sharing = True
    if on != off:
        raise SystemExit("outputs differ between prefix sharing on and off")

    print(
        f"checkpoint: {args.image_tokens} image tokens, Llama {args.llm_layers}x{args.llm_hidden}"
        f"{'' if args.llm_kv_heads is None else f' ({args.llm_kv_heads} KV heads)'} "
        f"({llm_params / 1e6:.1f}M), CPU x{args.threads}; {n} requests ({n_images} images x {args.per_image} "
        f"questions, {args.question_set}), answers {args.cap} tokens, batch {args.batch}"
    )
    print("\nstart-up (s)")
    for name, s in clock.seconds.items():
        print(f"  {name:55s} {s:7.2f}")
    ours = sum(s for k, s in clock.seconds.items() if k.startswith("ours"))
    theirs = sum(s for k, s in clock.seconds.items() if not k.startswith("ours"))
    # the entry point and the task index run inside lmms-eval's spans: take them out of its share
    nested = sum(
        clock.seconds.get(k, 0) for k in ("ours: entry point (hooks, manifest)", "ours: robustness task index")
    )
    print(f"  {'total: ours / lmms-eval (with torch, transformers)':55s} {ours:7.2f} / {theirs - nested:.2f}")

    phases = ["image encoding", "shared prefill", "suffix prefill", "decode step"]
    timed = sum(times.seconds.get(p, 0.0) for p in phases)
    steps = times.steps
    print(f"\ninference, prefix sharing on: {total_on:.2f} s ({n / total_on:.1f} docs/s)")
    for p in phases:
        extra = ""
        if p == "decode step" and steps:
            extra = f"  {len(steps)} steps, {1e3 * sum(steps) / len(steps):.1f} ms each (first {1e3 * steps[0]:.1f})"
        elif p in times.calls:
            extra = f"  {times.calls[p]} call(s)"
        print(f"  {p:55s} {times.seconds.get(p, 0.0):7.2f}{extra}")
    print(f"  {'Python, preparation, planning, detokenisation':55s} {total_on - timed:7.2f}")
    print(
        f"  counts: {stats.images_encoded} images encoded, {stats.prefixes_computed} prefixes prefilled, "
        f"{stats.prefill_tokens} prefill tokens ({stats.prefill_positions} positions with padding), "
        f"{len(steps)} decode forwards for {n} answers; without sharing the same rows prefill "
        f"{stats.full_tokens} tokens ({stats.full_tokens / max(stats.prefill_tokens, 1):.2f}x as many)"
    )
    bound = times.seconds.get("image encoding", 0.0) + times.seconds.get("shared prefill", 0.0)
    print(
        f"\nsharing off: {total_off:.2f} s ({n / total_off:.1f} docs/s); on/off {total_off / total_on:.2f}x; "
        f"bound (only unique prefixes prefilled, decode free) {bound:.2f} s = {total_off / max(bound, 1e-9):.1f}x"
    )
    # every prefill token (suffixes too) at the shared prefill's cost per token, decoding free: what
    # sharing can reach when each question's own tokens must still run through the LLM
    prefix_tokens = stats.prefill_tokens - stats.suffix_tokens
    per_token = times.seconds.get("shared prefill", 0.0) / max(prefix_tokens, 1)
    floor = times.seconds.get("image encoding", 0.0) + per_token * stats.prefill_tokens
    print(
        f"bound with every question's suffix prefilled at the prefix's cost per token ({1e6 * per_token:.0f} us), "
        f"decode free: {floor:.2f} s = {total_off / max(floor, 1e-9):.1f}x"
    )
    print(f"whole run estimate (start-up + inference on): {sum(clock.seconds.values()) - nested + total_on:.1f} s")


if __name__ == "__main__":
    main()
