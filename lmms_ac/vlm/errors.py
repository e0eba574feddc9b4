"""The error every checkpoint loader raises for a checkpoint it cannot run (one class, shared by the loaders)."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete or of an unknown format; the message says how to fix it."""
