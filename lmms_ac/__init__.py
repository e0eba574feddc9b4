"""lmms-ac: which vision representation makes a multimodal LLM good, and how it perceives images.

Importing this package is cheap: torch, transformers and lmms-eval are imported by the modules
that need them.
"""

__version__ = "0.1.0"
