"""Prompt text -> input ids, the way each checkpoint format's own reference code builds them.

* ``chunked`` - original LLaVA (``llava.mm_utils.tokenizer_image_token``, used for training, for
  stage-1 ``mm_projector.bin`` checkpoints and for the repository's evaluation): the prompt is split
  at every ``<image>`` placeholder and each chunk is tokenized on its own with the tokenizer's
  special tokens. When the first chunk starts with BOS, it is kept once and the first token (the
  BOS) of every later chunk is dropped; one placeholder id goes between chunks. With a
  SentencePiece/Llama tokenizer each chunk after an image therefore starts like the start of a text:
  a caption's first word gets its leading "▁", and ``"\\nQuestion"`` becomes ``"▁", "\\n", ...``
  (Vicuna ids 29871, 13).
* ``joint`` - llava-hf (transformers' ``LlavaProcessor``): the whole prompt is tokenized at once with
  ``<image>`` an added special token, so the text after it continues mid-sequence (no "▁").

Each function returns plain id lists holding one ``image_token_id`` per image; the model replaces
each with that image's visual tokens.
"""

from __future__ import annotations

from typing import Any, List, Tuple

TOKENIZATIONS = ("joint", "chunked")
FORMAT_TOKENIZATION = {"llava_hf": "joint", "original": "chunked"}


def check_tokenization(mode: str) -> str:
    if mode not in TOKENIZATIONS:
        raise ValueError(
            f"unknown tokenization {mode!r}; choose 'chunked' (original LLaVA's tokenizer_image_token) "
            f"or 'joint' (llava-hf's processor)"
        )
    return mode


def tokenizer_image_token(
    text: str, tokenizer: Any, image_token_id: int, image_token: str = "<image>", add_special_tokens: bool = True
) -> List[int]:
    """``llava.mm_utils.tokenizer_image_token`` with ``image_token_id`` as the placeholder id."""
    chunks = [tokenizer(chunk, add_special_tokens=add_special_tokens)["input_ids"] for chunk in text.split(image_token)]
    ids: List[int] = []
    offset = 0
    if chunks and chunks[0] and chunks[0][0] == tokenizer.bos_token_id:
        offset = 1
        ids.append(chunks[0][0])
    for i, chunk in enumerate(chunks):
        if i:
            ids.append(image_token_id)
        ids.extend(chunk[offset:])
    return ids


class PromptTokenizer:
    """Builds input ids for one checkpoint: ``encode`` for a prompt, ``encode_pair`` for a scored
    continuation."""

    def __init__(self, tokenizer: Any, image_token_id: int, mode: str, image_token: str = "<image>"):
        self.tokenizer = tokenizer
        self.image_token_id = int(image_token_id)
        self.mode = check_tokenization(mode)
        self.image_token = image_token

    def encode(self, text: str, add_special_tokens: bool = True) -> List[int]:
        if self.mode == "chunked":
            return tokenizer_image_token(
                text, self.tokenizer, self.image_token_id, self.image_token, add_special_tokens
            )
        return list(self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])

    def encode_pair(
        self, context: str, continuation: str, add_special_tokens: bool = True
    ) -> Tuple[List[int], List[int]]:
        """(context ids, continuation ids): the ids of ``context + continuation`` split where the
        context's own ids end, as LLaVA's and lmms-eval's loglikelihood code mark the context. When
        the tokenizer merges across the boundary, the continuation is tokenized alone after the
        context (no special tokens) so the context is never re-tokenized."""
        ctx = self.encode(context, add_special_tokens)
        whole = self.encode(context + continuation, add_special_tokens)
        if whole[: len(ctx)] != ctx:
            cont = list(self.tokenizer(continuation, add_special_tokens=False)["input_ids"])
        else:
            cont = whole[len(ctx) :]
        if not cont:
            raise ValueError(f"continuation {continuation!r} tokenizes to nothing")
        return ctx, cont
