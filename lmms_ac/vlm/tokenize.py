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

SentencePiece checkpoints (``tokenizer.model``: LLaMA, Vicuna, LLaVA-1.5) were tokenized by LLaVA
with the slow, SentencePiece-backed ``LlamaTokenizer``: every chunk starts with SentencePiece's dummy
prefix "▁", even when the chunk itself starts with a space or "▁" (``" text"`` -> ``"▁▁text"``).
transformers 5 builds its Llama tokenizer with ``Metaspace(prepend_scheme="first")``, which adds no
"▁" to a text that already starts with one, so ``<image> text`` would lose a token.
``match_sentencepiece`` gives the tokenizer transformers 4's layout (normalizer ``Prepend("▁")`` +
``Replace(" ", "▁")``, no pre-tokenizer, as the model's own normalizer spec says) and
``sentencepiece_mismatches`` checks it against the ``sentencepiece`` package itself.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

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
        # (before, after) written around each placeholder: original LLaVA's mm_use_im_start_end checkpoints
        # read "<im_start><image><im_end>"
        self.image_wrap: Tuple[str, str] = ("", "")

    def encode(self, text: str, add_special_tokens: bool = True) -> List[int]:
        if any(self.image_wrap):
            text = text.replace(self.image_token, self.image_wrap[0] + self.image_token + self.image_wrap[1])
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


# strings on which a Metaspace-"first" tokenizer and SentencePiece differ, plus ordinary ones
PROBE_TEXTS = (
    "",
    "a",
    " a",
    "  two  spaces ",
    "\u2581x \u2581",
    "\nQuestion: what?",
    " \n",
    "digits 12345 and 3.14",
    "caf\u00e9 \u6771\u4eac \U0001f600",
    "<image 1> and <image 2>",
)


def sentencepiece_normalizer_spec(model_file: str) -> Any:
    """The ``NormalizerSpec`` of a SentencePiece ``tokenizer.model`` (read with sentencepiece's own protobuf module)."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    with open(model_file, "rb") as fh:
        proto.ParseFromString(fh.read())
    return proto.normalizer_spec


def match_sentencepiece(tokenizer: Any, model_file: str) -> None:
    """Make a fast tokenizer loaded from ``model_file`` split text as SentencePiece does (in place).

    The normalizer follows the model's spec: its precompiled character map, the dummy prefix, spaces
    as "▁" (and, for models trained with ``remove_extra_whitespaces``, stripped and collapsed spaces);
    there is no pre-tokenizer, so a leading space or "▁" is kept and gets its own dummy prefix."""
    from tokenizers import Regex, normalizers

    spec = sentencepiece_normalizer_spec(model_file)
    steps = []
    if spec.precompiled_charsmap:
        steps.append(normalizers.Precompiled(spec.precompiled_charsmap))
    if spec.remove_extra_whitespaces:
        steps += [normalizers.Replace(Regex("^ +| +$"), ""), normalizers.Replace(Regex(" {2,}"), " ")]
    if spec.add_dummy_prefix:
        steps.append(normalizers.Prepend("\u2581"))
    if spec.escape_whitespaces:
        steps.append(normalizers.Replace(" ", "\u2581"))
    backend = tokenizer.backend_tokenizer
    backend.normalizer = normalizers.Sequence(steps)
    backend.pre_tokenizer = None


def sentencepiece_mismatches(
    tokenizer: Any, model_file: str, texts: Sequence[str] = PROBE_TEXTS, limit: Optional[int] = 3
) -> List[Tuple[str, List[int], List[int]]]:
    """(text, tokenizer ids, SentencePiece ids) for each text the two tokenize differently (no special tokens)."""
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_file=model_file)
    found = []
    for text in texts:
        ours = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        ref = list(processor.encode(text))
        if ours != ref:
            found.append((text, ours, ref))
            if limit is not None and len(found) >= limit:
                break
    return found
