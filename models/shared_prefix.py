"""``lmms_ac_llava`` requests through shared-prefix inference (``prefix_sharing=true``, the default).

All of a call's requests are planned at once: each request is prepared (``requests.py``: images
decoded, prompt built, hook and decoding settings resolved), its images are hashed (content +
preprocessing settings) and its prompt tokenized by the model's own input builder, and
``lmms_ac.vlm.scheduler.plan`` puts the questions about one image into one batch (up to
``shared_batch_size`` rows; at most ``batch_size`` images per batch) with the longest common prefix of
their input ids. Decoded images are kept from the planning pass for the
batches up to ``KEEP_IMAGE_BYTES`` (beyond it they are decoded again when their batch runs, so
memory stays bounded); a batch encodes each distinct image once. Requests whose perturbation acts
on pixels or hidden states, and decoding other than plain greedy search, go through the unshared
path. Results come back in the callers' order.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Protocol, Sequence, Tuple

from PIL import Image
from tqdm import tqdm

from lmms_ac.models.requests import PreparedRequest, RequestModel, prepare_generation, prepare_loglikelihood
from lmms_ac.vlm.prefix_runner import PrefixRunner, Row, shareable
from lmms_ac.vlm.scheduler import Batch, Request, plan, restore_order

KEEP_IMAGE_BYTES = 512 * 2**20  # decoded images kept between planning and their batch


class SharedPrefixModel(RequestModel, Protocol):
    """What the shared path needs of the lmms-eval model, beyond request preparation."""

    prefix_runner: PrefixRunner
    vlm: Any  # LlavaStyleVLM: ``tokenize`` and ``prompt_tokenizer.encode_pair``
    cache_hook: Any
    batch_size: int
    rank: int


def _image_bytes(images: Sequence[Image.Image]) -> int:
    return sum(im.width * im.height * len(im.getbands()) for im in images)


class _Plan:
    """One group's requests as the scheduler and the runner see them."""

    def __init__(self, runner: PrefixRunner):
        self.runner = runner
        self.records: Dict[int, PreparedRequest] = {}
        self.keys: Dict[int, List[str]] = {}
        self.ids: Dict[int, Tuple[int, ...]] = {}
        self.kept_bytes = 0

    def add(self, record: PreparedRequest, ids: Sequence[int], limit: int, order: Tuple) -> Request:
        keys = [self.runner.image_key(im) for im in record.images]
        size = _image_bytes(record.images)
        if self.kept_bytes + size <= KEEP_IMAGE_BYTES:
            self.kept_bytes += size
        else:
            record.drop_images()  # decoded again when its batch runs
        self.records[record.index], self.keys[record.index], self.ids[record.index] = record, keys, tuple(ids)
        return Request(record.index, tuple(keys), tuple(ids), limit, tuple(keys), order=order)

    def rows(self, batch: Batch, n_cont: Dict[int, int]) -> List[Row]:
        rows = []
        for planned in batch.rows:
            i = planned.index
            record = self.records[i]
            row = Row(list(self.ids[i]), record.loaded_images(), self.keys[i], record.hook, n_cont=n_cont.get(i, 0))
            row.prefix_ids, row.prefix_key = planned.prefix_ids, planned.prefix_key
            record.drop_images()
            rows.append(row)
        return rows


def _rows_per_batch(lm: SharedPrefixModel, records: Sequence[PreparedRequest]) -> int:
    """Whole groups up to ``max_rows``; with token perturbations every question has its own prefix
    (kept until its batch ends), so ``batch_size`` rows as on the unshared path."""
    perturbed = any(getattr(r.hook, "tokens", None) is not None for r in records)
    return lm.batch_size if perturbed else lm.prefix_runner.max_rows


def _split_shareable(lm: SharedPrefixModel, requests: Sequence[Any]) -> Tuple[List[int], List[int]]:
    if lm.prefix_runner.unsupported is not None:
        return [], list(range(len(requests)))
    ok, rest = [], []
    for i, r in enumerate(requests):
        (ok if shareable(lm.hook_for(r.args[4], r.args[3])) else rest).append(i)
    return ok, rest


def _run_batches(
    lm: SharedPrefixModel, batches: List[Batch], work: Callable[[Batch], list], results: Dict[int, Any], desc: str
) -> None:
    pbar = tqdm(total=sum(len(b.rows) for b in batches), disable=lm.rank != 0, desc=desc)
    for batch in batches:
        for planned, out in zip(batch.rows, work(batch)):
            results[planned.index] = out
        lm.prefix_runner.release(batch.release)
        pbar.update(len(batch.rows))
    pbar.close()
    lm.prefix_runner.clear()


def generate_until_shared(
    lm: SharedPrefixModel, requests: Sequence[Any], unshared: Callable[[List[Any]], List[str]]
) -> List[str]:
    results: Dict[int, str] = {}
    ok, rest = _split_shareable(lm, requests)
    runner = lm.prefix_runner
    by_settings: Dict[Any, List[PreparedRequest]] = {}
    for i in ok:  # requests whose decoding the runner reproduces, grouped by their settings
        record = prepare_generation(lm, i, requests[i].args)
        if runner.greedy_supported(record.sampling.do_sample, record.sampling.num_beams):
            by_settings.setdefault(record.sampling, []).append(record)
        else:
            rest.append(i)
    for sampling, records in by_settings.items():
        group = _Plan(runner)
        sched = []
        for record in records:
            ids = lm.vlm.tokenize(record.prompt)
            sched.append(group.add(record, ids, len(ids) - 1, order=(-len(ids),)))
        _run_batches(
            lm,
            plan(sched, lm.batch_size, _rows_per_batch(lm, records)),
            lambda batch, group=group, s=sampling: runner.generate(
                group.rows(batch, {}), max_new_tokens=s.max_new_tokens, until=s.stops
            ),
            results,
            "lmms_ac_llava generate (shared prefixes)",
        )
        for record in records:
            lm.cache_hook.add_partial("generate_until", (record.context, record.gen_kwargs), results[record.index])
    if rest:
        rest = sorted(rest)
        for i, out in zip(rest, unshared([requests[i] for i in rest])):
            results[i] = out
    return restore_order(results, len(requests))


def loglikelihood_shared(
    lm: SharedPrefixModel, requests: Sequence[Any], unshared: Callable[[List[Any]], List[Tuple[float, bool]]]
) -> List[Tuple[float, bool]]:
    results: Dict[int, Tuple[float, bool]] = {}
    ok, rest = _split_shareable(lm, requests)
    runner = lm.prefix_runner
    group = _Plan(runner)
    sched, n_cont = [], {}
    for i in ok:
        record = prepare_loglikelihood(lm, i, requests[i].args)
        ctx_ids, cont_ids = lm.vlm.prompt_tokenizer.encode_pair(record.prompt, record.continuation)
        n_cont[i] = len(cont_ids)
        sched.append(group.add(record, ctx_ids + cont_ids, len(ctx_ids) - 1, order=(i,)))

    def score(batch: Batch) -> List[Tuple[float, bool]]:
        rows = group.rows(batch, n_cont)
        return [(float(lp.sum()), bool(greedy.all())) for lp, greedy in runner.token_logprobs(rows)]

    _run_batches(
        lm,
        plan(sched, lm.batch_size, _rows_per_batch(lm, list(group.records.values()))),
        score,
        results,
        "lmms_ac_llava loglikelihood (shared prefixes)",
    )
    if rest:
        for i, out in zip(rest, unshared([requests[i] for i in rest])):
            results[i] = out
    return restore_order(results, len(requests))
