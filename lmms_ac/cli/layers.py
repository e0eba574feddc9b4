"""``lmms-ac layers`` (C@L, reconstruction, attention balance), ``lmms-ac layers-knn`` (mutual k-NN
alignment), ``lmms-ac zeroshot-tasks`` (classification tasks for lmms-eval) and ``lmms-ac
zeroshot-encoder`` (CLIP-style zero-shot of an encoder with a text tower).

Arguments in; the runs are ``lmms_ac.layers.probe_run``, ``knn_run`` and ``zeroshot_run``. Scores go
to the shared scores CSV (``--out``) through ``lmms_ac.scores.store``, one row per score name
(``C@L12``, ``C@enc``, ``recon@L12``, ``attn_img@L12``, ``knn@L12``, ``knn_base@L12``,
``zeroshot_enc:<dataset>``): a rerun with the same configuration is skipped, ``--force`` recomputes.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from lmms_ac.cli.args import positive_int
from lmms_ac.scores.methods import CORRESPONDENCE_METHODS

if TYPE_CHECKING:
    from lmms_ac.layers.checkpoint import CheckpointSettings

DEFAULT_OUT = "scores.csv"


def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        required=True,
        metavar="CKPT",
        help="trained checkpoint, any format lmms_ac_llava loads (llava-hf or original LLaVA; directory or hub id)",
    )
    p.add_argument("--model-base", default=None, help="base LLM of a stage-1 checkpoint (only mm_projector.bin)")
    p.add_argument("--vision-tower", default=None, help="override the checkpoint's vision tower spec")
    p.add_argument(
        "--variant", default=None, help="row name in the scores file (default: the checkpoint's directory name)"
    )
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda when available)")
    p.add_argument("--dtype", default="auto", help="auto | float16 | bfloat16 | float32")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"scores CSV to append to (default: {DEFAULT_OUT})")
    p.add_argument("--force", action="store_true", help="recompute and replace rows already in --out for this config")
    p.add_argument("--json", action="store_true", help="print the full report as JSON instead of a table")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "layers",
        help="what the MLLM keeps of its encoder, layer by layer: C@L, reconstruction, attention balance",
        description="Run SPair-layout images through a trained MLLM once each (hooks read every layer) and report, "
        "per layer L (0 = projector output): the C score on the visual-token hidden states next to the "
        "encoder's own C (C@L, C@enc), the cosine of a least-squares map back to the encoder features "
        "fitted on half the images and measured on the other half (recon@L), and the share of "
        "attention text positions put on image positions (attn_img@L, eager attention).",
    )
    _add_model(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--spair", metavar="DIR", help="SPair-71k layout root (JPEGImages/, PairAnnotation/): all three metrics"
    )
    src.add_argument(
        "--images", metavar="DIR", help="any image folder (recursive): reconstruction and attention only (no C)"
    )
    p.add_argument("--split", default="test", help="trn | val | test (default: test)")
    p.add_argument(
        "--limit",
        type=positive_int,
        default=None,
        help="use only the first N pairs (by file name), or N images with --images",
    )
    p.add_argument(
        "--layers", default="all", help="layers to read: 'all' (default), '0,8,16,-1', '0-12' (0 = projector output)"
    )
    p.add_argument("--method", default="argmax", choices=CORRESPONDENCE_METHODS.names())
    p.add_argument(
        "--alpha", type=float, default=0.1, help="PCK threshold as a fraction of max(h, w) of the target bbox"
    )
    p.add_argument("--batch-size", type=positive_int, default=8, help="images per forward pass (default 8)")
    p.add_argument(
        "--pad",
        default="zero",
        choices=["zero", "mean"],
        help="letterbox padding: zero (as score-c, default) or the encoder's mean colour (as LLaVA's expand2square)",
    )
    p.add_argument(
        "--prompt",
        action="append",
        default=None,
        metavar="TEXT",
        help="user prompt (repeatable; images cycle through them). Default: a neutral set ('Describe the image.', ...)",
    )
    p.add_argument(
        "--prompts-file",
        default=None,
        metavar="FILE",
        help="prompts, one per line (.txt) or records with a 'question'/'prompt'/'text' field (.jsonl), "
        "e.g. a task's questions for its attention balance",
    )
    p.add_argument(
        "--task",
        default=None,
        metavar="NAME",
        help="use the questions of this lmms-eval task as prompts (its doc_to_text; images stay the SPair ones)",
    )
    p.add_argument("--task-limit", type=positive_int, default=200, help="questions taken from --task (default 200)")
    p.add_argument(
        "--bank",
        default="model",
        choices=["model", "cpu"],
        help="where one category's per-layer features wait for matching: the model's device (default) or cpu "
        "(per image: (layers + 1) x tokens x hidden values, ~155 MB in fp16 for a 7B LLaVA-1.5)",
    )
    p.add_argument("--prompt-format", default="auto", help="auto | vicuna_v1 | chat_template | plain")
    p.add_argument("--system-prompt", default=None)
    p.add_argument("--no-c", action="store_true", help="skip C@L")
    p.add_argument("--no-recon", action="store_true", help="skip reconstruction")
    p.add_argument(
        "--no-attention", action="store_true", help="skip attention balance (then no eager attention is needed)"
    )
    p.add_argument(
        "--recon-tokens", type=positive_int, default=64, help="held-out tokens sampled per test image (default 64)"
    )
    p.add_argument(
        "--recon-ridge", type=float, default=1e-3, help="ridge, relative to each channel's variance (default 1e-3)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the train/test image split and token sample")
    p.add_argument(
        "--plot", default=None, metavar="DIR", help="write the curves against depth to DIR/layers_<variant>.{png,svg}"
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing figures")
    p.set_defaults(func=cmd_layers)

    k = subparsers.add_parser(
        "layers-knn",
        help="mutual k-NN alignment of encoder image features and LLM caption features, base LLM vs the MLLM's LLM",
        description="On image-caption pairs (DOCCI or LLaVA-558K layout), the mutual k-nearest-neighbour overlap "
        "between the "
        "checkpoint's vision encoder features of the images (mean over patch tokens) and a language model's "
        "features of the captions (mean over caption tokens) at every LLM layer: the trained MLLM's LLM "
        "(knn@L<l>) and, with --base-llm, the base LLM it started from (knn_base@L<l>).",
    )
    _add_model(k)
    k.add_argument("--data", required=True, choices=["docci", "llava558k"], help="caption data layout")
    k.add_argument(
        "--captions",
        required=True,
        metavar="PATH",
        help="DOCCI root or docci_descriptions.jsonlines; or the LLaVA-558K json",
    )
    k.add_argument("--images", default=None, metavar="DIR", help="image folder (DOCCI default: <root>/images)")
    k.add_argument("--data-split", default=None, help="DOCCI split to keep (train, test, qual_dev...; default all)")
    k.add_argument(
        "--base-llm", default=None, metavar="NAME", help="base LLM (hub id or directory), e.g. lmsys/vicuna-7b-v1.5"
    )
    k.add_argument("--n", type=positive_int, default=1000, help="pairs, drawn with --seed (default 1000)")
    k.add_argument("--k", type=positive_int, default=10, help="neighbours (default 10)")
    k.add_argument("--layers", default="all", help="LLM layers: 'all' (default), '0,8,-1', '4-12'")
    k.add_argument("--seed", type=int, default=0)
    k.add_argument("--batch-size", type=positive_int, default=16)
    k.add_argument(
        "--max-tokens", type=positive_int, default=512, help="truncate captions to this many tokens (default 512)"
    )
    k.add_argument("--plot", default=None, metavar="DIR", help="write the curves to DIR/knn_<variant>.{png,svg}")
    k.add_argument("--overwrite", action="store_true", help="replace existing figures")
    k.set_defaults(func=cmd_knn)

    z = subparsers.add_parser(
        "zeroshot-tasks",
        help="generate lmms-eval zero-shot classification tasks (loglikelihood over class names)",
        description="For each classification set (a paper set name, or NAME=SOURCE[@split] with SOURCE an image folder "
        "with one sub-folder per class, a datasets save_to_disk copy or a hub dataset id), save a seeded "
        "subset to DIR/NAME and write DIR/zeroshot_NAME.yaml: the MLLM answers by the loglikelihood of "
        "each class name after the question; acc = the most likely class. Run them with "
        "lmms-eval --include_path DIR --tasks zeroshot_NAME (or the tag lmms_ac_zeroshot).",
    )
    z.add_argument(
        "datasets",
        nargs="+",
        metavar="DATASET",
        help="caltech101 | cifar100 | food101 | pets | country211=DIR | eurosat | aircraft | NAME=SOURCE[@split]; "
        "SOURCE is an existing folder, else a hub id ('name' or 'org/name'); any other missing path is an error",
    )
    z.add_argument("--to", required=True, metavar="DIR", help="folder for the task YAMLs and the saved subsets")
    z.add_argument(
        "--n", type=positive_int, default=1000, help="images per set, drawn with --seed (default 1000, as the paper)"
    )
    z.add_argument("--seed", type=int, default=0)
    z.add_argument(
        "--prompt", default=None, help="the question before the class name (default: a neutral 'what is it' question)"
    )
    z.add_argument("--image-column", default=None, help="image column (default: the one Image feature)")
    z.add_argument("--label-column", default=None, help="label column (default: the one ClassLabel feature)")
    z.add_argument("--overwrite", action="store_true", help="regenerate tasks that already exist in DIR")
    z.set_defaults(func=cmd_zeroshot_tasks)

    e = subparsers.add_parser(
        "zeroshot-encoder",
        help="CLIP-style zero-shot accuracy of an encoder with a text tower "
        "(the encoder side of zero-shot recognition)",
        description="Top-1 accuracy of image embedding vs the text embeddings of each class name in prompt templates "
        "(CLIP, SigLIP: any transformers model with get_image_features/get_text_features), on the same "
        "seeded subsets as zeroshot-tasks (give the prepared DIR/NAME folders, or the same sources with "
        "the same --n/--seed). One row zeroshot_enc:NAME per set in --out.",
    )
    e.add_argument(
        "datasets", nargs="+", metavar="DATASET", help="as for zeroshot-tasks, e.g. cifar100=out/zs/cifar100"
    )
    who = e.add_mutually_exclusive_group(required=True)
    who.add_argument(
        "--encoder",
        help="dual-encoder directory or hub id (a representation spec such as "
        "clip:openai/clip-vit-large-patch14-336 is accepted). An existing path is used as such; otherwise only "
        "'name' or 'org/name' is a hub id, and anything else (./x, ~/x, a/b/c) is a missing path: an error",
    )
    who.add_argument(
        "--model",
        metavar="CKPT",
        help="an original-format LLaVA checkpoint: its own tower (mm_vision_tower), "
        "scored under the checkpoint's variant name, next to its lmms-eval results",
    )
    e.add_argument(
        "--template",
        action="append",
        default=None,
        help="prompt template with {} (repeatable; default 'a photo of a {}.')",
    )
    e.add_argument("--n", type=positive_int, default=1000)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--image-column", default=None)
    e.add_argument("--label-column", default=None)
    e.add_argument("--batch-size", type=positive_int, default=32)
    e.add_argument("--device", default=None)
    e.add_argument("--variant", default=None, help="row name (default: the encoder name)")
    e.add_argument("--out", default=DEFAULT_OUT)
    e.add_argument("--force", action="store_true")
    e.add_argument("--json", action="store_true")
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(func=cmd_zeroshot_encoder)

    t = subparsers.add_parser(
        "zeroshot-table",
        help="zero-shot recognition kept or lost: MLLM accuracy next to its encoder's, per set and on average",
        description="Read the zeroshot_<set> accuracies from lmms-eval result files under RESULTS and the "
        "zeroshot_enc:<set> "
        "rows of --scores, and print one column per MLLM and per encoder (percent), with the average over the "
        "sets every column has (the paper: LLaVA-1.5 38.2%% vs 67.4%% for its CLIP ViT-L/336 over seven sets).",
    )
    t.add_argument("results", metavar="RESULTS", help="lmms-eval --output_path folder(s) parent")
    t.add_argument("--scores", default=None, help="scores CSV holding zeroshot_enc:* rows")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=cmd_zeroshot_table)


def checkpoint_settings(args: argparse.Namespace) -> CheckpointSettings:
    """The checkpoint options ``_add_model`` defines."""
    from lmms_ac.layers.checkpoint import CheckpointSettings

    return CheckpointSettings(
        model=args.model,
        model_base=args.model_base,
        vision_tower=args.vision_tower,
        device=args.device,
        dtype=args.dtype,
    )


def cmd_layers(args: argparse.Namespace) -> int:
    from lmms_ac.layers.probe_run import LayerProbeSettings, run_layer_probes

    settings = LayerProbeSettings(
        checkpoint=checkpoint_settings(args),
        out=args.out,
        spair=args.spair,
        images=args.images,
        variant=args.variant,
        force=args.force,
        progress=not args.no_progress,
        split=args.split,
        limit=args.limit,
        layers=args.layers,
        method=args.method,
        alpha=args.alpha,
        batch_size=args.batch_size,
        pad=args.pad,
        prompt=tuple(args.prompt or ()),
        prompts_file=args.prompts_file,
        task=args.task,
        task_limit=args.task_limit,
        bank=args.bank,
        prompt_format=args.prompt_format,
        system_prompt=args.system_prompt,
        correspondence=not args.no_c,
        reconstruction=not args.no_recon,
        attention=not args.no_attention,
        recon_tokens=args.recon_tokens,
        recon_ridge=args.recon_ridge,
        seed=args.seed,
        plot=args.plot,
        overwrite=args.overwrite,
    )
    run = run_layer_probes(settings)
    print(run.to_json() if args.json else run.summary())
    return 0


def cmd_knn(args: argparse.Namespace) -> int:
    from lmms_ac.layers.knn_run import KnnSettings, run_knn

    settings = KnnSettings(
        checkpoint=checkpoint_settings(args),
        data=args.data,
        captions=args.captions,
        out=args.out,
        images=args.images,
        data_split=args.data_split,
        base_llm=args.base_llm,
        variant=args.variant,
        force=args.force,
        progress=not args.no_progress,
        n=args.n,
        k=args.k,
        layers=args.layers,
        seed=args.seed,
        batch_size=args.batch_size,
        max_tokens=args.max_tokens,
        plot=args.plot,
        overwrite=args.overwrite,
    )
    run = run_knn(settings)
    print(run.to_json() if args.json else run.summary())
    return 0


def cmd_zeroshot_tasks(args: argparse.Namespace) -> int:
    from lmms_ac.layers.zeroshot_run import ZeroShotTasksSettings, prepare_zeroshot_tasks

    settings = ZeroShotTasksSettings(
        datasets=tuple(args.datasets),
        to=args.to,
        n=args.n,
        seed=args.seed,
        prompt=args.prompt,
        image_column=args.image_column,
        label_column=args.label_column,
        overwrite=args.overwrite,
    )
    run = prepare_zeroshot_tasks(settings, on_line=print)
    print(run.summary())
    return 0


def cmd_zeroshot_encoder(args: argparse.Namespace) -> int:
    from lmms_ac.layers.zeroshot_run import ZeroShotEncoderSettings, run_zeroshot_encoder

    settings = ZeroShotEncoderSettings(
        datasets=tuple(args.datasets),
        out=args.out,
        encoder=args.encoder,
        model=args.model,
        templates=tuple(args.template or ()),
        n=args.n,
        seed=args.seed,
        image_column=args.image_column,
        label_column=args.label_column,
        batch_size=args.batch_size,
        device=args.device,
        variant=args.variant,
        force=args.force,
        progress=not args.no_progress,
    )
    run = run_zeroshot_encoder(settings)
    print(run.to_json() if args.json else run.summary())
    return 0


def cmd_zeroshot_table(args: argparse.Namespace) -> int:
    import json

    from lmms_ac.layers.zeroshot_table import format_table, zeroshot_table

    table = zeroshot_table(args.results, args.scores)
    print(json.dumps(table, indent=2) if args.json else format_table(table))
    return 0
