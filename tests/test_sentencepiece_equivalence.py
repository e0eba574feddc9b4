"""Original-format prompt ids equal the ``sentencepiece`` package's, chunk by chunk (LLaVA's slow tokenizer).

The SentencePiece model is trained here, offline, with LLaMA's settings (bpe, byte_fallback, split_digits,
add_dummy_prefix, unk/bos/eos = 0/1/2); every string of a seeded fuzz set (leading, trailing and double spaces,
"▁", newlines, tabs, digits, non-ASCII, characters only byte fallback can spell, ``<image 1>`` placeholders)
is tokenized both ways."""

from __future__ import annotations

import random
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmms_ac.testing.released import write_sentencepiece_tokenizer
from lmms_ac.vlm.loaders import load_original_tokenizer
from lmms_ac.doctor import sentencepiece_problem
from lmms_ac.vlm.tokenize import PromptTokenizer, sentencepiece_mismatches

PIECES = [
    "a", "the", "photo", "of", "cat", "USER:", "ASSISTANT:", "What", "is", "in", "image?", "Yes", "no", ".", ",",
    "'s", " ", "  ", "   ", "\u2581", "\u2581\u2581", "\n", "\n\n", "\t", " \n", "0", "7", "42", "2024", "3.14",
    "12345678", "é", "Café", "über", "東京", "こんにちは", "😀", "Ω", "ß", "ǅ", "\u00a0", "<image 1>", "<image 2>",
    "<img>", "(A)", "A.", "B)", "-", "—", "…", "\"", "#", "$5",
]  # fmt: skip
EDGES = ["", " ", "  ", "\u2581", " \u2581", "\n", " \n", "\n ", "a ", " a", "  a  b  ", "\u2581a", "1 2", "😀 😀"]


def fuzz_strings(n: int = 1200, seed: int = 0) -> list:
    rng = random.Random(seed)
    out = list(EDGES)
    while len(out) < n:
        parts = rng.choices(PIECES, k=rng.randint(1, 9))
        joiner = rng.choice(["", " ", ""])
        out.append(joiner.join(parts))
    return out


@pytest.fixture(scope="session")
def sp_tokenizer_dir(tmp_path_factory) -> str:
    """Trained once per session (well under a second)."""
    directory = tmp_path_factory.mktemp("sp-llama")
    write_sentencepiece_tokenizer(directory)
    return str(directory)


@pytest.fixture(scope="session")
def sp(sp_tokenizer_dir):
    import sentencepiece

    return sentencepiece.SentencePieceProcessor(model_file=f"{sp_tokenizer_dir}/tokenizer.model")


@pytest.fixture(scope="session")
def prompt_tokenizer(sp_tokenizer_dir) -> PromptTokenizer:
    tokenizer = load_original_tokenizer(sp_tokenizer_dir)
    tokenizer.add_tokens(["<image>"], special_tokens=True)
    return PromptTokenizer(tokenizer, tokenizer.convert_tokens_to_ids("<image>"), "chunked")


def test_the_model_is_trained_with_llama_settings(sp_tokenizer_dir, sp):
    from lmms_ac.vlm.tokenize import sentencepiece_normalizer_spec

    assert [sp.id_to_piece(i) for i in range(3)] == ["<unk>", "<s>", "</s>"]
    assert sp.piece_to_id("<0xE4>") > 2  # byte fallback pieces
    spec = sentencepiece_normalizer_spec(f"{sp_tokenizer_dir}/tokenizer.model")
    assert spec.add_dummy_prefix and not spec.remove_extra_whitespaces and spec.name == "identity"
    assert [sp.id_to_piece(i) for i in sp.encode("2024")][1:] == ["2", "0", "2", "4"]  # split_digits


def test_every_fuzz_string_tokenizes_as_sentencepiece(prompt_tokenizer, sp):
    strings = fuzz_strings()
    assert len(strings) >= 1000
    tok = prompt_tokenizer.tokenizer
    bad = [(s, tok(s, add_special_tokens=False)["input_ids"], sp.encode(s)) for s in strings]
    bad = [b for b in bad if list(b[1]) != b[2]]
    assert not bad, f"{len(bad)} of {len(strings)} differ, e.g. {bad[:3]}"
    assert all(tok(s)["input_ids"] == [1, *sp.encode(s)] for s in strings[:200])  # BOS added, nothing else


def test_chunks_around_images_are_sentencepiece_chunks(prompt_tokenizer, sp):
    """``<image> text`` (an image, then a chunk that starts with a space) keeps SentencePiece's "▁"."""
    strings = fuzz_strings(seed=1)
    image_id = prompt_tokenizer.image_token_id
    rng = random.Random(2)
    for _ in range(1000):
        chunks = rng.sample(strings, rng.randint(2, 4))
        ids = prompt_tokenizer.encode("<image>".join(chunks))
        expected = [1, *sp.encode(chunks[0])]
        for chunk in chunks[1:]:
            expected += [image_id, *sp.encode(chunk)]
        assert ids == expected, chunks


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    st.text(
        alphabet=st.sampled_from(list(" \n\t\u2581ab.,?0123456789éü東😀")) | st.characters(exclude_categories=("Cs",)),
        max_size=30,
    )
)
def test_hypothesis_text_tokenizes_as_sentencepiece(prompt_tokenizer, sp, text):
    assert prompt_tokenizer.tokenizer(text, add_special_tokens=False)["input_ids"] == sp.encode(text)


def test_transformers_default_layout_differs_so_the_check_can_fail(sp_tokenizer_dir):
    """Without ``match_sentencepiece`` transformers 5 drops the "▁" of a text that starts with a space."""
    from transformers import AutoTokenizer

    raw = AutoTokenizer.from_pretrained(sp_tokenizer_dir)
    bad = sentencepiece_mismatches(raw, f"{sp_tokenizer_dir}/tokenizer.model", fuzz_strings(), limit=None)
    assert bad and all(text[:1] in (" ", "\u2581") for text, _, _ in bad)


def test_sentencepiece_problem_names_the_fix(monkeypatch):
    assert sentencepiece_problem() is None
    monkeypatch.setitem(sys.modules, "sentencepiece", None)  # import fails, as with a VersionError
    problem = sentencepiece_problem()
    assert "does not import" in problem and "pip install 'sentencepiece>=0.2.1,<0.2.3'" in problem


@pytest.mark.parametrize(
    "prompt",
    [
        "USER: <image> What is this? ASSISTANT:",  # text after <image> starts with a space
        "USER: Describe it.\n<image> ASSISTANT:",  # an image at the end of the user turn
        "USER: <image> <image>\nCompare them. ASSISTANT:",  # two images separated by a space
        "USER: <image>\nIn <image 1>, what is left of <image 2>? ASSISTANT:",  # MMMU's placeholders stay text
    ],
)
def test_the_reported_prompts_keep_sentencepiece_s_prefix(prompt_tokenizer, sp, prompt):
    chunks = prompt.split("<image>")
    expected = [1, *sp.encode(chunks[0])]
    for chunk in chunks[1:]:
        expected += [prompt_tokenizer.image_token_id, *sp.encode(chunk)]
    assert prompt_tokenizer.encode(prompt) == expected
