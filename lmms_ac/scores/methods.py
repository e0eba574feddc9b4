"""The methods of the A and C scores, one registry each (torch-free: the commands offer them as choices).

A correspondence method turns a keypoint's similarities over the target patch grid into a predicted
cell; its entry names the function of ``lmms_ac.scores.correspondence`` that does it. An A score
method's entry says what it measures (docs/METHODS.md#a-scores)."""

from __future__ import annotations

from lmms_ac.registry import Registry

CORRESPONDENCE_METHODS: Registry[str] = Registry("correspondence method")
CORRESPONDENCE_METHODS.register("argmax", "_argmax")
CORRESPONDENCE_METHODS.register("window_softargmax", "_window_softargmax")

ALIGNMENT_METHODS: Registry[str] = Registry("A score method")
ALIGNMENT_METHODS.register(
    "caption_ll", "caption log-likelihood through the frozen stage-1 model (the paper's A; the default)"
)
ALIGNMENT_METHODS.register("embed", "embedding similarity to a reference representation's (A_embed)")
