"""``lmms-ac demo``: the whole pipeline, offline, on tiny embedded models and data.

Every step runs the real command a user would type (printed before it runs), on artifacts built
here: a tiny random llava-hf LLaVA-1.5 checkpoint and its original-LLaVA twin, a tiny random llava-hf
LLaVA-NeXT checkpoint (tiled input), tiny MME / SEED-Bench copies in the real schemas, a tiny LLaVA-558K
and an SPair-layout fixture made from scikit-image photographs.
"""

from __future__ import annotations

import argparse
import collections
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from lmms_ac.cli import CommandError
from lmms_ac.io import prepare_output_dir, seal_output_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline offline on tiny embedded models and data")
    p.add_argument("--out", default="out/demo", help="output directory (default out/demo)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the output of an earlier demo in --out (a folder the demo did not make is never deleted)",
    )
    p.set_defaults(func=run_demo)


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


class StepFailed(CommandError):
    """A demo step failed; the message names the step, why, and the tail of its output."""


# lmms-eval 0.7.3 logs this and exits 0 when an evaluation raises
LMMS_EVAL_FAILURE = "Error during evaluation"
# weights seed of the demo's tiny LLaVA-NeXT: few random NeXTs answer in MME's yes/no form at all (seeds 0-48 score 0
# clean); seed 82 does on some docs and answers differently under token permutation, so its rows are not all 0
NEXT_SEED = 82


def _results_files(results: Path) -> set:
    return set(results.glob("**/*_results.json")) if results.is_dir() else set()


def _run(
    cmd: List[str], env: dict, cwd: Path, *, expect: Sequence[Path] = (), lmms_eval_results: Optional[Path] = None
) -> None:
    """Run one step, streaming its output; fail on a non-zero exit, on lmms-eval's logged failure, when an
    lmms-eval step wrote no new results file under ``lmms_eval_results``, or when an ``expect``ed path is missing."""
    print(f"\n$ {' '.join(shlex.quote(c) for c in cmd)}", flush=True)
    before = _results_files(lmms_eval_results) if lmms_eval_results else set()
    tail: collections.deque = collections.deque(maxlen=40)
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        tail.append(line)
    code = proc.wait()
    sys.stdout.flush()
    why = None
    if code != 0:
        why = f"exit code {code}"
    elif lmms_eval_results is not None and any(LMMS_EVAL_FAILURE in line for line in tail):
        why = f"lmms-eval logged {LMMS_EVAL_FAILURE!r} (it exits 0 when an evaluation fails)"
    elif lmms_eval_results is not None and not (_results_files(lmms_eval_results) - before):
        why = f"lmms-eval exited 0 but wrote no results file under {lmms_eval_results}"
    else:
        missing = [str(p) for p in expect if not Path(p).exists()]
        if missing:
            why = f"expected output missing: {', '.join(missing)}"
    if why:
        raise StepFailed(
            f"demo step failed ({why}): {' '.join(cmd)}\n--- last lines of its output ---\n{''.join(tail)}"
        )


def write_demo_study(path: Path, out: Path, hf: str, orig: dict, pretrain: dict, next_hf: str) -> Path:
    """The demo's evaluations and scores as a study file (paths relative to ``out``, where it lives), run by
    ``lmms-ac study run`` on the local executor: what a user writes for a real study, in miniature. ``next_hf``:
    the tiny llava-hf LLaVA-NeXT checkpoint, evaluated clean, and on MME under token permutation and patch shuffle."""
    import yaml

    def rel(p) -> str:
        return os.path.relpath(str(p), str(out))

    study = {
        "name": "demo",
        "output": "study",
        "env": {
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TRANSFORMERS_VERBOSITY": "error",
            "LMMS_AC_DATASETS": str(out / "mirror"),
        },
        "models": [
            {
                "name": "tiny-clip",
                "pretrained": rel(hf),
                "model_args": {"device": "cpu"},
                "stage1": rel(hf),
                "vision": f"clip:{rel(orig['tower'])}",
            },
            {
                "name": "tiny-clip-original-tokperm",
                "variant": "tiny-clip",
                "pretrained": rel(orig["checkpoint"]),
                "model_args": {"device": "cpu", "perturbation": "tokperm", "perturbation_seed": 1},
                "benchmarks": ["mme"],
                "probes": False,
            },
            # LLaVA-NeXT: both benchmarks clean (a leaderboard row like the 1.5 one's) and, of the study's probes, only
            # the patch shuffle (on the image before tiling); the token-group map stays the 1.5 model's. On tiled
            # input (base view + tiles + row-end newline tokens) lmms_ac_llava refuses a probe not defined on the
            # views, and `study plan` names it before any job
            {
                "name": "tiny-next",
                "pretrained": rel(next_hf),
                "model_args": {"device": "cpu"},
                "probes": ["patchshuffle4"],
            },
            # token permutation on NeXT: within the base view and within each tile, the newline tokens in place
            {
                "name": "tiny-next-tokperm",
                "variant": "tiny-next",
                "pretrained": rel(next_hf),
                "model_args": {"device": "cpu", "perturbation": "tokperm", "perturbation_seed": 1},
                "benchmarks": ["mme"],
                "probes": False,
            },
        ],
        "benchmarks": ["mme", "seed"],
        "probes": [{"perturbation": "patchshuffle4", "seeds": 5, "benchmarks": ["mme"]}]
        # the 2x2 token-group probe: the model sees one quarter of the visual tokens at a time (a probe map)
        + [{"perturbation": f"tokgroup_m2_g{g}", "benchmarks": ["mme"]} for g in range(4)],
        "lmms_eval": {"batch_size": 8, "log_samples": True},
        "scores": {
            "A": {"captions": rel(pretrain["captions"]), "images": rel(pretrain["images"]), "n": 8},
            "C": {"spair": "spair"},
            "C_ocr": {"n": 20},
            "device": "cpu",
        },
        "executor": {"type": "local", "gpus": "none", "max_attempts": 1},
        "report": {"outputs": ["table", "scores", "leaderboard", "robustness"]},
    }
    head = (
        "# The demo's evaluations and scores as a study (`lmms-ac study init` writes a commented example).\n"
        "# lmms-ac study plan|run|status|report demo-study.yaml\n"
    )
    path.write_text(head + yaml.safe_dump(study, sort_keys=False), encoding="utf-8")
    return path


def run_demo(args: argparse.Namespace) -> int:
    out = prepare_output_dir(Path(args.out).expanduser().absolute(), "demo", overwrite=args.overwrite)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_VERBOSITY": "error",
        "LMMS_AC_DATASETS": str(out / "mirror"),
    }

    print("== building tiny checkpoints and datasets (random weights, real formats)")
    from lmms_ac.testing.datasets import write_llava_pretrain, write_mirror
    from lmms_ac.testing.spair import write_photo_fixture
    from lmms_ac.testing.tiny import convert_to_original, make_llava_hf
    from lmms_ac.testing.tiny_next import build_llava_next_hf

    # weights seed 3: a random model answers in MME's yes/no form on some docs (seed 0 never does, its clean MME is
    # 0), so the relative probe map (clean - group) / clean of the demo's page is defined
    hf = make_llava_hf(str(out / "ckpt" / "tiny-llava-hf"), seed=3)
    orig = convert_to_original(hf, str(out / "ckpt" / "tiny-llava-original"))
    next_hf = build_llava_next_hf(str(out / "ckpt" / "tiny-llava-next-hf"), seed=NEXT_SEED)["checkpoint"]
    write_mirror(str(out / "mirror"))
    pretrain = write_llava_pretrain(str(out / "llava-558k"), n=8)
    write_photo_fixture(out / "spair")
    lmms_eval, lmms_ac = _bin("lmms-eval"), _bin("lmms-ac")

    print("\n== 0. the local dataset copies lmms-eval will read, every image decoded strictly")
    _run([lmms_ac, "datasets", "mme", "seed", "--verify"], env, out)

    print(
        "\n== 1-3. one study file (demo-study.yaml) holds every evaluation and score; `study run` runs each job and"
        "\n      prints its command: lmms-eval on MME and SEED-IMG (no --include_path, datasets from the local mirror);"
        "\n      robustness: the same weights in the original LLaVA format with a seeded visual-token permutation "
        "(model"
        "\n      argument) and tasks generated from the catalogue (4x4 patch shuffle, 5 seeds; the 2x2 token groups);"
        "\n      a tiny LLaVA-NeXT (tiled input: base view + tiles) on MME and SEED clean, and MME under token"
        "\n      permutation (within each view) and patch shuffle (before tiling): its `probes: [patchshuffle4]` picks"
        "\n      one of the study's probes; the A score (caption log-likelihood through the frozen stage-1 model),"
        "\n      the C score (keypoint transfer) and C_ocr. A rerun does only what is missing."
    )
    study = write_demo_study(out / "demo-study.yaml", out, hf, orig, pretrain, next_hf)
    _run([lmms_ac, "study", "plan", str(study)], env, out)
    _run([lmms_ac, "study", "run", str(study)], env, out, expect=[out / "study" / "done"])
    _run([lmms_ac, "study", "run", str(study)], env, out)  # the rerun finds everything done: 0 jobs
    _run([lmms_ac, "study", "status", str(study)], env, out)
    _run([lmms_ac, "study", "report", str(study)], env, out, expect=[out / "study" / "report" / "scores.csv"])
    scores = str(out / "scores.csv")
    _run(["cp", str(out / "study" / "report" / "scores.csv"), scores], env, out, expect=[Path(scores)])

    print("\n== 3b. inside the MLLM: C@L, reconstruction and attention per layer; mutual k-NN; zero-shot kept or lost")
    from lmms_ac.testing.tiny_layers import make_tiny_clip, write_classification_folder

    _run(
        [
            lmms_ac,
            "layers",
            "--model",
            hf,
            "--spair",
            str(out / "spair"),
            "--variant",
            "tiny-clip",
            "--out",
            scores,
            "--plot",
            str(out / "figures"),
        ],
        env,
        out,
        expect=[out / "figures" / "layers_tiny-clip.png"],
    )
    _run(
        [
            lmms_ac,
            "layers-knn",
            "--model",
            hf,
            "--data",
            "llava558k",
            "--captions",
            pretrain["captions"],
            "--images",
            pretrain["images"],
            "--n",
            "8",
            "--k",
            "3",
            "--variant",
            "tiny-clip",
            "--out",
            scores,
        ],
        env,
        out,
    )
    colours = write_classification_folder(str(out / "colours"))
    clip = make_tiny_clip(str(out / "ckpt" / "tiny-clip-dual"))
    _run(
        [lmms_ac, "zeroshot-tasks", f"colours={colours}", "--to", str(out / "zeroshot")],
        env,
        out,
        expect=[out / "zeroshot" / "zeroshot_colours.yaml"],
    )
    _run(
        [
            lmms_eval,
            "--model",
            "lmms_ac_llava",
            "--model_args",
            f"pretrained={hf},device=cpu,variant=tiny-clip",
            "--include_path",
            str(out / "zeroshot"),
            "--tasks",
            "zeroshot_colours",
            "--batch_size",
            "8",
            "--output_path",
            str(out / "results-zeroshot"),
            "--verbosity",
            "WARNING",
        ],
        env,
        out,
        lmms_eval_results=out / "results-zeroshot",
    )
    _run(
        [
            lmms_ac,
            "zeroshot-encoder",
            f"colours={out / 'zeroshot' / 'colours'}",
            "--encoder",
            clip,
            "--variant",
            "tiny-clip-encoder",
            "--out",
            scores,
        ],
        env,
        out,
    )
    _run([lmms_ac, "zeroshot-table", str(out / "results-zeroshot"), "--scores", scores], env, out)

    print(
        "\n== 4. results (the study's and the zero-shot run) -> one tidy table -> robustness drops and a leaderboard"
        "\n      of the benchmarks (the zero-shot set is read by the report's inside-the-model section)"
    )
    table = str(out / "table.csv")
    results = [str(out / "study" / "done"), str(out / "results-zeroshot")]
    _run([lmms_ac, "collect", *results, "--out", table], env, out, expect=[Path(table)])
    _run([lmms_ac, "robustness", table, "--format", "md"], env, out)
    board = [lmms_ac, "leaderboard", table, "--scores", scores, "--benchmarks", "mme,seed"]
    _run([*board, "--format", "md"], env, out)
    _run(
        [*board, "--out", str(out / "leaderboard.csv")],
        env,
        out,
        expect=[out / "leaderboard.csv"],
    )

    print(
        "\n== 5. the law on the published law-v1 data (13 representations; a law needs many trained variants,"
        "\n      the tiny demo has one): fit quality, and the policy that picks which to train"
    )
    _run(
        [lmms_ac, "fit", "--example", "law-v1", "--normalize", "minmax", "--plot", str(out / "figures")],
        env,
        out,
        expect=[out / "figures" / "law_surface_mme.png"],
    )
    _run(
        [lmms_ac, "policy", "--example", "law-v1", "--runs", "200", "--policy", "all", "--plot", str(out / "figures")],
        env,
        out,
    )

    print(
        "\n== 6. one page to share (no network needed to open it): the leaderboard, robustness drops, the 2x2 probe map"
        "\n      and what the model keeps of its encoder from the demo's own runs; the law and the policy, which need"
        "\n      many trained variants, on the published law-v1 data (labelled so on the page)"
    )
    report = out / "report.html"
    _run(
        [
            *(lmms_ac, "report", "--table", table, "--scores", scores, "--benchmarks", "mme,seed"),
            *("--example", "law-v1", "--runs", "200", "--out", str(report)),
        ],
        env,
        out,
        expect=[report],
    )
    seal_output_dir(out, "demo")
    print(f"\nDemo finished: everything is under {out}\nReport: {report}")
    return 0
