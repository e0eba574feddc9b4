"""The runs behind ``lmms-ac zeroshot-tasks`` (classification sets prepared as lmms-eval tasks) and
``lmms-ac zeroshot-encoder`` (CLIP-style zero-shot accuracy of an encoder with a text tower, one row
``zeroshot_enc:<set>`` per set in the scores CSV); the methods are in ``zeroshot``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from lmms_ac.layers.checkpoint import checkpoint_summary, default_variant
from lmms_ac.layers.zeroshot import (
    DEFAULT_PROMPT,
    DEFAULT_TEMPLATES,
    class_prompt_name,
    encoder_model_id,
    encoder_zero_shot,
    find_columns,
    load_source,
    load_text_image_model,
    parse_source,
    prepare_task,
    subsample,
)
from lmms_ac.scores.store import ScoreValue, record_score


@dataclass(frozen=True)
class ZeroShotTasksSettings:
    """Which sets to prepare and where (the options of ``zeroshot-tasks``)."""

    datasets: Tuple[str, ...]  # paper set names or NAME=SOURCE[@split]
    to: str  # folder for the task YAMLs and the saved subsets
    n: int = 1000
    seed: int = 0
    prompt: Optional[str] = None  # the question before the class name; default: a neutral one
    image_column: Optional[str] = None
    label_column: Optional[str] = None
    overwrite: bool = False


@dataclass
class ZeroShotTasksRun:
    """The prepared tasks (``prepare_task`` summaries) and the folder that holds them."""

    to: str
    tasks: List[Dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        """How to run the tasks with lmms-eval."""
        return (
            f"\nrun: lmms-eval --model lmms_ac_llava --model_args pretrained=<ckpt> --include_path {self.to} "
            f"--tasks {','.join(t['task'] for t in self.tasks)} --output_path <results>"
        )


def prepare_zeroshot_tasks(
    settings: ZeroShotTasksSettings, on_line: Callable[[str], None] = lambda line: None
) -> ZeroShotTasksRun:
    """Prepare every set (all names are checked before any work); ``on_line`` gets one line per task as it is
    written."""
    s = settings
    specs = [parse_source(d) for d in s.datasets]
    names = [n for n, _, _ in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"dataset names repeat: {names}")
    run = ZeroShotTasksRun(to=s.to)
    for name, source, split in specs:
        info = prepare_task(
            name,
            source,
            s.to,
            split=split,
            n=s.n,
            seed=s.seed,
            image_column=s.image_column,
            label_column=s.label_column,
            prompt=s.prompt or DEFAULT_PROMPT,
            overwrite=s.overwrite,
        )
        on_line(f"{info['task']}: {info['n']} images, {info['classes']} classes from {source} -> {info['yaml']}")
        run.tasks.append(info)
    return run


@dataclass(frozen=True)
class ZeroShotEncoderSettings:
    """Which encoder, which sets, and where the rows go (the options of ``zeroshot-encoder``)."""

    datasets: Tuple[str, ...]  # as for zeroshot-tasks, e.g. cifar100=out/zs/cifar100
    out: str  # scores CSV
    encoder: Optional[str] = None  # dual encoder directory, hub id or representation spec
    model: Optional[str] = None  # or an original-format LLaVA checkpoint: its own tower
    templates: Tuple[str, ...] = ()  # prompt templates with {}; default: DEFAULT_TEMPLATES
    n: int = 1000
    seed: int = 0
    image_column: Optional[str] = None
    label_column: Optional[str] = None
    batch_size: int = 32
    device: Optional[str] = None  # default: cuda when available
    variant: Optional[str] = None  # row name; default: the checkpoint's directory name, else the encoder
    force: bool = False
    progress: bool = True


@dataclass
class ZeroShotEncoderRun:
    """Accuracy per set (``{name: {"accuracy", "n", "skipped"}}``) of one encoder."""

    variant: str
    encoder: str
    templates: List[str]
    out: str
    results: Dict[str, Dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {"variant": self.variant, "encoder": self.encoder, "templates": self.templates, "results": self.results},
            indent=2,
        )

    def summary(self) -> str:
        """One line per set: accuracy, n, and whether it was recorded now or found."""
        lines = []
        for name, r in self.results.items():
            state = "already recorded" if r["skipped"] else "recorded"
            lines.append(
                f"{self.variant}\tzeroshot_enc:{name}\t{r['accuracy']:.2f}%\t(n={r['n']}, {state} in {self.out})"
            )
        return "\n".join(lines)


def run_zeroshot_encoder(settings: ZeroShotEncoderSettings) -> ZeroShotEncoderRun:
    """Score (or find) the encoder's zero-shot accuracy on each set; the encoder loads once, only when some
    set is not stored yet."""
    import torch

    s = settings
    specs = [parse_source(d) for d in s.datasets]
    templates = list(s.templates) or list(DEFAULT_TEMPLATES)
    encoder = s.encoder
    if s.model:
        tower, _ = checkpoint_summary(s.model, None)
        if not tower or tower.startswith("llava-hf:"):
            raise ValueError(
                f"{s.model} does not name its vision tower by hub id (llava-hf checkpoints embed it); pass "
                "--encoder with the tower's dual-encoder id, e.g. openai/clip-vit-large-patch14-336"
            )
        encoder = tower
    encoder_model_id(encoder)  # a missing encoder path fails here, before any data loads
    variant = s.variant or (default_variant(s.model) if s.model else encoder)
    device = s.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cache: Dict[str, Any] = {}
    run = ZeroShotEncoderRun(variant=variant, encoder=encoder, templates=templates, out=s.out)
    for name, source, split in specs:
        data = load_source(source, split)
        image_col, label_col = find_columns(data.features, s.image_column, s.label_column)
        idx = subsample(len(data), s.n, s.seed)
        classes = [class_prompt_name(c) for c in data.features[label_col].names]
        config = {
            "command": "zeroshot-encoder",
            "dataset": name,
            "source": source,
            "split": split,
            "n": s.n,
            "seed": s.seed,
            "templates": templates,
            "classes": classes,
        }

        def compute(data=data, idx=idx, classes=classes, image_col=image_col, label_col=label_col) -> ScoreValue:
            if "model" not in cache:
                cache["model"] = load_text_image_model(encoder, device)
            sub = data.select(idx)
            res = encoder_zero_shot(
                *cache["model"], sub[image_col], sub[label_col], classes, templates, s.batch_size, s.progress
            )
            return ScoreValue(value=res["accuracy"], n=res["n"], details={"classes": len(classes)})

        row = record_score(
            s.out,
            variant=variant,
            vision=encoder,
            score=f"zeroshot_enc:{name}",
            config=config,
            compute=compute,
            method="clip_zero_shot",
            split=split or "",
            force=s.force,
        )
        run.results[name] = {"accuracy": float(row["value"]), "n": int(row["n"]), "skipped": bool(row.get("skipped"))}
    return run
