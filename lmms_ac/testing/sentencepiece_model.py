"""A tiny SentencePiece ``tokenizer.model`` trained offline with LLaMA's trainer settings.

LLaMA (and so Vicuna and LLaVA-1.5) ship a SentencePiece BPE model with byte fallback, digits
split, a dummy prefix ("▁" before the text), whitespace kept as is (no collapsing, identity
normalisation) and unk/bos/eos = 0/1/2. ``train_llama_sentencepiece`` trains one with exactly those
settings on a small corpus in well under a second, so tests and fixtures hold a real
``tokenizer.model`` without a download.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Iterable, Optional

CORPUS = [
    "A chat between a curious user and an artificial intelligence assistant.",
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    "USER: What is in the image? ASSISTANT: a photo of a cat on a mat",
    "Is there a dog in this image? Please answer yes or no. Yes No yes no",
    "Answer with the option's letter from the given choices directly. A. B. C. D.",
    "What color is the car? red green blue yellow black white",
    "How many people are there in the picture? 0 1 2 3 4 5 6 7 8 9 10 2024",
    "Answer the question using a single word or phrase.",
    "a dog in the park, the red car parked near a house with a green door",
    "Café, naïve, über, ça va? 東京 こんにちは",
]

# LLaMA's trainer_spec / normalizer_spec, as read from its tokenizer.model (vocabulary size aside)
LLAMA_SETTINGS = dict(
    model_type="bpe",
    byte_fallback=True,
    split_digits=True,
    add_dummy_prefix=True,
    remove_extra_whitespaces=False,
    normalization_rule_name="identity",
    allow_whitespace_only_pieces=True,
    split_by_unicode_script=True,
    split_by_whitespace=True,
    character_coverage=0.99995,
    max_sentencepiece_length=16,
    unk_id=0,
    bos_id=1,
    eos_id=2,
    pad_id=-1,
)


def train_llama_sentencepiece(
    path: Optional[str] = None, vocab_size: int = 400, corpus: Optional[Iterable[str]] = None
) -> bytes:
    """Train a LLaMA-style SentencePiece model; write it to ``path`` (if given) and return its bytes.

    ``vocab_size`` must leave room for the 256 byte pieces, the 3 specials and the corpus' characters."""
    import sentencepiece as spm

    sentences = list(CORPUS) + list(corpus or [])
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences * 4),
        model_writer=out,
        vocab_size=vocab_size,
        num_threads=1,
        minloglevel=2,
        **LLAMA_SETTINGS,
    )
    data = out.getvalue()
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(data)
    return data
