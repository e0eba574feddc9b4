"""``lmms_ac_llava``: the lmms-eval model for LLaVA-style checkpoints (thin: requests -> library).

    lmms-eval --model lmms_ac_llava --model_args pretrained=<dir or hub id> --tasks mme,seed

Model arguments (anything else is an error listing these): see ``MODEL_ARGS``.
"""

from __future__ import annotations

import inspect
import os
from typing import Annotated, Any, List, Optional, Set, Tuple

import torch
from loguru import logger
from PIL import Image
from tqdm import tqdm

from lmms_ac.model_args import AtLeast, merge_arguments, parse_bool, split_arg_string, typed_arguments
from lmms_ac.models.requests import prepare_generation, prepare_loglikelihood
from lmms_ac.plugin import Collator, Instance, ModelBase
from lmms_ac.vlm.prompts import build_prompt, resolve_format

DEFAULT_PRETRAINED = "llava-hf/llava-1.5-7b-hf"


class LmmsAcLlava(ModelBase):
    """LLaVA-style model (vision representation -> projector -> LLM) with perturbation hooks.

    Args:
        pretrained: llava-hf or original-LLaVA checkpoint (directory or hub id).
        model_base: base LLM for a stage-1 checkpoint that only has ``mm_projector.bin``.
        vision_tower: representation spec overriding the checkpoint's tower, e.g.
            ``clip:openai/clip-vit-large-patch14-336``.
        device: ``cuda``, ``cuda:1``, ``cpu``... (default: cuda when available). Under ``accelerate launch`` each
            process takes its local GPU.
        dtype: ``auto``, ``float16``, ``bfloat16`` or ``float32``.
        attn_implementation: ``eager``, ``sdpa`` or ``flash_attention_2``.
        batch_size: requests per forward pass (left-padded).
        prompt_format: ``auto`` (the tokenizer's chat template when the checkpoint has one, else ``vicuna_v1``),
            ``vicuna_v1``, ``chat_template`` or ``plain``.
        image_aspect_ratio: ``auto`` (the checkpoint's setting), ``pad`` (LLaVA-1.5: pad to square with the mean
            colour) or ``original``.
        system_prompt: replaces the template's system message.
        perturbation: a catalogue perturbation applied on every task (e.g. ``tokperm``); robustness tasks carry their
            own.
        perturbation_seed: seed of that perturbation.
        variant: name of this model in results tables (default: the checkpoint's directory name).
        max_new_tokens: default when a task sets none (128).
        trust_remote_code: off unless turned on. Booleans are strict: true/false, 1/0, yes/no, on/off.
        tokenization: ``auto`` (the format's own: ``chunked`` = original LLaVA's ``tokenizer_image_token`` for
            original checkpoints, ``joint`` = the processor's for llava-hf), ``chunked`` or ``joint``.
        image_backend: ``auto`` (``pil`` for original-format towers, as LLaVA's code; the processor's default for
            llava-hf), ``pil`` or ``torchvision``.
        prefix_sharing: on (default): questions about one image are batched together, the image is encoded once and
            the common prefix (system prompt + image tokens + common text) prefilled once; outputs are unchanged.
            ``false`` runs every request in full.
        prefix_cache_size: most prefixes (and encoded images) kept between batches (default 4); entries are dropped
            as soon as no later batch needs them.
        shared_batch_size: with prefix sharing, most questions decoded together (default 64): all questions about an
            image go in one batch up to this many (each costs only its own suffix's keys/values), at most
            ``batch_size`` images per batch. Lower it if a large model runs out of memory.
    """

    @typed_arguments
    def __init__(
        self,
        pretrained: str = DEFAULT_PRETRAINED,
        model_base: Optional[str] = None,
        vision_tower: Optional[str] = None,
        device: Optional[str] = None,
        dtype: str = "auto",
        attn_implementation: Optional[str] = None,
        batch_size: Annotated[int, AtLeast(1)] = 1,
        max_batch_size: Optional[int] = None,
        prompt_format: str = "auto",
        image_aspect_ratio: str = "auto",
        system_prompt: Optional[str] = None,
        perturbation: Optional[str] = None,
        perturbation_seed: int = 0,
        variant: Optional[str] = None,
        max_new_tokens: Annotated[int, AtLeast(1)] = 128,
        trust_remote_code: bool = False,
        tokenization: str = "auto",
        image_backend: str = "auto",
        prefix_sharing: bool = True,
        prefix_cache_size: Annotated[int, AtLeast(1)] = 4,
        shared_batch_size: Annotated[int, AtLeast(1)] = 64,
        **unknown: Any,
    ) -> None:
        super().__init__()
        from lmms_ac.doctor import require_runtime

        require_runtime()  # a broken environment fails here with the fix, not deep inside lmms-eval
        if unknown:
            valid = ", ".join(sorted(MODEL_ARGS))
            raise ValueError(
                f"unknown model argument(s) for lmms_ac_llava: {', '.join(sorted(unknown))}. Valid arguments: {valid}"
            )
        from lmms_ac.vlm.prompts import PROMPT_FORMATS

        if prompt_format not in PROMPT_FORMATS:  # before minutes of loading
            raise ValueError(f"unknown prompt_format {prompt_format!r}; choose one of {', '.join(PROMPT_FORMATS)}")
        from accelerate import Accelerator

        from lmms_ac.vlm.loaders import load_vlm
        from lmms_ac.models.process_group import release_gloo_group_at_exit

        if device in (None, "", "auto"):
            device = "cuda" if torch.cuda.is_available() else "cpu"
        # on CPU the Accelerator must be told so, or under a multi-process launch it reports a single
        # process and lmms-eval's gather (through lm.accelerator) silently keeps rank 0's samples only
        accelerator = Accelerator(cpu=not str(device).startswith("cuda"))
        launched = int(os.environ.get("WORLD_SIZE", "1"))
        if launched > 1 and accelerator.num_processes != launched:
            raise RuntimeError(
                f"launched with WORLD_SIZE={launched} but accelerate sees {accelerator.num_processes} process(es), so "
                "lmms-eval "
                "would gather only part of the samples. On CPU run: ACCELERATE_USE_CPU=1 torchrun --nproc_per_node N "
                "-m lmms_eval ...; "
                "on GPUs: accelerate launch --num_processes N -m lmms_eval ..."
            )
        if accelerator.num_processes > 1 and str(device).startswith("cuda"):
            device = f"cuda:{accelerator.local_process_index}"
        self._device = torch.device(device)
        self.accelerator = accelerator
        self._rank = accelerator.process_index
        self._world_size = accelerator.num_processes
        if self._world_size > 1:
            release_gloo_group_at_exit()
        self.batch_size_per_gpu = int(batch_size)
        if self.batch_size_per_gpu < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_batch_size is not None:  # lmms-eval's --max_batch_size bounds --batch_size auto, which we do not do
            raise ValueError(
                f"max_batch_size={max_batch_size} is not supported by lmms_ac_llava (no automatic batch "
                f"size); give a fixed batch size with --batch_size N or batch_size=N"
            )
        self.pretrained = pretrained
        self.reported_docs: Set[str] = set()  # docs whose bad images were logged (each once)
        self.variant = variant or str(pretrained).rstrip("/").split("/")[-1]
        self.max_new_tokens = int(max_new_tokens)
        self.vlm = load_vlm(
            pretrained,
            model_base=model_base,
            vision_tower=vision_tower,
            dtype=dtype,
            device=self._device,
            attn_implementation=attn_implementation,
            image_aspect_ratio=image_aspect_ratio,
            trust_remote_code=trust_remote_code,
            tokenization=tokenization,
            image_backend=image_backend,
        )
        self.prompt_format = resolve_format(prompt_format, self.vlm.tokenizer)
        self.system_prompt = system_prompt
        from lmms_ac.perturb_bridge import HookFactory

        self.hook_factory = HookFactory(self.vlm, perturbation=perturbation, seed=int(perturbation_seed))
        from lmms_ac.model_args import parse_int
        from lmms_ac.vlm.prefix_runner import PrefixRunner

        self.prefix_sharing = parse_bool(prefix_sharing, "prefix_sharing")
        self.prefix_runner = (
            PrefixRunner(
                self.vlm,
                parse_int(prefix_cache_size, "prefix_cache_size", minimum=1),
                max_rows=parse_int(shared_batch_size, "shared_batch_size", minimum=1),
                prefill_batch=self.batch_size_per_gpu,
            )
            if self.prefix_sharing
            else None
        )
        from lmms_ac.robustness.tasks import declare_perturbation_support

        declare_perturbation_support(
            model="lmms_ac_llava"
        )  # generated robustness tasks may run: we apply their perturbations
        if self._world_size > 1:
            logger.warning(f"lmms_ac_llava: data parallel, rank {self._rank} of {self._world_size} on {self._device}")

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: Optional[dict] = None) -> "LmmsAcLlava":
        """lmms-eval's entry point: ``--model_args`` kept as strings (each parsed by its annotation) plus
        ``--batch_size``/``--device``, which may also be given as model arguments."""
        return cls(**merge_arguments(split_arg_string(arg_string), additional_config))

    # ------------------------------------------------------------------ lmms-eval plumbing
    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    @property
    def tokenizer(self):
        return self.vlm.tokenizer

    @property
    def model(self):
        return self.vlm

    # ------------------------------------------------------------------ request preparation (RequestModel)
    def fetch_images(self, doc_to_visual, task: str, split: str, doc_id: int) -> List[Image.Image]:
        """A doc's images, decoded strictly (a bad image is logged with its doc id)."""
        if doc_to_visual is None:
            return []
        from lmms_ac.vlm.decode import fetch_visuals

        visuals = fetch_visuals(
            lambda: doc_to_visual(self.task_dict[task][split][doc_id]),
            f"task {task!r} split {split!r} doc {doc_id}",
            self.reported_docs,
        )
        visuals = [v for v in (visuals or []) if v is not None]
        for v in visuals:
            if not isinstance(v, Image.Image):
                raise TypeError(
                    f"task {task!r} doc {doc_id}: lmms_ac_llava takes images only, got {type(v).__name__} "
                    "(video/audio tasks need another model)"
                )
        return visuals

    def prompt(self, context: str, n_images: int) -> str:
        return build_prompt(context, n_images, self.prompt_format, self.vlm.tokenizer, self.system_prompt)

    def hook_for(self, task: str, doc_id: int) -> Any:
        return self.hook_factory.for_request(task, doc_id)

    @property
    def eos_text(self) -> Optional[str]:
        return self.vlm.tokenizer.eos_token

    # ------------------------------------------------------------------ requests
    def generate_until(self, requests: List[Instance]) -> List[str]:
        if self.prefix_sharing:  # same outputs; each image encoded and each prefix prefilled once
            from lmms_ac.models.shared_prefix import generate_until_shared

            return generate_until_shared(self, requests, unshared=self.generate_until_unshared)
        return self.generate_until_unshared(requests)

    def generate_until_unshared(self, requests: List[Instance]) -> List[str]:
        """Every request in full, batched by lmms-eval's collator (requests of one batch share ``gen_kwargs``)."""

        def order(args):  # longest prompts first, so the first batch shows the peak memory
            return -len(args[0]), args[0]

        indexed = [(r.args, i) for i, r in enumerate(requests)]
        collator = Collator([a for a, _ in indexed], order, grouping=True)
        position = {id(a): i for a, i in indexed}
        results: List[str] = []
        pbar = tqdm(total=len(requests), disable=self.rank != 0, desc="lmms_ac_llava generate")
        for chunk in collator.get_batched(n=self.batch_size, batch_fn=None):
            prepared = [prepare_generation(self, position[id(args)], args) for args in chunk]
            sampling = prepared[0].sampling
            texts = self.vlm.generate(
                [p.prompt for p in prepared],
                [p.images for p in prepared],
                [p.hook for p in prepared],
                max_new_tokens=sampling.max_new_tokens,
                until=list(sampling.stops),
                do_sample=sampling.do_sample,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                num_beams=sampling.num_beams,
            )
            for p, text in zip(prepared, texts):
                self.cache_hook.add_partial("generate_until", (p.context, p.gen_kwargs), text)
            results.extend(texts)
            pbar.update(len(chunk))
        pbar.close()
        return collator.get_original(results)

    def loglikelihood(self, requests: List[Instance]) -> List[Tuple[float, bool]]:
        if self.prefix_sharing:
            from lmms_ac.models.shared_prefix import loglikelihood_shared

            return loglikelihood_shared(self, requests, unshared=self.loglikelihood_unshared)
        return self.loglikelihood_unshared(requests)

    def loglikelihood_unshared(self, requests: List[Instance]) -> List[Tuple[float, bool]]:
        """Every request in full, in batches of ``batch_size`` in lmms-eval's order."""
        results: List[Tuple[float, bool]] = []
        pbar = tqdm(total=len(requests), disable=self.rank != 0, desc="lmms_ac_llava loglikelihood")
        for start in range(0, len(requests), self.batch_size):
            chunk = requests[start : start + self.batch_size]
            prepared = [prepare_loglikelihood(self, start + k, r.args) for k, r in enumerate(chunk)]
            results.extend(
                self.vlm.loglikelihood(
                    [p.prompt for p in prepared],
                    [p.continuation for p in prepared],
                    [p.images for p in prepared],
                    [p.hook for p in prepared],
                )
            )
            pbar.update(len(chunk))
        pbar.close()
        return results

    def generate_until_multi_round(self, requests) -> List[str]:
        raise NotImplementedError(
            "lmms_ac_llava does not implement generate_until_multi_round (multi-round tasks such as mmbench multi-turn "
            "variants); run single-round tasks, or use a model that supports it"
        )


MODEL_ARGS = sorted(p for p in inspect.signature(LmmsAcLlava.__init__).parameters if p not in ("self", "unknown"))
