"""Shared-prefix inference changes no output: greedy text token for token and loglikelihoods to 1e-5
(float32, CPU), sharing on vs off, batch 1 and 8, clean and token-permuted, on MME-schema data with 2
and 20 questions per image; pixel and hidden-state probes fall back to the unshared path."""

from __future__ import annotations

import pytest
from lmms_eval.api.instance import Instance

from lmms_ac.models.lmms_ac_llava import LmmsAcLlava
from lmms_ac.testing.prefix_data import mme_many_questions
from tiny_requests import generate_requests, loglikelihood_requests, single_image


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matrices on a shared CPU: one thread is ~10x faster than several waiting for each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


DATASETS = {"2q": mme_many_questions(5, 2), "20q": mme_many_questions(2, 20)}
_MODELS = {}


@pytest.fixture(scope="module")
def make(llava_hf_dir):
    def get(share: bool, batch: int, perturbation=None, **kw) -> LmmsAcLlava:
        key = (share, batch, perturbation, tuple(sorted(kw.items())))
        if key not in _MODELS:
            lm = LmmsAcLlava(
                pretrained=llava_hf_dir,
                device="cpu",
                dtype="float32",
                batch_size=batch,
                prefix_sharing=share,
                perturbation=perturbation,
                variant="tiny",
                **kw,
            )
            for name, docs in DATASETS.items():
                lm.task_dict[name] = {"test": docs}
            _MODELS[key] = lm
        lm = _MODELS[key]
        if lm.prefix_runner is not None:
            lm.prefix_runner.stats.__init__()
        return lm

    yield get
    _MODELS.clear()


def gen_requests(task: str, order=None, max_new_tokens: int = 6):
    return generate_requests(DATASETS[task], max_new_tokens, task=task, order=order)


def ll_requests(task: str):
    # each question scored with both answers: the pairs share their whole context
    return loglikelihood_requests(DATASETS[task], task=task)


@pytest.mark.parametrize("task", ["2q", "20q"])
@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("perturbation", [None, "tokperm"])
def test_greedy_generation_is_unchanged(make, task, batch, perturbation):
    off = make(False, batch, perturbation).generate_until(gen_requests(task))
    lm = make(True, batch, perturbation)
    on = lm.generate_until(gen_requests(task))
    assert on == off
    stats = lm.prefix_runner.stats
    n_images = len({d["question_id"] for d in DATASETS[task]})
    assert stats.images_encoded == n_images  # one encoder pass per image, token perturbation or not
    if perturbation is None:
        assert stats.prefixes_computed == n_images  # one prefill per image
    else:  # permuted visual tokens differ per question: nothing to share after the encoder
        assert stats.prefixes_computed == len(DATASETS[task]) and stats.prefix_hits == 0


@pytest.mark.parametrize("task", ["2q", "20q"])
@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("perturbation", [None, "tokperm"])
def test_loglikelihoods_are_unchanged(make, task, batch, perturbation):
    off = make(False, batch, perturbation).loglikelihood(ll_requests(task))
    lm = make(True, batch, perturbation)
    on = lm.loglikelihood(ll_requests(task))
    assert [g for _, g in on] == [g for _, g in off]
    assert max(abs(a - b) for (a, _), (b, _) in zip(on, off)) <= 1e-5
    if perturbation is None:
        assert lm.prefix_runner.stats.prefixes_computed == len({d["question_id"] for d in DATASETS[task]})


def test_interleaved_requests_come_back_in_their_order(make):
    """Questions about two images interleaved (and shuffled): the scheduler regroups them, the
    results follow the callers' order."""
    order = [0, 20, 1, 21, 39, 2, 5, 30, 19, 10, 25]
    off = make(False, 8).generate_until(gen_requests("20q", order))
    lm = make(True, 8)
    assert lm.generate_until(gen_requests("20q", order)) == off
    assert lm.prefix_runner.stats.prefixes_computed == 2


@pytest.mark.parametrize("perturbation", ["patchshuffle2", "layernoise_l1", "modnoise_image_l0"])
def test_pixel_and_hidden_probes_fall_back_to_the_unshared_path(make, perturbation):
    off_gen = make(False, 8, perturbation).generate_until(gen_requests("2q"))
    off_ll = make(False, 8, perturbation).loglikelihood(ll_requests("2q"))
    lm = make(True, 8, perturbation)
    assert lm.generate_until(gen_requests("2q")) == off_gen
    assert lm.loglikelihood(ll_requests("2q")) == off_ll
    stats = lm.prefix_runner.stats
    assert stats.images_encoded == 0 and stats.prefixes_computed == 0 and stats.prefill_positions == 0


def test_sampling_falls_back_and_the_caches_stay_bounded(make):
    lm = make(True, 1, prefix_cache_size=1)
    sizes = []
    runner = lm.prefix_runner
    put = runner.prefixes.put

    def spy(key, value):
        put(key, value)
        sizes.append((len(runner.prefixes), len(runner.images)))

    runner.prefixes.put = spy
    try:
        assert lm.generate_until(gen_requests("20q")) == make(False, 1).generate_until(gen_requests("20q"))
    finally:
        del runner.prefixes.put
    assert sizes and max(max(s) for s in sizes) <= 1
    assert len(runner.prefixes) == 0 and len(runner.images) == 0  # released once no batch needs them
    runner.stats.__init__()
    reqs = [
        Instance(
            "generate_until",
            (
                d["question"],
                {"max_new_tokens": 3, "do_sample": True, "temperature": 0.7},
                single_image,
                i,
                "2q",
                "test",
            ),
            idx=0,
            metadata={"task": "2q", "doc_id": i, "repeats": 1},
        )
        for i, d in enumerate(DATASETS["2q"])
    ]
    assert len(lm.generate_until(reqs)) == len(reqs)
    assert runner.stats.prefixes_computed == 0  # sampling is not plain greedy search: unshared path


def test_prefill_work_falls_with_questions_per_image(make):
    """Exactly one prefill of each image's common prefix, plus every question's own suffix."""
    from lmms_ac.vlm.scheduler import common_prefix_length

    lm = make(True, 8)
    lm.generate_until(gen_requests("20q"))
    stats = lm.prefix_runner.stats
    n_img = lm.vlm.vision.num_tokens
    expected = full = 0
    for qid in sorted({d["question_id"] for d in DATASETS["20q"]}):
        ids = [lm.vlm.tokenize(lm.prompt(d["question"], 1)) for d in DATASETS["20q"] if d["question_id"] == qid]
        p = common_prefix_length(ids) + n_img - 1  # the placeholder becomes the image's tokens
        lengths = [len(i) + n_img - 1 for i in ids]
        expected += p + sum(n - p for n in lengths)
        full += sum(lengths)
    assert stats.prefill_tokens == expected < 0.7 * full
    assert stats.prefill_positions >= stats.prefill_tokens


def test_model_arguments(llava_hf_dir):
    lm = LmmsAcLlava(pretrained=llava_hf_dir, device="cpu", prefix_sharing="false")
    assert lm.prefix_sharing is False and lm.prefix_runner is None
    with pytest.raises(ValueError, match="prefix_sharing"):
        LmmsAcLlava(pretrained=llava_hf_dir, device="cpu", prefix_sharing="maybe")
    with pytest.raises(ValueError, match="prefix_cache_size"):
        LmmsAcLlava(pretrained=llava_hf_dir, device="cpu", prefix_cache_size=0)


def _two_images(doc):
    return [doc["image"], doc["image"].transpose(0)]  # a mirrored copy: two different images per question


def _no_image(doc):
    return []


@pytest.mark.parametrize("visual", [_two_images, _no_image], ids=["two_images", "text_only"])
def test_multi_image_and_text_only_requests(make, visual):
    def reqs():
        return [
            Instance(
                "generate_until",
                (d["question"], {"max_new_tokens": 5}, visual, i, "20q", "test"),
                idx=0,
                metadata={"task": "20q", "doc_id": i, "repeats": 1},
            )
            for i, d in enumerate(DATASETS["20q"][:12])
        ]

    off = make(False, 8).generate_until(reqs())
    lm = make(True, 8)
    assert lm.generate_until(reqs()) == off
    assert lm.prefix_runner.stats.prefixes_computed == 1  # one image pair (or none) shared by all twelve


def test_generation_settings_beyond_greedy_fall_back(make):
    off, lm = make(False, 8), make(True, 8)
    before = lm.vlm.llm.generation_config.repetition_penalty
    for m in (off, lm):
        m.vlm.llm.generation_config.repetition_penalty = 1.3
    try:
        assert lm.generate_until(gen_requests("2q")) == off.generate_until(gen_requests("2q"))
        assert lm.prefix_runner.stats.prefixes_computed == 0
    finally:
        for m in (off, lm):
            m.vlm.llm.generation_config.repetition_penalty = before


def test_sliding_window_llms_are_refused():
    from types import SimpleNamespace

    from lmms_ac.vlm.prefix_cache import unsupported_reason

    llama = SimpleNamespace(config=SimpleNamespace(sliding_window=None, layer_types=["full_attention"] * 2))
    mistral = SimpleNamespace(config=SimpleNamespace(sliding_window=4096))
    hybrid = SimpleNamespace(
        config=SimpleNamespace(sliding_window=None, layer_types=["sliding_attention", "full_attention"])
    )
    assert unsupported_reason(llama) is None
    assert "sliding" in unsupported_reason(mistral) and "non-full" in unsupported_reason(hybrid)


@pytest.mark.parametrize("task", ["2q", "20q"])
def test_copied_prefix_path_without_cascade_attention(make, task):
    """The fallback for LLMs outside transformers' attention interface: prefixes copied per row."""
    off = make(False, 8).generate_until(gen_requests(task, max_new_tokens=4))
    lm = make(True, 8)
    lm.prefix_runner.cascade = False
    try:
        assert lm.generate_until(gen_requests(task, max_new_tokens=4)) == off
    finally:
        lm.prefix_runner.cascade = True


@pytest.mark.parametrize("kind", ["generate", "loglikelihood"])
def test_packed_suffixes_equal_padded_ones(make, kind):
    """The suffix prefill packed into one sequence (no pad position through the LLM) gives the padded
    layout's results: greedy text identical, loglikelihoods to 1e-6, with fewer positions run."""
    lm = make(True, 8)
    run = (
        (lambda: lm.generate_until(gen_requests("20q")))
        if kind == "generate"
        else lambda: lm.loglikelihood(ll_requests("20q"))
    )
    packed = run()
    packed_stats = lm.prefix_runner.stats.as_dict()
    lm.prefix_runner.stats.__init__()
    lm.prefix_runner.pack_suffixes = False
    try:
        padded = run()
    finally:
        lm.prefix_runner.pack_suffixes = True
    padded_stats = lm.prefix_runner.stats.as_dict()
    if kind == "generate":
        assert packed == padded
    else:
        assert [g for _, g in packed] == [g for _, g in padded]
        assert max(abs(a - b) for (a, _), (b, _) in zip(packed, padded)) <= 1e-6
    assert packed_stats["prefill_tokens"] == padded_stats["prefill_tokens"]
    assert packed_stats["prefill_positions"] < padded_stats["prefill_positions"]  # the questions differ in length


def _decode_batch_sizes(lm) -> list:
    """The rows of each batch the prefix runner decodes for the 20-questions-per-image requests."""
    sizes = []
    generate = lm.prefix_runner.generate

    def spy(rows, **kw):
        sizes.append(len(rows))
        return generate(rows, **kw)

    lm.prefix_runner.generate = spy
    try:
        lm.generate_until(gen_requests("20q", max_new_tokens=1))
    finally:
        del lm.prefix_runner.generate
    return sizes


def test_all_questions_about_an_image_decode_together(make):
    """batch_size bounds the images per batch, not the questions: 20 questions are one decode batch."""
    sizes = _decode_batch_sizes(make(True, 8))
    assert sizes == [40]  # 2 images x 20 questions, within 8 images and 64 rows per batch


def test_phase_times(make):
    from lmms_ac.vlm.phases import PhaseTimes

    lm = make(True, 8)
    lm.prefix_runner.times = times = PhaseTimes()
    try:
        lm.generate_until(gen_requests("20q", max_new_tokens=3))
    finally:
        lm.prefix_runner.times = None
    assert {"image encoding", "shared prefill", "suffix prefill", "decode step"} <= set(times.seconds)
    assert len(times.steps) == times.calls["decode step"] == 2  # 3 tokens: the prefill gives the first


def test_token_perturbed_batches_keep_the_batch_size(make):
    """Every token-permuted question has its own prefix, kept until its batch ends: batches stay at
    ``batch_size`` rows so their prefixes' memory is bounded as on the unshared path."""
    sizes = _decode_batch_sizes(make(True, 8, "tokperm"))
    assert max(sizes) == 8 and sum(sizes) == 40


@pytest.mark.parametrize("stops", [["e"], ["a", "o"]])
def test_rows_stop_at_their_own_stop_strings(make, stops):
    """Stop strings random outputs do hit, at different steps per row: each row stops on its own."""

    def reqs():
        return [
            Instance(
                "generate_until",
                (d["question"], {"max_new_tokens": 8, "until": stops}, single_image, i, "20q", "test"),
                idx=0,
                metadata={"task": "20q", "doc_id": i, "repeats": 1},
            )
            for i, d in enumerate(DATASETS["20q"])
        ]

    off = make(False, 8).generate_until(reqs())
    assert make(True, 8).generate_until(reqs()) == off
    assert len({len(t) for t in off}) > 1  # rows really stopped at different places


def test_tail_stops_decode_only_unfinished_rows():
    import torch

    from lmms_ac.vlm.prefix_runner import TailStops

    class Tok:
        seen = []

        def batch_decode(self, rows, skip_special_tokens=True):
            self.seen.append(len(rows))
            return ["".join(chr(96 + t) for t in r) for r in rows]

    tails = TailStops(Tok(), ["cd"])
    generated = torch.tensor([[1, 3, 4], [1, 2, 3], [3, 4, 5]])
    unfinished = torch.tensor([True, True, False])
    assert tails.update(generated, unfinished).tolist() == [False, True, False]
    assert Tok.seen == [2]  # the finished row is not decoded again


SYSTEM = "You are a careful assistant. Look at every part of the picture closely before you answer the question."


@pytest.mark.parametrize("task", ["2q", "20q"])
@pytest.mark.parametrize("perturbation", [None, "tokperm"])
def test_common_opening_of_several_prefixes_is_prefilled_once(make, task, perturbation):
    """A long system prompt before each image: the prefixes of one batch share it, prefilled once and
    the rest of each prefix on top of it; outputs and loglikelihoods unchanged."""
    off = make(False, 8, perturbation, system_prompt=SYSTEM)
    lm = make(True, 8, perturbation, system_prompt=SYSTEM)
    assert lm.generate_until(gen_requests(task)) == off.generate_until(gen_requests(task))
    tokens_shared = lm.prefix_runner.stats.prefill_tokens
    on_ll, off_ll = lm.loglikelihood(ll_requests(task)), off.loglikelihood(ll_requests(task))
    assert [g for _, g in on_ll] == [g for _, g in off_ll]
    assert max(abs(a - b) for (a, _), (b, _) in zip(on_ll, off_ll)) <= 1e-5
    ids = lm.vlm.tokenize(lm.prompt(DATASETS[task][0]["question"], 1))
    opening = ids.index(lm.vlm.image_token_id)
    assert opening >= 16
    lm.prefix_runner.cascade = False  # one plain prefill per prefix: the opening counted per prefix
    try:
        lm.prefix_runner.stats.__init__()
        lm.generate_until(gen_requests(task))
        assert lm.prefix_runner.stats.prefill_tokens > tokens_shared
    finally:
        lm.prefix_runner.cascade = True
