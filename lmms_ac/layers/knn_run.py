"""The run behind ``lmms-ac layers-knn``: mutual k-NN alignment (``knn``) of the checkpoint's encoder
image features and caption features at every LLM layer, for the MLLM's LLM (``knn@L<l>``) and, when
given, the base LLM it started from (``knn_base@L<l>``), recorded in the scores CSV with a figure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from lmms_ac.io import config_hash
from lmms_ac.layers.checkpoint import CheckpointSettings, default_variant, load_model, vision_label
from lmms_ac.layers.plots import refuse_existing_figure
from lmms_ac.scores.store import record_rows


@dataclass(frozen=True)
class KnnSettings:
    """Which pairs, which layers, and where the rows and figures go (the options of ``layers-knn``)."""

    checkpoint: CheckpointSettings
    data: str  # caption data layout: 'docci' or 'llava558k'
    captions: str  # DOCCI root or docci_descriptions.jsonlines; or the LLaVA-558K json
    out: str  # scores CSV
    images: Optional[str] = None  # image folder (DOCCI default: <root>/images)
    data_split: Optional[str] = None  # DOCCI split to keep (default all)
    base_llm: Optional[str] = None  # base LLM (hub id or directory)
    variant: Optional[str] = None  # row name; default: the checkpoint's directory name
    force: bool = False
    progress: bool = True
    n: int = 1000  # pairs, drawn with seed
    k: int = 10  # neighbours
    layers: str = "all"
    seed: int = 0
    batch_size: int = 16
    max_tokens: int = 512  # captions truncated to this many tokens
    plot: Optional[str] = None  # folder of the figure knn_<variant>.{png,svg}
    overwrite: bool = False  # replace existing figures


@dataclass
class KnnRun:
    """The alignment curves (``{"mllm": {layer: value}, "base": ...}``), the rows recorded and the figures."""

    variant: str
    vision: str
    k: int
    n: int
    chance: float  # k / (n - 1): independent spaces
    layers: List[int]
    curves: Dict[str, Dict[int, float]]
    config: Dict[str, Any]
    out: str
    rows: List[Dict[str, Any]]  # as ``record_score`` returned them
    figures: List[Path] = field(default_factory=list)

    def to_json(self) -> str:
        """The curves with provenance (``--json``)."""
        from lmms_ac.results.output import json_document

        doc = {
            "variant": self.variant,
            "vision": self.vision,
            "k": self.k,
            "n": self.n,
            "chance": self.chance,
            "mllm": {str(x): v for x, v in self.curves["mllm"].items()},
            "base": {str(x): v for x, v in self.curves.get("base", {}).items()} or None,
            "scores_file": self.out,
            "figures": [str(f) for f in self.figures],
        }
        return json_document(json.loads(json.dumps(doc, default=str)), self.config)

    def summary(self) -> str:
        """One line per layer (MLLM's LLM, base LLM), what happened to the rows, and the figures."""
        base = self.curves.get("base")
        lines = [
            f"{self.variant}: mutual {self.k}-NN alignment over {self.n} pairs (independent spaces: {self.chance:.4f})",
            "  layer\tMLLM's LLM" + ("\tbase LLM" if base is not None else ""),
        ]
        for x in self.layers:
            base_cell = f"\t{base[x]:.4f}" if base is not None and x in base else ("\t-" if base is not None else "")
            lines.append(f"  {x}\t{self.curves['mllm'][x]:.4f}{base_cell}")
        skipped = sum(1 for r in self.rows if r.get("skipped"))
        lines.append(
            f"{len(self.rows) - skipped} score rows appended to {self.out}"
            + (f"; {skipped} already there" if skipped else "")
        )
        lines += [f"figure: {f}" for f in self.figures]
        return "\n".join(lines)


def run_knn(settings: KnnSettings) -> KnnRun:
    """Sample the pairs, load the model (and the base LLM), compute both curves, record and draw them."""
    s = settings
    if s.n < 2 or not 1 <= s.k < s.n:
        raise ValueError(f"need --n >= 2 and 1 <= --k < --n, got --n {s.n} --k {s.k}")
    from lmms_ac.layers.knn import read_caption_pairs
    from lmms_ac.scores.alignment import sample_pairs

    pairs = sample_pairs(read_caption_pairs(s.data, s.captions, s.images, s.data_split), s.n, s.seed)
    if len(pairs) <= s.k:
        raise ValueError(f"only {len(pairs)} pairs available; --k {s.k} needs more than k pairs")
    ckpt = s.checkpoint
    variant = s.variant or default_variant(ckpt.model)
    stem = Path(s.plot) / f"knn_{variant.replace('/', '_')}" if s.plot else None
    refuse_existing_figure(stem, s.overwrite)
    config = {
        "command": "layers-knn",
        "model": ckpt.model,
        "model_base": ckpt.model_base,
        "vision_tower": ckpt.vision_tower,
        "data": s.data,
        "pairs": config_hash(sorted(p.id for p in pairs)),
        "n": len(pairs),
        "k": s.k,
        "seed": s.seed,
        "max_tokens": s.max_tokens,
        "dtype": ckpt.dtype,
    }
    vlm = load_model(ckpt)
    from lmms_ac.layers.extraction import parse_layers
    from lmms_ac.layers.knn import caption_features, image_features, knn_by_layer, load_base_llm

    n_layers = int(vlm.llm.config.num_hidden_layers)
    layers = parse_layers(s.layers, n_layers)
    u = image_features(vlm.vision, [p.image_path for p in pairs], s.batch_size, s.progress)
    captions = [p.caption for p in pairs]
    mllm = caption_features(
        vlm.llm, vlm.tokenizer, captions, layers, s.batch_size, s.max_tokens, s.progress, "MLLM caption features"
    )
    curves = {"mllm": knn_by_layer(u, mllm, s.k)}
    if s.base_llm:
        base, tok = load_base_llm(s.base_llm, vlm.device, ckpt.dtype)
        if int(base.config.num_hidden_layers) != n_layers:
            from loguru import logger

            logger.warning(
                f"base LLM has {base.config.num_hidden_layers} layers, the MLLM's LLM "
                f"{vlm.llm.config.num_hidden_layers}; layers are compared by index"
            )
        base_layers = [x for x in layers if x <= int(base.config.num_hidden_layers)]
        feats = caption_features(
            base, tok, captions, base_layers, s.batch_size, s.max_tokens, s.progress, "base caption features"
        )
        curves["base"] = knn_by_layer(u, feats, s.k)
    chance = s.k / (len(pairs) - 1)
    rows = [(f"knn@L{x}", v, len(pairs)) for x, v in curves["mllm"].items()]
    rows += [(f"knn_base@L{x}", v, len(pairs)) for x, v in curves.get("base", {}).items()]
    vision = vision_label(vlm)
    details = {"k": s.k, "chance": chance, "base_llm": s.base_llm}
    recorded = record_rows(
        s.out, variant, vision, rows, {**config, "base_llm": s.base_llm}, s.data, "mutual_knn", s.force, details
    )
    run = KnnRun(variant, vision, s.k, len(pairs), chance, layers, curves, config, s.out, recorded)
    if stem is not None:
        from lmms_ac.layers.plots import plot_knn_curves

        labels = {"mllm": f"{variant} (MLLM's LLM)", "base": f"{s.base_llm} (base LLM)"}
        run.figures = plot_knn_curves(
            {labels[k]: v for k, v in curves.items()},
            stem,
            s.k,
            chance=chance,
            title=f"vision encoder vs caption features, {len(pairs)} pairs",
            overwrite=s.overwrite,
        )
    return run
