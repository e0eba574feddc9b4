"""From an lmms-eval request (task, doc_id) to the VLM's hooks: which perturbation applies, seeded
how, at which hook point. The catalogue (``lmms_ac.robustness``) says what a perturbation does;
this module only places it.

PatchDrop's severity r is a fraction of cells (Random) or of attention mass (Salient/Non-Salient),
so the fraction of cells actually removed varies per image: ``DropTally`` records it per task
(``HookFactory.drops``), logged as it grows (after 1, 10, 100... images). On tiled input
(LLaVA-NeXT/OneVision) PatchDrop's image hook is marked ``per_view``: the tiled model calls it once per
image on the stack of its views (``lmms_ac.vlm.tiled``), and an image's entry is the fraction of the
cells of all its views."""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch

from lmms_ac.vlm.hooks import SampleHooks


def task_perturbation(task: str):
    """The perturbation a generated robustness task carries, or None for a clean task."""
    from lmms_ac.robustness.names import perturbation_for_task

    return perturbation_for_task(task)


class DropTally:
    """Mean fraction of grid cells removed by PatchDrop, per task."""

    def __init__(self) -> None:
        self._sum: Dict[str, float] = {}
        self._n: Dict[str, int] = {}
        self._label: Dict[str, str] = {}

    def add(self, task: str, label: str, fraction: float) -> None:
        self._sum[task] = self._sum.get(task, 0.0) + float(fraction)
        self._n[task] = n = self._n.get(task, 0) + 1
        self._label[task] = label
        if n == 1 or (n >= 10 and str(n).strip("0") == "1"):  # 1, 10, 100, ...
            self.log(task)

    def totals(self) -> Dict[str, Tuple[float, int]]:
        """``{task: (sum of the per-image fractions, images)}``, to be summed over data-parallel ranks."""
        return {t: (self._sum[t], self._n[t]) for t in self._n}

    def summary(self) -> Dict[str, Dict[str, float]]:
        """``{task: {"cells_dropped": mean fraction, "images": n}}``."""
        return {t: {"cells_dropped": self._sum[t] / self._n[t], "images": self._n[t]} for t in self._n}

    def log(self, task: Optional[str] = None) -> None:
        from loguru import logger

        for t, v in self.summary().items():
            if task is None or t == task:
                logger.info(
                    f"{t}: {self._label[t]} removed {100 * v['cells_dropped']:.1f}% of the cells on average "
                    f"over {v['images']} image(s)"
                )


class HookFactory:
    """Builds per-request ``SampleHooks`` for one VLM.

    ``perturbation`` (a catalogue string form such as ``tokperm``) applies to every request whose
    task carries none; ``seed`` overrides its seed.
    """

    def __init__(self, vlm, perturbation: Optional[str] = None, seed: int = 0):
        from lmms_ac.robustness import parse_perturbation

        self.vlm = vlm
        self.drops = DropTally()
        self._checked: set = set()
        self.default = parse_perturbation(perturbation).with_seed(seed) if perturbation else None
        if self.default is not None:
            self._check(self.default)

    def _check(self, p) -> None:
        if p in self._checked:
            return
        if p.stage == "hidden":
            from lmms_ac.vlm.model import decoder_layers

            n = len(decoder_layers(self.vlm.llm))
            if p.layer > n:
                raise ValueError(
                    f"perturbation {p} targets layer {p.layer} but the LLM has {n} decoder layers (valid 0..{n})"
                )
        tiled = getattr(self.vlm, "image_aspect_ratio", None) == "anyres"
        if tiled and p.stage in ("image", "tokens") and not p.on_tiles:
            from lmms_ac.vlm.tiled import TILED_STAGE_REFUSAL

            raise ValueError(f"perturbation {p} ({p.stage} stage) {TILED_STAGE_REFUSAL}")
        if p.stage == "dataset":
            raise ValueError(
                f"perturbation {p} substitutes images in the dataset; run its robustness task instead of passing it as "
                "a model argument"
            )
        self._checked.add(p)

    def for_request(self, task: str, doc_id: int) -> Optional[SampleHooks]:
        p = task_perturbation(task) or self.default
        if p is None or p.stage == "dataset":
            return None
        self._check(p)
        grid, patch = tuple(self.vlm.vision.grid), int(self.vlm.vision.patch_size)
        if p.stage == "image" and hasattr(p, "drop_mask"):  # PatchDrop: apply and record the cells removed
            from lmms_ac.robustness.image_ops import drop_cells

            def patch_drop(x: torch.Tensor, i: int) -> torch.Tensor:
                """One view ``[3, S, S]`` (LLaVA-1.5) or an image's views ``[V, 3, S, S]`` (tiled input: base
                view, then tile k at view k, each with its own cells); one tally entry per image, the
                fraction of all its views' cells dropped (every view has the same grid)."""
                views = x if x.ndim == 4 else x.unsqueeze(0)
                masks = [
                    p.drop_mask(v, p.context(task, doc_id, grid, patch, image_index=i, view=k))
                    for k, v in enumerate(views)
                ]
                self.drops.add(task, p.to_string(), float(torch.stack(masks).float().mean()))
                out = torch.stack([drop_cells(v, m) for v, m in zip(views, masks)])
                return out if x.ndim == 4 else out[0]

            patch_drop.per_view = True  # type: ignore[attr-defined]  # tiled input: call it on the views
            return SampleHooks(image=patch_drop)
        if p.stage == "image":
            return SampleHooks(image=lambda x, i: p(x, p.context(task, doc_id, grid, patch, image_index=i)))
        if p.stage == "tokens":

            def tokens(x: torch.Tensor, i: int, views: Optional[torch.Tensor] = None) -> torch.Tensor:
                return p(x, p.context(task, doc_id, grid, patch, image_index=i, views=views))

            return SampleHooks(tokens=tokens)
        if p.stage == "hidden":

            def hidden(h: torch.Tensor, visual_mask: torch.Tensor) -> torch.Tensor:
                return p(h, p.context(task, doc_id, grid, patch, visual_mask=visual_mask))

            return SampleHooks(hidden=hidden, hidden_layer=int(p.layer))
        raise ValueError(f"perturbation {p} has unknown stage {p.stage!r}")
