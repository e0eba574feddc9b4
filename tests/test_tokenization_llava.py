"""Input ids as each checkpoint format's reference code builds them, on a SentencePiece-style tokenizer.

Original LLaVA tokenizes prompts with ``llava.mm_utils.tokenizer_image_token`` (chunks split at
``<image>``, each tokenized alone, later chunks' BOS dropped); llava-hf with its processor (one
string). With a Llama-like tokenizer (Metaspace pre-tokenizer, ``prepend_scheme="first"``) the two
differ: chunked gives the caption's first word its "▁" and puts the "▁" piece before the newline
after the image. Both models here run the same random weights, so any id difference shows.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from lmms_ac.testing.datasets import sample_images
from lmms_ac.vlm.prompts import IMAGE_TOKEN, PLAIN_SEPARATOR, build_prompt
from lmms_ac.vlm.tokenize import PromptTokenizer, tokenizer_image_token

CORPUS = [
    "A chat between a curious user and an artificial intelligence assistant.",
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    "USER: What is in the image?\nASSISTANT: a photo of a cat on a mat",
    "a photo of a dog in the park\nIs there a dog? Answer yes or no.",
    "the red car parked near a house with a green door",
]
CAPTIONS = ["a photo of a cat on a mat", "the red car parked near a house", "a dog in the park"]
QUESTIONS = ["What is in the image?", "Is there a dog? Answer yes or no.", "What color is the car?"]


def sentencepiece_style_tokenizer(kind: str = "bpe", bos: bool = True):
    """A Llama-like fast tokenizer: Metaspace pre-tokenizer (``prepend_scheme="first"``, no split on
    spaces), ``<s>`` prepended (unless ``bos=False``), ``<image>`` an added special token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    if kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        trainer = trainers.BpeTrainer(
            vocab_size=220, special_tokens=specials, initial_alphabet=["▁", "\n"], show_progress=False
        )
    else:
        tok = Tokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(
            vocab_size=160,
            special_tokens=specials,
            unk_token="<unk>",
            initial_alphabet=["▁", "\n"],
            show_progress=False,
        )
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.train_from_iterator(CORPUS * 4, trainer)
    if bos:
        bos_id = tok.token_to_id("<s>")
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    fast.add_tokens([IMAGE_TOKEN], special_tokens=True)
    return fast


def official_tokenizer_image_token(prompt, tokenizer, image_token_index):
    """The official function (haotian-liu/LLaVA, llava/mm_utils.py), transcribed as a reference."""
    prompt_chunks = [tokenizer(chunk).input_ids for chunk in prompt.split("<image>")]

    def insert_separator(X, sep):
        return [ele for sublist in zip(X, [sep] * len(X)) for ele in sublist][:-1]

    input_ids = []
    offset = 0
    if len(prompt_chunks) > 0 and len(prompt_chunks[0]) > 0 and prompt_chunks[0][0] == tokenizer.bos_token_id:
        offset = 1
        input_ids.append(prompt_chunks[0][0])
    for x in insert_separator(prompt_chunks, [image_token_index] * (offset + 1)):
        input_ids.extend(x[offset:])
    return input_ids


@pytest.fixture(scope="module", params=["bpe", "unigram"])
def sp_tok(request):
    return sentencepiece_style_tokenizer(request.param)


def test_chunked_equals_the_official_function(sp_tok):
    image_id = sp_tok.convert_tokens_to_ids(IMAGE_TOKEN)
    prompts = [IMAGE_TOKEN + c for c in CAPTIONS] + [IMAGE_TOKEN + c + PLAIN_SEPARATOR for c in CAPTIONS]
    prompts += [build_prompt(q, 1, "vicuna_v1") for q in QUESTIONS] + [
        build_prompt(q, 2, "vicuna_v1") for q in QUESTIONS
    ]
    prompts += [build_prompt(q, 1, "plain") for q in QUESTIONS] + ["no image at all", IMAGE_TOKEN]
    no_bos = sentencepiece_style_tokenizer("bpe", bos=False)  # like Qwen's: nothing to drop (offset 0)
    for p in prompts:
        assert tokenizer_image_token(p, sp_tok, image_id) == official_tokenizer_image_token(p, sp_tok, image_id), p
        nb_id = no_bos.convert_tokens_to_ids(IMAGE_TOKEN)
        assert tokenizer_image_token(p, no_bos, nb_id) == official_tokenizer_image_token(p, no_bos, nb_id), p


def test_chunked_and_joint_differ_for_captions_and_prompts(sp_tok):
    image_id = sp_tok.convert_tokens_to_ids(IMAGE_TOKEN)
    chunked, joint = PromptTokenizer(sp_tok, image_id, "chunked"), PromptTokenizer(sp_tok, image_id, "joint")
    space = sp_tok.convert_tokens_to_ids("▁")
    for caption in CAPTIONS:
        c, j = chunked.encode(IMAGE_TOKEN + caption), joint.encode(IMAGE_TOKEN + caption)
        assert c != j
        # chunked: the caption tokenized as a text of its own ("▁" before its first word), BOS dropped
        assert c == [sp_tok.bos_token_id, image_id] + sp_tok(caption)["input_ids"][1:]
        assert sp_tok.convert_ids_to_tokens(c[2]).startswith("▁")
        assert not sp_tok.convert_ids_to_tokens(j[2]).startswith("▁")
    for q in QUESTIONS:
        prompt = build_prompt(q, 1, "vicuna_v1")
        c, j = chunked.encode(prompt), joint.encode(prompt)
        at_c, at_j = c.index(image_id), j.index(image_id)
        # chunked: the lone "▁" piece (Vicuna's 29871), then the same ids as joint's ("\n..." = 13 ... in Vicuna)
        assert c[at_c + 1] == space and c[at_c + 2 :] == j[at_j + 1 :]
        assert sp_tok.convert_ids_to_tokens(j[at_j + 1]).startswith("\n")
        assert c[:at_c] == j[:at_j]  # the text before the image is the same


def test_encode_pair_splits_where_the_context_ends(sp_tok):
    image_id = sp_tok.convert_tokens_to_ids(IMAGE_TOKEN)
    chunked = PromptTokenizer(sp_tok, image_id, "chunked")
    ctx, cont = chunked.encode_pair(IMAGE_TOKEN, CAPTIONS[0])
    assert ctx == [sp_tok.bos_token_id, image_id]
    assert cont == sp_tok(CAPTIONS[0])["input_ids"][1:]
    ctx2, cont2 = chunked.encode_pair(IMAGE_TOKEN, CAPTIONS[0] + PLAIN_SEPARATOR)
    assert cont2[: len(cont)] == cont and sp_tok.convert_ids_to_tokens(cont2[len(cont) :]) == ["\n"]
    with pytest.raises(ValueError, match="tokenizes to nothing"):
        chunked.encode_pair(IMAGE_TOKEN, "")
    with pytest.raises(ValueError, match="chunked"):
        PromptTokenizer(sp_tok, image_id, "split")


# --------------------------------------------------------------------------- through the models
@pytest.fixture(scope="module")
def sp_checkpoints(original_dirs, llava_hf_dir, tmp_path_factory):
    """The tiny original checkpoint with a SentencePiece-style tokenizer, and a stage-1 twin."""
    tok = sentencepiece_style_tokenizer("bpe")
    root = tmp_path_factory.mktemp("sp")
    out = {}
    for name, src in (("full", original_dirs["full"]["checkpoint"]), ("stage1", original_dirs["stage1"]["base_llm"])):
        dst = root / name / Path(src).name
        shutil.copytree(src, dst)
        for f in dst.glob("*"):
            if f.name.startswith(("tokenizer", "special_tokens")):
                f.unlink()
        tok.save_pretrained(dst)
        out[name] = str(dst)
    stage1 = root / "stage1" / "llava-tiny-pretrain"
    shutil.copytree(original_dirs["stage1"]["checkpoint"], stage1)
    out["stage1_projector"] = str(stage1)
    return out


@pytest.fixture(scope="module")
def sp_vlm(sp_checkpoints):
    from lmms_ac.vlm.loaders import load_vlm

    return load_vlm(sp_checkpoints["full"])


def _ids_logprobs(vlm, ids, image, n_scored):
    batch = vlm.build_batch([ids], [[image]])
    with torch.no_grad():
        logits = vlm.llm(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask).logits[0].float()
    total = logits.shape[0]
    lp = torch.log_softmax(logits, -1)
    return [float(lp[total - n_scored - 1 + k, ids[len(ids) - n_scored + k]]) for k in range(n_scored)]


def test_formats_pick_their_own_tokenization(sp_vlm, llava_hf_vlm, sp_checkpoints):
    from lmms_ac.vlm.loaders import load_vlm

    assert sp_vlm.prompt_tokenizer.mode == "chunked"
    assert llava_hf_vlm.prompt_tokenizer.mode == "joint"
    assert load_vlm(sp_checkpoints["full"], tokenization="joint").prompt_tokenizer.mode == "joint"
    with pytest.raises(ValueError, match="unknown tokenization"):
        load_vlm(sp_checkpoints["full"], tokenization="split")


def test_a_score_scores_the_chunked_caption_tokens(sp_checkpoints):
    """A of a stage-1 original checkpoint = mean log P of the caption tokens as tokenizer_image_token
    builds them (not of the jointly tokenized caption); --score-separator adds the '\\n' token."""
    from lmms_ac.scores.alignment import CaptionPair, caption_loglikelihood
    from lmms_ac.vlm.loaders import load_vlm

    vlm = load_vlm(sp_checkpoints["stage1_projector"], model_base=sp_checkpoints["stage1"])
    images = sample_images(len(CAPTIONS), seed=4)
    tmp = Path(sp_checkpoints["stage1_projector"]).parent
    pairs = []
    for i, (caption, image) in enumerate(zip(CAPTIONS, images)):
        path = tmp / f"img{i}.png"
        image.convert("RGB").save(path)
        pairs.append(CaptionPair(str(i), path, caption))
    got = caption_loglikelihood(vlm, pairs, batch_size=2, show_progress=False)
    with_sep = caption_loglikelihood(vlm, pairs, batch_size=2, show_progress=False, score_separator=True)
    tok, image_id = vlm.tokenizer, vlm.image_token_id
    from PIL import Image

    for pair in pairs:
        image = Image.open(pair.image_path).convert("RGB")
        chunked = official_tokenizer_image_token(IMAGE_TOKEN + pair.caption, tok, image_id)
        lps = _ids_logprobs(vlm, chunked, image, len(chunked) - 2)
        assert got[pair.id] == pytest.approx(sum(lps) / len(lps), abs=1e-5)
        joint = tok(IMAGE_TOKEN + pair.caption)["input_ids"]
        assert joint != chunked
        joint_lps = _ids_logprobs(vlm, joint, image, len(joint) - 2)
        assert abs(got[pair.id] - sum(joint_lps) / len(joint_lps)) > 1e-4  # the old, joint ids score differently
        full = official_tokenizer_image_token(IMAGE_TOKEN + pair.caption + PLAIN_SEPARATOR, tok, image_id)
        sep_lps = _ids_logprobs(vlm, full, image, len(full) - 2)
        assert len(sep_lps) == len(lps) + 1 and sep_lps[:-1] == pytest.approx(lps, abs=1e-5)
        assert with_sep[pair.id] == pytest.approx(sum(sep_lps) / len(sep_lps), abs=1e-5)


def test_generation_and_loglikelihood_use_chunked_prompt_ids(sp_vlm):
    vlm = sp_vlm
    images = [im.convert("RGB") for im in sample_images(len(QUESTIONS), seed=6)]
    prompts = [build_prompt(q, 1, "vicuna_v1") for q in QUESTIONS]
    expected_ids = [official_tokenizer_image_token(p, vlm.tokenizer, vlm.image_token_id) for p in prompts]
    assert [vlm.tokenize(p) for p in prompts] == expected_ids
    # greedy generation from the official ids, by hand, equals the public API's text
    texts = vlm.generate(prompts, [[im] for im in images], max_new_tokens=6)
    for ids, im, text in zip(expected_ids, images, texts):
        batch = vlm.build_batch([ids], [[im]])
        with torch.no_grad():
            out = vlm.llm.generate(
                inputs_embeds=batch.inputs_embeds,
                attention_mask=batch.attention_mask,
                max_new_tokens=6,
                do_sample=False,
                pad_token_id=vlm.pad_token_id,
                eos_token_id=vlm.tokenizer.eos_token_id,
            )
        assert text == vlm.tokenizer.decode(out[0], skip_special_tokens=True)
    # loglikelihood: the continuation scored after the official context ids
    ((ll, _),) = vlm.loglikelihood([prompts[0]], [" yes"], [[images[0]]])
    ctx = expected_ids[0]
    whole = official_tokenizer_image_token(prompts[0] + " yes", vlm.tokenizer, vlm.image_token_id)
    if whole[: len(ctx)] != ctx:  # this toy BPE merges ":▁" across the boundary: the continuation is tokenized alone
        whole = ctx + vlm.tokenizer(" yes", add_special_tokens=False)["input_ids"]
    assert ll == pytest.approx(sum(_ids_logprobs(vlm, whole, images[0], len(whole) - len(ctx))), abs=1e-5)


def test_llava_hf_keeps_the_processors_joint_ids(llava_hf_dir, llava_hf_vlm):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(llava_hf_dir)
    prompt = build_prompt(QUESTIONS[0], 1, "chat_template", llava_hf_vlm.tokenizer)
    ids = processor.tokenizer(prompt)["input_ids"]
    assert llava_hf_vlm.tokenize(prompt) == ids


def test_score_a_cli_scores_the_separator_on_request(original_dirs, tmp_path):
    import csv

    from lmms_ac.cli import main
    from lmms_ac.testing.datasets import write_llava_pretrain

    data = write_llava_pretrain(str(tmp_path / "558k"), n=3)
    stage1 = original_dirs["stage1"]
    out = tmp_path / "scores.csv"
    base = [
        "score-a",
        "--pretrained",
        stage1["checkpoint"],
        "--model-base",
        stage1["base_llm"],
        "--captions",
        data["captions"],
        "--images",
        data["images"],
        "--n",
        "2",
        "--out",
        str(out),
        "--variant",
        "tiny",
    ]
    assert main(base) == 0
    assert main(base + ["--score-separator"]) == 0  # a different configuration: its own row, the default one kept
    rows = list(csv.DictReader(open(out)))
    assert [r["score"] for r in rows] == ["A", "A"] and rows[0]["config_hash"] != rows[1]["config_hash"]
    assert rows[0]["value"] != rows[1]["value"]
    assert main(base + ["--score-separator", "--method", "embed", "--reference", stage1["checkpoint"]]) == 2
