"""The perturbation base class and the grammar of compact string forms.

A perturbation is a frozen dataclass: its fields are its parameters plus ``seed``; class attributes
give its registry ``name``, its ``stage`` (where the model applies it), whether it is ``stochastic``,
and its string ``form``, a template such as ``"tokgroup_m{m}_g{group}"`` whose ``{field}`` slots are
written and read by a :class:`Codec`. One template gives both directions, so every string form
round-trips by construction. A non-zero seed is appended as ``_s{seed}`` (``tokperm_s3``).

Torch-free: torch is only in the annotations here; the ops a subclass's ``apply`` calls import it.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Dict, Mapping, Optional, Tuple, Union

from .context import PerturbationContext
from .stages import STAGES, Stage  # noqa: F401 - re-exported: the catalogue's stage names

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Codec:
    """How one parameter is written in a string form (``pattern`` is a regex without groups)."""

    pattern: str
    format: Callable[[Any], str]
    parse: Callable[[str], Any]


INT = Codec(r"\d+", lambda v: str(int(v)), int)
PERCENT = Codec(r"\d{1,3}", lambda v: str(int(round(float(v) * 100))), lambda s: int(s) / 100)


def choice(spelling: Mapping[str, str]) -> Codec:
    """A codec for a parameter with fixed values: ``spelling`` maps value -> text (may be empty)."""
    inverse = {text: value for value, text in spelling.items()}
    alternatives = sorted((re.escape(t) for t in inverse), key=len, reverse=True)
    return Codec("|".join(alternatives), lambda v: spelling[v], lambda s: inverse[s])


_SLOT = re.compile(r"\{(\w+)\}")


def param(**kwargs: Any) -> Any:
    """A dataclass field that is NOT a parameter (not in ``params`` nor the string form)."""
    return dataclasses.field(compare=False, repr=False, metadata={"param": False}, **kwargs)


@dataclass(frozen=True, kw_only=True)
class Perturbation:
    """Base class of every catalogue entry; subclasses set the class attributes and ``apply``."""

    name: ClassVar[str] = ""
    stage: ClassVar[Stage] = "image"
    stochastic: ClassVar[bool] = False
    form: ClassVar[str] = ""
    codecs: ClassVar[Mapping[str, Codec]] = {}
    examples: ClassVar[Tuple[Dict[str, Any], ...]] = ({},)
    # defined on tiled input (LLaVA-NeXT/OneVision): token ops on the views (``context.views``), image ops on the
    # whole image before tiling (patch shuffle) or on each view (PatchDrop, ``context.view``); False: refused there
    on_tiles: ClassVar[bool] = False

    seed: int = 0

    # ------------------------------------------------------------------ parameters and names
    @property
    def params(self) -> Dict[str, Any]:
        """The parameters (every field but ``seed`` and non-parameter fields)."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name != "seed" and f.metadata.get("param", True)
        }

    def to_string(self) -> str:
        """The compact string form, e.g. ``pdrop_salient30`` or ``tokgroup_m4_g5_s2``."""
        text = _SLOT.sub(lambda m: self.codecs[m.group(1)].format(getattr(self, m.group(1))), self.form)
        return text if self.seed == 0 else f"{text}_s{int(self.seed)}"

    def __str__(self) -> str:
        return self.to_string()

    def with_seed(self, seed: int) -> "Perturbation":
        return dataclasses.replace(self, seed=int(seed))

    @classmethod
    def pattern(cls) -> "re.Pattern[str]":
        """The regex that reads this class's string forms (named groups: parameters and seed)."""
        parts, last = [], 0
        for m in _SLOT.finditer(cls.form):
            parts.append(re.escape(cls.form[last : m.start()]))
            parts.append(f"(?P<{m.group(1)}>{cls.codecs[m.group(1)].pattern})")
            last = m.end()
        parts.append(re.escape(cls.form[last:]))
        return re.compile("".join(parts) + r"(?:_s(?P<seed>\d+))?")

    @classmethod
    def from_match(cls, match: "re.Match[str]") -> "Perturbation":
        values = {k: cls.codecs[k].parse(v) for k, v in match.groupdict().items() if k != "seed"}
        seed = match.group("seed")
        return cls(**values, seed=int(seed) if seed else 0)

    # ------------------------------------------------------------------ application
    def context(
        self,
        task: str,
        doc_id: int,
        grid: Tuple[int, int],
        patch_size: int,
        image_index: int = 0,
        visual_mask: Optional[torch.Tensor] = None,
        views: Optional[torch.Tensor] = None,
        view: int = 0,
    ) -> PerturbationContext:
        """A context carrying this perturbation's seed (the usual way to build one)."""
        return PerturbationContext(
            task, doc_id, self.seed, tuple(grid), patch_size, image_index, visual_mask, views, int(view)
        )

    def apply(self, x: torch.Tensor, ctx: PerturbationContext) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, ctx: PerturbationContext) -> torch.Tensor:
        return self.apply(x, ctx)


PerturbationLike = Union[Perturbation, str]
