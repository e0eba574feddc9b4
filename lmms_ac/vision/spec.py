"""Spec strings that name a vision representation.

Grammar: ``family:target[?key=value&key=value]``, e.g.

* ``clip:openai/clip-vit-large-patch14-336``
* ``siglip:google/siglip-base-patch16-224?layer=-1``
* ``concat:clip:openai/clip-vit-large-patch14+dinov2:facebook/dinov2-large`` (parts joined by ``+``)

``target`` is a hub id or a local directory. A bare hub id (no ``family:``) is accepted where the
family can be inferred from the name, as the original LLaVA ``mm_vision_tower`` field requires.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Collection, Dict, Mapping, Optional, Tuple
from urllib.parse import parse_qsl


@dataclass(frozen=True)
class RepresentationSpec:
    family: str
    target: str
    options: Tuple[Tuple[str, str], ...] = field(default_factory=tuple)

    @property
    def opts(self) -> Dict[str, str]:
        return dict(self.options)

    def __str__(self) -> str:
        query = "&".join(f"{k}={v}" for k, v in self.options)
        return f"{self.family}:{self.target}" + (f"?{query}" if query else "")


# ordered: the first matching substring wins (siglip2 before siglip, etc.)
_FAMILY_HINTS = (
    ("siglip2", "siglip2"),
    ("siglip", "siglip"),
    ("dinov2", "dinov2"),
    ("open_clip", "openclip"),
    ("laion/", "openclip"),
    ("openclip", "openclip"),
    ("stable-diffusion", "diffusion"),
    ("sd-image-variations", "diffusion"),
    ("dit-", "diffusion"),
    ("clip", "clip"),
)


def infer_family(target: str) -> Optional[str]:
    low = target.lower()
    for hint, family in _FAMILY_HINTS:
        if hint in low:
            return family
    return None


def parse_spec(text: str, known_families: Optional[set] = None) -> RepresentationSpec:
    """Parse a spec string; raises ``ValueError``/``UnknownEntryError`` naming the problem and the fix."""
    import os

    from lmms_ac.registry import UnknownEntryError

    text = text.strip()
    known = set(known_families or ())
    if not text:
        raise ValueError(
            "empty vision representation spec; expected 'family:hub_id_or_path', e.g. "
            "'clip:openai/clip-vit-large-patch14-336'"
        )
    family, sep, rest = text.partition(":")
    if sep and known_families is not None and family not in known:
        if "/" in family or os.path.exists(os.path.expanduser(text)):
            sep = ""  # a path that happens to contain ':'
        else:
            raise UnknownEntryError("vision representation family", family, sorted(known))
    if not sep:
        inferred = infer_family(text)
        if inferred is None:
            raise ValueError(
                f"cannot tell the family of vision representation {text!r}; write it as 'family:{text}' "
                f"with family one of {', '.join(sorted(known))}"
            )
        family, rest = inferred, text
    if family == "concat":
        return RepresentationSpec("concat", rest, ())  # options belong to the parts
    target, _, query = rest.partition("?")
    if not target:
        raise ValueError(f"vision representation spec {text!r} names no model after '{family}:'")
    return RepresentationSpec(family, target, tuple(parse_qsl(query, keep_blank_values=True)))


class SpecOptionError(ValueError):
    """An option a family does not take; the message names close matches and the family's options."""


def check_options(
    spec: RepresentationSpec, allowed: Collection[str], elsewhere: Optional[Mapping[str, Collection[str]]] = None
) -> None:
    """Raise ``SpecOptionError`` for an option of ``spec`` its family does not take ("did you mean").

    ``elsewhere`` maps families to their options, so that an option of another family
    (``clip:...?size=336``, or misspelt: ``?sise=``) is named as such."""
    allowed = sorted(set(allowed))
    others = {f: set(opts) for f, opts in (elsewhere or {}).items() if f != spec.family}
    seen = set()
    for key, _ in spec.options:
        if key in seen:
            raise SpecOptionError(f"{spec}: option {key!r} is given twice; give it once")
        seen.add(key)
        if key in allowed:
            continue
        takes = (
            f"the {spec.family} family takes {', '.join(allowed)}"
            if allowed
            else f"the {spec.family} family takes no options"
        )
        close = difflib.get_close_matches(key, allowed, n=3, cutoff=0.6)
        if close:
            raise SpecOptionError(
                f"{spec}: unknown option {key!r}; did you mean {' or '.join(repr(c) for c in close)}? ({takes})"
            )
        owners = sorted(f for f, opts in others.items() if key in opts)
        if owners:
            raise SpecOptionError(
                f"{spec}: option {key!r} belongs to the {', '.join(owners)} famil{'y' if len(owners) == 1 else 'ies'}; "
                f"{takes}"
            )
        near = difflib.get_close_matches(key, sorted(set().union(*others.values())) if others else [], n=1, cutoff=0.6)
        if near:
            owners = sorted(f for f, opts in others.items() if near[0] in opts)
            raise SpecOptionError(
                f"{spec}: unknown option {key!r}; did you mean {near[0]!r}? That is an option of "
                f"{', '.join(owners)} only; {takes}"
            )
        raise SpecOptionError(f"{spec}: unknown option {key!r}; {takes}")
