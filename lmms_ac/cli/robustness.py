"""``lmms-ac tasks`` (the generated robustness tasks) and ``lmms-ac synthesize`` (synthetic images).

Imports nothing heavy until a command runs.
"""

from __future__ import annotations

import argparse
from typing import List, Optional, Sequence

from lmms_ac.robustness.stages import STAGES


def register(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser(
        "tasks",
        help="list the generated robustness tasks (name, base, perturbation, stage, seeds, tag)",
        description="List the robustness variants generated from the perturbation catalogue for every benchmark "
        "(run them with lmms-eval --tasks NAME or a tag). Families come from LMMS_AC_VARIANTS "
        "(default: the default set); probe modules from LMMS_AC_PROBES.",
    )
    t.add_argument(
        "--benchmark",
        "-b",
        action="append",
        metavar="B",
        help="benchmark key (mme, mmbench...) or lmms-eval task name (repeatable)",
    )
    t.add_argument(
        "--perturbation",
        "-p",
        action="append",
        metavar="P",
        help="probe name (pdrop_random) or string form (pdrop_random50, tokperm_s2) (repeatable)",
    )
    t.add_argument("--stage", "-s", choices=STAGES, action="append", help="perturbation stage (repeatable)")
    t.add_argument(
        "--variants",
        metavar="SPEC",
        default=None,
        help="variant families, as LMMS_AC_VARIANTS (e.g. 'default,toknoise' or 'all')",
    )
    t.add_argument("--tags", action="store_true", help="list the tags (with their task counts) instead of the tasks")
    t.add_argument("--benchmarks", action="store_true", help="list the benchmark table instead")
    t.set_defaults(func=_tasks)

    s = sub.add_parser(
        "synthesize",
        help="caption and regenerate the images of a task for its <task>_synthetic variant",
        description="Caption every image of TASK, regenerate it with a text-to-image model (SDXL-Lightning, 4 steps, "
        "guidance 0 by default), store the images and each pair's CLIP image-image similarity under "
        "DIR/<task>/; then `export LMMS_AC_SYNTHETIC=DIR` and run <task>_synthetic.",
    )
    s.add_argument("task", metavar="TASK", help="an lmms-eval task (e.g. mme, seed, mmbench_en_dev)")
    s.add_argument("--to", required=True, metavar="DIR", help="root of the synthetic sets (LMMS_AC_SYNTHETIC)")
    s.add_argument(
        "--captioner",
        default=None,
        metavar="ID|module:fn",
        help="captioning model (hub id or directory, transformers image-text-to-text; default "
        "Salesforce/blip-image-captioning-large) or a Python callable images -> captions",
    )
    s.add_argument(
        "--t2i",
        default=None,
        metavar="ID|DIR",
        help="text-to-image model: ByteDance/SDXL-Lightning (default; alias stabilityai/sdxl-lightning) "
        "or any diffusers pipeline id or directory, or module:fn (prompts, seeds) -> images",
    )
    s.add_argument(
        "--clip",
        default=None,
        metavar="ID|DIR",
        help="CLIP model for the image-image similarity (default openai/clip-vit-large-patch14)",
    )
    s.add_argument("--limit", type=int, default=None, help="only the first N documents")
    s.add_argument("--seed", type=int, default=0, help="generation seed (seed k > 0 writes DIR/<task>_s<k>)")
    s.add_argument("--steps", type=int, default=None, help="denoising steps (default 4)")
    s.add_argument("--guidance", type=float, default=None, help="guidance scale (default 0)")
    s.add_argument("--size", type=int, default=None, help="generated image side in pixels (default: the pipeline's)")
    s.add_argument("--batch-size", type=int, default=4)
    s.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing synthetic set")
    s.add_argument("--include-path", action="append", default=None, help="extra lmms-eval task directory (repeatable)")
    s.set_defaults(func=_synthesize)


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    return "\n".join(lines)


def _perturbation_filter(values: Optional[List[str]]):
    if not values:
        return None
    from lmms_ac.robustness.catalogue import PERTURBATIONS
    from lmms_ac.robustness.grammar import parse_perturbation

    names, forms = set(), set()
    for v in values:
        if v in PERTURBATIONS:
            names.add(v)
        else:
            forms.add(parse_perturbation(v).to_string())  # helpful error for unknown names

    def keep(spec) -> bool:
        p = spec.perturbation
        return p.name in names or p.to_string() in forms or p.with_seed(0).to_string() in forms

    return keep


def _tasks(args: argparse.Namespace) -> int:
    from lmms_ac.benchmarks import all_benchmarks
    from lmms_ac.robustness import tasks as T

    if args.benchmarks:
        rows = [[b.key, b.task, b.title, ",".join(b.studies), b.note] for b in all_benchmarks()]
        print(_table(rows, ["key", "lmms-eval task", "benchmark", "studies", "note"]))
        return 0
    bases = None
    if args.benchmark:
        bases = [T.benchmark(b).task for b in args.benchmark]
    specs = T.task_specs(bases, T.selected_families(args.variants) if args.variants is not None else None)
    keep = _perturbation_filter(args.perturbation)
    if keep is not None:
        specs = [s for s in specs if keep(s)]
    if args.stage:
        specs = [s for s in specs if s.stage in args.stage]
    if args.tags:
        counts = {}
        for s in specs:
            for tag in s.tags:
                counts[tag] = counts.get(tag, 0) + 1
        print(_table([[t, str(n)] for t, n in sorted(counts.items())], ["tag", "tasks"]))
        print(f"\n{len(counts)} tags")
        return 0
    rows = []
    for s in specs:
        p = s.perturbation
        rows.append(
            [
                s.name,
                s.base,
                p.to_string(),
                s.stage,
                f"{p.seed}/{s.seeds}" if s.seeds > 1 else "-",
                s.seeds_tag or f"{s.base}_{p.name}_all",
            ]
        )
    print(_table(rows, ["task", "base", "perturbation", "stage", "seed", "tag"]))
    print(f"\n{len(rows)} tasks")
    return 0


def _synthesize(args: argparse.Namespace) -> int:
    from lmms_ac.io import check_writable
    from lmms_ac.robustness import synthesis as S
    from lmms_ac.robustness.synthetic_store import SYNTHETIC_ENV

    check_writable(args.to, directory=True, what="--to folder")  # before captioning and generating (issue 9)
    result = S.synthesize(
        args.task,
        args.to,
        captioner=args.captioner or S.DEFAULT_CAPTIONER,
        t2i=args.t2i or S.DEFAULT_T2I,
        clip=args.clip or S.DEFAULT_CLIP,
        limit=args.limit,
        seed=args.seed,
        steps=args.steps if args.steps is not None else S.DEFAULT_STEPS,
        guidance=args.guidance if args.guidance is not None else S.DEFAULT_GUIDANCE,
        size=args.size,
        batch_size=args.batch_size,
        device=args.device,
        overwrite=args.overwrite,
        include_path=args.include_path,
    )
    print(
        f"{result.directory}\t{result.documents} documents\t{result.images} images\t"
        f"mean CLIP similarity {result.similarity_mean:.4f}"
    )
    print(f"\nUse it with: export {SYNTHETIC_ENV}={args.to}")
    return 0
