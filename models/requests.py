"""One lmms-eval request, prepared once: the typed record both inference paths consume.

lmms-eval hands ``lmms_ac_llava`` tuples (``Instance.args``): ``(context, gen_kwargs, doc_to_visual,
doc_id, task, split)`` for generation, ``(context, doc_to_target, doc_to_visual, doc_id, task, split)``
for log-likelihood. ``prepare_generation``/``prepare_loglikelihood`` turn each into a
``PreparedRequest`` (its images decoded, its prompt built, its perturbation hook and its decoding
settings or continuation resolved), so the shared-prefix path (``shared_prefix.py``) and the plain
path read the same fields and parse nothing twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, List, Mapping, Optional, Protocol, Sequence, Tuple

from PIL import Image

from lmms_ac.model_args import parse_bool


@dataclass(frozen=True)
class Sampling:
    """Decoding settings of one generation request (lmms-eval's ``gen_kwargs``, parsed)."""

    max_new_tokens: int
    stops: Tuple[str, ...]  # stop strings, the tokenizer's EOS text left out (EOS stops anyway)
    do_sample: bool
    temperature: float
    top_p: Optional[float]
    num_beams: int

    @property
    def greedy(self) -> bool:
        return not self.do_sample and self.num_beams == 1


def parse_stops(until: Any) -> List[str]:
    """lmms-eval's ``until``: a string, a list of strings, or nothing."""
    if until is None:
        return []
    if isinstance(until, str):
        return [until]
    if not isinstance(until, (list, tuple)) or not all(isinstance(u, str) for u in until):
        raise ValueError(f"gen_kwargs['until'] must be a string or a list of strings, got {until!r}")
    return list(until)


def parse_sampling(gen_kwargs: Mapping[str, Any], default_max_new_tokens: int, eos_text: Optional[str]) -> Sampling:
    """``gen_kwargs`` -> ``Sampling``; a bad value is an error naming the key."""
    temperature = float(gen_kwargs.get("temperature", 0) or 0)
    max_new = int(gen_kwargs.get("max_new_tokens") or default_max_new_tokens)
    if max_new < 1:
        raise ValueError(f"gen_kwargs['max_new_tokens'] must be >= 1, got {gen_kwargs.get('max_new_tokens')!r}")
    num_beams = int(gen_kwargs.get("num_beams", 1) or 1)
    top_p = gen_kwargs.get("top_p")
    return Sampling(
        max_new_tokens=max_new,
        stops=tuple(u for u in parse_stops(gen_kwargs.get("until")) if u != eos_text),
        do_sample=parse_bool(gen_kwargs.get("do_sample") or False, "do_sample") or temperature > 0,
        temperature=temperature,
        top_p=None if top_p is None else float(top_p),
        num_beams=num_beams,
    )


def with_leading_space(continuation: str) -> str:
    """lmms-eval's continuations follow the context after a space (``"A"`` is scored as ``" A"``)."""
    return continuation if continuation[:1].isspace() else " " + continuation


@dataclass
class PreparedRequest:
    """Everything inference needs of one request; ``context``/``gen_kwargs`` are lmms-eval's own (cache keys)."""

    index: int  # position in lmms-eval's list
    context: str
    task: str
    split: str
    doc_id: int
    prompt: str  # the context inside the checkpoint's prompt format, one image token per image
    images: List[Image.Image]
    n_images: int
    hook: Any  # SampleHooks or None: the perturbation this request runs under
    fetch_images: Callable[[], List[Image.Image]]  # decode the images again (after ``drop_images``)
    gen_kwargs: Optional[Mapping[str, Any]] = None
    sampling: Optional[Sampling] = None  # generation requests
    continuation: Optional[str] = None  # log-likelihood requests, leading space added

    def drop_images(self) -> None:
        """Free the decoded images (the shared path plans every request before it runs a batch)."""
        self.images = []

    def loaded_images(self) -> List[Image.Image]:
        return self.images if len(self.images) == self.n_images else self.fetch_images()


class RequestModel(Protocol):
    """What preparation needs of the lmms-eval model (``LmmsAcLlava`` implements it)."""

    task_dict: Mapping[str, Any]
    max_new_tokens: int

    def fetch_images(self, doc_to_visual: Any, task: str, split: str, doc_id: int) -> List[Image.Image]: ...

    def prompt(self, context: str, n_images: int) -> str: ...

    def hook_for(self, task: str, doc_id: int) -> Any: ...

    @property
    def eos_text(self) -> Optional[str]: ...


def _prepare(model: RequestModel, index: int, args: Sequence[Any], **fields: Any) -> PreparedRequest:
    context, _, doc_to_visual, doc_id, task, split = args

    def fetch() -> List[Image.Image]:
        return model.fetch_images(doc_to_visual, task, split, doc_id)

    images = fetch()
    return PreparedRequest(
        index=index,
        context=context,
        task=task,
        split=split,
        doc_id=doc_id,
        prompt=model.prompt(context, len(images)),
        images=images,
        n_images=len(images),
        hook=model.hook_for(task, doc_id),
        fetch_images=fetch,
        **fields,
    )


def prepare_generation(model: RequestModel, index: int, args: Sequence[Any]) -> PreparedRequest:
    gen_kwargs = args[1]
    sampling = parse_sampling(gen_kwargs, model.max_new_tokens, model.eos_text)
    return _prepare(model, index, args, gen_kwargs=gen_kwargs, sampling=sampling)


def prepare_loglikelihood(model: RequestModel, index: int, args: Sequence[Any]) -> PreparedRequest:
    _, doc_to_target, _, doc_id, task, split = args
    target = doc_to_target if isinstance(doc_to_target, str) else doc_to_target(model.task_dict[task][split][doc_id])
    if not isinstance(target, str):
        raise TypeError(f"task {task!r} doc {doc_id}: the continuation must be text, got {type(target).__name__}")
    return _prepare(model, index, args, continuation=with_leading_space(target))
