"""Seeded random spec strings: parsing and option checking either succeed or raise a clear error the
CLI reports (ValueError / KeyError subclasses with the spec in the message), never anything else."""

from __future__ import annotations

import random

from lmms_ac.registry import UnknownEntryError
from lmms_ac.vision import FAMILIES, family_options
from lmms_ac.vision.spec import RepresentationSpec, check_options, parse_spec

PIECES = [
    "clip",
    "siglip2",
    "dinov2",
    "concat",
    "diffusion",
    "openclip",
    "clipp",
    ":",
    "?",
    "&",
    "=",
    "+",
    "/",
    ".",
    "~",
    "layer",
    "size",
    "sise",
    "backend",
    "pil",
    "-2",
    "336",
    "openai/clip-vit-large-patch14",
    "%zz",
    " ",
    "",
    "é",
    "??",
    "==",
]


def test_random_specs_end_in_a_spec_or_a_clear_error():
    rng = random.Random(0)
    known = set(FAMILIES.names())
    options = family_options()
    outcomes = {"ok": 0, "error": 0}
    for _ in range(3000):
        text = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 9)))
        try:
            spec = parse_spec(text, known)
            assert isinstance(spec, RepresentationSpec) and spec.family in known
            check_options(spec, options.get(spec.family, ()), options)
            outcomes["ok"] += 1
        except UnknownEntryError as err:
            assert "did you mean" in str(err) or "Known:" in str(err)
            outcomes["error"] += 1
        except ValueError as err:
            assert str(err).strip(), f"empty message for {text!r}"
            outcomes["error"] += 1
    assert outcomes["ok"] > 50 and outcomes["error"] > 50  # both paths were exercised
