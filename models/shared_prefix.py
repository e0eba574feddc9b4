"""``lmms_ac_llava`` requests through shared-prefix inference (``prefix_sharing=true``, the default).

All of a call's requests are planned at once: each request's images are decoded and hashed (content
+ preprocessing settings), its prompt is built and tokenized by the model's own input builder, and
``lmms_ac.vlm.scheduler.plan`` groups the questions about one image into the same batches with the
longest common prefix of their input ids. Images are not kept between the planning pass and the
batch (memory stays bounded by the batch); a batch decodes each distinct image once. Requests whose
perturbation acts on pixels or hidden states, and generation settings other than plain greedy
search, go through the unshared path. Results come back in the callers' order.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from tqdm import tqdm

from lmms_ac.model_args import parse_bool
from lmms_ac.vlm.prefix_runner import PrefixRunner, Row, shareable
from lmms_ac.vlm.scheduler import Request, group_by, plan, restore_order


def _gen_key(gen_kwargs: Dict[str, Any]) -> str:
    return json.dumps(gen_kwargs, sort_keys=True, default=str)


def _stops(gen_kwargs: Dict[str, Any], eos_text: Optional[str]) -> List[str]:
    until = gen_kwargs.get("until", None)
    if isinstance(until, str):
        until = [until]
    elif until is not None and not isinstance(until, (list, tuple)):
        raise ValueError(f"gen_kwargs['until'] must be a string or a list, got {type(until).__name__}")
    return [u for u in (until or []) if u != eos_text]


class _Planner:
    """Builds scheduler requests and runner rows for one call's requests."""

    def __init__(self, lm: Any):
        self.lm = lm
        self.runner: PrefixRunner = lm.prefix_runner
        self.image_keys: Dict[int, List[str]] = {}

    def images(self, args: Tuple) -> list:
        doc_to_visual, doc_id, task, split = args[2], args[3], args[4], args[5]
        return self.lm._visuals(doc_to_visual, task, split, doc_id)

    def keys(self, i: int, images: list) -> List[str]:
        keys = [self.runner.image_key(im) for im in images]
        self.image_keys[i] = keys
        return keys

    def run(
        self,
        batch,
        rows_for: Callable[[List[int], Dict[str, Any]], List[Row]],
        execute: Callable[[List[Row]], list],
        results: Dict[int, Any],
    ) -> None:
        indices = [p.index for p in batch.rows]
        loaded: Dict[str, Any] = {}
        rows = rows_for(indices, loaded)
        by_index = {p.index: p for p in batch.rows}
        for i, row in zip(indices, rows):
            row.prefix_ids, row.prefix_key = by_index[i].prefix_ids, by_index[i].prefix_key
        for i, out in zip(indices, execute(rows)):
            results[i] = out
        self.runner.release(batch.release)


def _split_shareable(lm: Any, requests: Sequence[Any]) -> Tuple[List[int], List[int], list]:
    hooks = [lm.hook_factory.for_request(r.args[4], r.args[3]) for r in requests]
    ok = [i for i, h in enumerate(hooks) if shareable(h)] if lm.prefix_runner.unsupported is None else []
    okset = set(ok)
    return ok, [i for i in range(len(requests)) if i not in okset], hooks


def _load_images(planner: _Planner, requests: Sequence[Any], indices: List[int], loaded: Dict[str, Any]) -> List[list]:
    """Each request's images, decoding each distinct image (by content key) once per batch."""
    out = []
    for i in indices:
        keys = planner.image_keys[i]
        if all(k in loaded for k in keys):
            out.append([loaded[k] for k in keys])
            continue
        ims = planner.images(requests[i].args)
        for k, im in zip(keys, ims):
            loaded.setdefault(k, im)
        out.append(ims)
    return out


def generate_until_shared(lm: Any, requests: Sequence[Any], unshared: Callable[[List[Any]], List[str]]) -> List[str]:
    results: Dict[int, str] = {}
    ok, rest, hooks = _split_shareable(lm, requests)
    runner: PrefixRunner = lm.prefix_runner
    eos_text = lm.vlm.tokenizer.eos_token
    planned_ok: List[int] = []
    for key, members in group_by([requests[i] for i in ok], lambda r: _gen_key(r.args[1])).items():
        members = [ok[m] for m in members]
        gen_kwargs = dict(requests[members[0]].args[1])
        temperature = float(gen_kwargs.get("temperature", 0) or 0)
        do_sample = parse_bool(gen_kwargs.get("do_sample") or False, "do_sample") or temperature > 0
        if not runner.greedy_supported(do_sample, int(gen_kwargs.get("num_beams", 1) or 1)):
            rest.extend(members)
            continue
        planned_ok.extend(members)
        stops = _stops(gen_kwargs, eos_text)
        max_new = int(gen_kwargs.get("max_new_tokens") or lm.max_new_tokens)
        planner = _Planner(lm)
        sched, ids_of = [], {}
        for i in members:
            images = planner.images(requests[i].args)
            keys = planner.keys(i, images)
            ids_of[i] = tuple(lm.vlm.tokenize(lm._prompt(requests[i].args[0], len(images))))
            sched.append(Request(i, tuple(keys), ids_of[i], len(ids_of[i]) - 1, tuple(keys), order=(-len(ids_of[i]),)))

        def rows_for(indices, loaded, planner=planner, ids_of=ids_of):
            ims = _load_images(planner, requests, indices, loaded)
            return [Row(list(ids_of[i]), im, planner.image_keys[i], hooks[i]) for i, im in zip(indices, ims)]

        batches = plan(sched, lm.batch_size)
        pbar = tqdm(total=len(members), disable=lm.rank != 0, desc="lmms_ac_llava generate (shared prefixes)")
        for batch in batches:
            planner.run(
                batch, rows_for, lambda rows: runner.generate(rows, max_new_tokens=max_new, until=stops), results
            )
            pbar.update(len(batch.rows))
        pbar.close()
        runner.clear()
        for i in members:
            lm.cache_hook.add_partial("generate_until", (requests[i].args[0], requests[i].args[1]), results[i])
    if rest:
        rest = sorted(rest)
        for i, out in zip(rest, unshared([requests[i] for i in rest])):
            results[i] = out
    return restore_order(results, len(requests))


def loglikelihood_shared(
    lm: Any, requests: Sequence[Any], unshared: Callable[[List[Any]], List[Tuple[float, bool]]]
) -> List[Tuple[float, bool]]:
    results: Dict[int, Tuple[float, bool]] = {}
    ok, rest, hooks = _split_shareable(lm, requests)
    runner: PrefixRunner = lm.prefix_runner
    planner = _Planner(lm)
    sched, ids_of, n_of = [], {}, {}
    for i in ok:
        context, doc_to_target, doc_to_visual, doc_id, task, split = requests[i].args
        doc = lm.task_dict[task][split][doc_id]
        cont = doc_to_target if isinstance(doc_to_target, str) else doc_to_target(doc)
        cont = cont if cont[:1].isspace() else " " + cont
        images = planner.images(requests[i].args)
        keys = planner.keys(i, images)
        ctx_ids, cont_ids = lm.vlm.prompt_tokenizer.encode_pair(lm._prompt(context, len(images)), cont)
        ids_of[i], n_of[i] = ctx_ids + cont_ids, len(cont_ids)
        sched.append(Request(i, tuple(keys), tuple(ids_of[i]), len(ctx_ids) - 1, tuple(keys), order=(i,)))

    def rows_for(indices, loaded):
        ims = _load_images(planner, requests, indices, loaded)
        return [
            Row(list(ids_of[i]), im, planner.image_keys[i], hooks[i], n_cont=n_of[i]) for i, im in zip(indices, ims)
        ]

    def execute(rows):
        return [(float(lp.sum()), bool(greedy.all())) for lp, greedy in runner.token_logprobs(rows)]

    pbar = tqdm(total=len(ok), disable=lm.rank != 0, desc="lmms_ac_llava loglikelihood (shared prefixes)")
    for batch in plan(sched, lm.batch_size):
        planner.run(batch, rows_for, execute, results)
        pbar.update(len(batch.rows))
    pbar.close()
    runner.clear()
    if rest:
        for i, out in zip(rest, unshared([requests[i] for i in rest])):
            results[i] = out
    return restore_order(results, len(requests))
