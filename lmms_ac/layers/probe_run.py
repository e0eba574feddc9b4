"""The run behind ``lmms-ac layers``: C@L, reconstruction and attention balance of a trained MLLM
(``pipeline.run_layers``), recorded in the scores CSV one row per score name (``C@L12``, ``C@enc``,
``recon@L12``, ``attn_img@L12``), with the curves against depth as a figure.

A rerun whose scores are all stored for its configuration is answered from the store without loading
the model; ``force`` recomputes and replaces the rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from lmms_ac.io import config_hash
from lmms_ac.layers.checkpoint import CheckpointSettings, checkpoint_summary, default_variant, load_model, vision_label
from lmms_ac.layers.extraction import decoder_blocks, parse_layers
from lmms_ac.layers.pipeline import LayerReport, expected_scores, list_images, run_layers
from lmms_ac.layers.plots import refuse_existing_figure
from lmms_ac.layers.prompts import read_prompts, task_prompts
from lmms_ac.scores.spair import dataset_fingerprint, normalize_split
from lmms_ac.scores.store import record_rows, stored_rows


@dataclass(frozen=True)
class LayerProbeSettings:
    """What to probe, on which images, and where the rows and figures go (the options of ``layers``)."""

    checkpoint: CheckpointSettings
    out: str  # scores CSV
    spair: Optional[str] = None  # SPair-71k layout root: all three metrics
    images: Optional[str] = None  # any image folder: reconstruction and attention only
    variant: Optional[str] = None  # row name; default: the checkpoint's directory name
    force: bool = False
    progress: bool = True
    split: str = "test"
    limit: Optional[int] = None
    layers: str = "all"  # 'all', '0,8,16,-1', '0-12' (0 = projector output)
    method: str = "argmax"
    alpha: float = 0.1
    batch_size: int = 8
    pad: str = "zero"
    prompt: Tuple[str, ...] = ()  # user prompts; none and no file: the neutral set
    prompts_file: Optional[str] = None
    task: Optional[str] = None  # an lmms-eval task whose questions are the prompts
    task_limit: int = 200
    bank: str = "model"  # where one category's features wait for matching: 'model' or 'cpu'
    prompt_format: str = "auto"
    system_prompt: Optional[str] = None
    correspondence: bool = True
    reconstruction: bool = True
    attention: bool = True
    recon_tokens: int = 64
    recon_ridge: float = 1e-3
    seed: int = 0
    plot: Optional[str] = None  # folder of the figure layers_<variant>.{png,svg}
    overwrite: bool = False  # replace existing figures


@dataclass
class LayerProbeRun:
    """What a ``layers`` run measured (or found stored), the rows it recorded and the figures it wrote."""

    report: LayerReport
    variant: str
    vision: str
    out: str
    rows: List[Dict[str, Any]]  # as ``record_score`` returned them
    figures: List[Path] = field(default_factory=list)

    @property
    def skipped(self) -> List[str]:
        """Scores already stored for this config (kept, not recomputed)."""
        return [r["score"] for r in self.rows if r.get("skipped")]

    def to_json(self) -> str:
        """The full report with provenance (``--json``)."""
        from lmms_ac.results.output import json_document

        doc = {
            "variant": self.variant,
            "vision": self.vision,
            **self.report.to_dict(),
            "scores_file": self.out,
            "figures": [str(f) for f in self.figures],
            "skipped": self.skipped,
        }
        return json_document(json.loads(json.dumps(doc, default=str)), self.report.config)

    def summary(self) -> str:
        """The per-layer table, what happened to the rows, and the figures."""
        lines = [format_layer_table(self.report, self.variant), ""]
        skipped = self.skipped
        if len(skipped) == len(self.rows):
            lines.append(
                f"all {len(self.rows)} scores were already in {self.out} for this config "
                "(shown above; --force recomputes)"
            )
        else:
            lines.append(
                f"{len(self.rows) - len(skipped)} score rows appended to {self.out}"
                + (f"; {len(skipped)} already there for this config (kept; --force replaces)" if skipped else "")
            )
        lines += [f"figure: {f}" for f in self.figures]
        return "\n".join(lines)


def format_layer_table(report: LayerReport, variant: str) -> str:
    """A per-layer table with the references on top."""
    lines = [
        (
            f"{variant}: {report.n_images} images, {report.n_pairs} pairs, {report.n_layers} LLM blocks, "
            f"{report.forwards} forwards, {report.seconds:.1f}s"
        )
    ]
    if report.c:
        lines.append(f"  encoder C = {report.c_encoder:.2f}%   chance = {report.c_chance:.2f}%")
    if report.attn_img:
        lines.append(f"  uniform-attention image share = {report.attn_uniform:.4f}")
    head = ["layer"] + [
        h for h, d in (("C@L", report.c), ("recon@L", report.recon), ("attn_img@L", report.attn_img)) if d
    ]
    lines.append("  " + "\t".join(head))
    for layer in report.layers:
        cells = [str(layer)]
        if report.c:
            cells.append(f"{report.c[layer]:.2f}")
        if report.recon:
            cells.append(f"{report.recon[layer]:.4f}")
        if report.attn_img:
            cells.append(f"{report.attn_img[layer]:.4f}" if layer in report.attn_img else "-")
        lines.append("  " + "\t".join(cells))
    return "\n".join(lines)


def run_layer_probes(settings: LayerProbeSettings) -> LayerProbeRun:
    """Check the inputs, answer from the store when every score is there, else load the model, run the
    probes, record the rows and draw the figure."""
    s = settings
    if s.alpha <= 0:
        raise ValueError(f"--alpha must be > 0, got {s.alpha}")
    if s.limit is not None and s.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {s.limit}")
    if s.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {s.batch_size}")
    if not (s.correspondence or s.reconstruction or s.attention):
        raise ValueError("--no-c, --no-recon and --no-attention together leave nothing to compute")
    split = normalize_split(s.split)
    if s.task_limit < 1:
        raise ValueError(f"--task-limit must be >= 1, got {s.task_limit}")
    prompts = read_prompts(s.prompt, s.prompts_file) if not s.task else []
    if s.task:
        if s.prompt or s.prompts_file:
            raise ValueError("--task gives the prompts; do not combine it with --prompt/--prompts-file")
        prompts = task_prompts(s.task, s.task_limit)
    ckpt = s.checkpoint
    variant = s.variant or default_variant(ckpt.model)
    images = None
    if s.images:
        images = list_images(s.images, s.limit)
        if not (s.reconstruction or s.attention):
            raise ValueError("--images gives no C score; with --no-recon and --no-attention nothing is left to compute")
        data = {"dataset": "images", "data_fingerprint": config_hash([str(p) for p in images]), "split": ""}
    else:
        data = {"dataset": "spair", "data_fingerprint": dataset_fingerprint(s.spair, split, s.limit), "split": split}
    config = {
        "command": "layers",
        "model": ckpt.model,
        "model_base": ckpt.model_base,
        "vision_tower": ckpt.vision_tower,
        **data,
        "limit": s.limit,
        "method": s.method,
        "alpha": s.alpha,
        "pad": s.pad,
        "task": s.task,
        "prompts": prompts if len(prompts) <= 8 else {"n": len(prompts), "sha": config_hash(prompts)},
        "prompt_format": s.prompt_format,
        "system_prompt": s.system_prompt,
        "dtype": ckpt.dtype,
        "recon_tokens": s.recon_tokens,
        "recon_ridge": s.recon_ridge,
        "seed": s.seed,
    }
    stem = Path(s.plot) / f"layers_{variant.replace('/', '_')}" if s.plot else None
    refuse_existing_figure(stem, s.overwrite)

    label, n_blocks = checkpoint_summary(ckpt.model, ckpt.vision_tower)
    switches = dict(
        correspondence=s.correspondence and images is None,
        reconstruction=s.reconstruction,
        attention=s.attention,
    )
    if label and n_blocks and not s.force:  # everything already recorded: answer from the store, load nothing
        layers = parse_layers(s.layers, n_blocks)
        stored = stored_rows(s.out, variant, label, expected_scores(layers, **switches), config)
        if stored is not None:
            report = LayerReport.from_rows(n_blocks, layers, stored)
            report.config = config
            rows = [dict(r, skipped=True) for r in stored.values()]
            return _finish(s, LayerProbeRun(report, variant, label, s.out, rows), stem)
    vlm = load_model(ckpt)
    layers = parse_layers(s.layers, len(decoder_blocks(vlm.llm)))
    report = run_layers(
        vlm,
        s.spair,
        split,
        layers=layers,
        limit=s.limit,
        images=images,
        method=s.method,
        alpha=s.alpha,
        batch_size=s.batch_size,
        prompts=prompts,
        prompt_format=s.prompt_format,
        system_prompt=s.system_prompt,
        pad=s.pad,
        correspondence=s.correspondence,
        reconstruction=switches["reconstruction"],
        attention=switches["attention"],
        recon_tokens=s.recon_tokens,
        recon_ridge=s.recon_ridge,
        seed=s.seed,
        progress=s.progress,
        bank_device="cpu" if s.bank == "cpu" else None,
    )
    report.config = config
    vision = label or vision_label(vlm)
    details = {
        "n_layers": report.n_layers,
        "n_images": report.n_images,
        "n_pairs": report.n_pairs,
        "n_keypoints": report.n_keypoints,
        "c_chance": report.c_chance,
        "attn_uniform": report.attn_uniform,
        "recon_split": report.recon_split,
        "attn_images": report.attn_images,
        "forwards": report.forwards,
    }
    rows = record_rows(s.out, variant, vision, report.scores(), config, data["split"], s.method, s.force, details)
    return _finish(s, LayerProbeRun(report, variant, vision, s.out, rows), stem)


def _finish(settings: LayerProbeSettings, run: LayerProbeRun, stem: Optional[Path]) -> LayerProbeRun:
    """Draw the curves when a figure was asked for."""
    if stem is not None:
        from lmms_ac.layers.plots import plot_layer_curves

        run.figures = plot_layer_curves(
            run.report, stem, title=f"{run.variant}: visual tokens inside the MLLM", overwrite=settings.overwrite
        )
    return run
