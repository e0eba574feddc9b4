"""Synthetic images, the offline generator: caption every image of a task, regenerate it from the
caption with a fast text-to-image model, and store the result for the ``<base>_synthetic`` task.

    lmms-ac synthesize mme --to /data/synthetic            # BLIP captions, SDXL-Lightning 4 steps
    export LMMS_AC_SYNTHETIC=/data/synthetic
    lmms-eval --model lmms_ac_llava --tasks mme_synthetic ...

The layout written, and how the task reads it, are in :mod:`lmms_ac.robustness.synthetic_store`.

Components are pluggable: a *captioner* ``(images) -> captions``, a *text-to-image* model
``(prompts, seeds) -> images`` and a *similarity* ``(images_a, images_b) -> floats``; pass objects,
hub ids / local paths (loaded with transformers / diffusers when used), or for the captioner
``module:function``. Every generation is seeded from (seed, base task, image key), so results do
not depend on batching. Nothing heavy is imported with this module.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

from loguru import logger

from lmms_ac.images import jpeg_bytes
from lmms_ac.io import atomic_write_text, check_replaceable, provenance

from .context import stable_seed
from .synthetic_store import INFO_FILE, forget_store, store_key, synthetic_dir

DEFAULT_CAPTIONER = "Salesforce/blip-image-captioning-large"
DEFAULT_T2I = "ByteDance/SDXL-Lightning"
DEFAULT_CLIP = "openai/clip-vit-large-patch14"
SDXL_BASE = "stabilityai/stable-diffusion-xl-base-1.0"
LIGHTNING_REPO = "ByteDance/SDXL-Lightning"
LIGHTNING_ALIASES = {"bytedance/sdxl-lightning", "stabilityai/sdxl-lightning", "sdxl-lightning"}
DEFAULT_STEPS = 4
DEFAULT_GUIDANCE = 0.0

Captioner = Callable[[List[Any]], List[str]]
TextToImage = Callable[[List[str], List[int]], List[Any]]
Similarity = Callable[[List[Any], List[Any]], List[float]]


# ================================================================================== components
def _device(device: Optional[str]) -> str:
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _dtype(device: str, dtype: Optional[str] = None):
    import torch

    if dtype and dtype != "auto":
        return getattr(torch, dtype)
    return torch.float16 if str(device).startswith("cuda") else torch.float32


class HFCaptioner:
    """Image captioning with a transformers image-text-to-text model (BLIP by default).

    ``prompt``: optional text prefix (BLIP: conditional captioning, e.g. ``"a photography of"``).
    """

    def __init__(
        self,
        model_id: str = DEFAULT_CAPTIONER,
        device: Optional[str] = None,
        dtype: Optional[str] = None,
        prompt: Optional[str] = None,
        max_new_tokens: int = 40,
        trust_remote_code: bool = False,
    ):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.model_id, self.device = model_id, _device(device)
        self.prompt, self.max_new_tokens = prompt, int(max_new_tokens)
        self.processor = AutoProcessor.from_pretrained(model_id, trust_remote_code=trust_remote_code)
        self.model = (
            AutoModelForImageTextToText.from_pretrained(
                model_id, dtype=_dtype(self.device, dtype), trust_remote_code=trust_remote_code
            )
            .to(self.device)
            .eval()
        )

    def __call__(self, images: List[Any]) -> List[str]:
        import torch

        rgb = [im.convert("RGB") for im in images]
        kwargs: Dict[str, Any] = {"images": rgb, "return_tensors": "pt"}
        if self.prompt:
            kwargs.update(text=[self.prompt] * len(rgb), padding=True)
        inputs = self.processor(**kwargs).to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        texts = self.processor.batch_decode(out, skip_special_tokens=True)
        return [" ".join(t.split()) for t in texts]

    def __repr__(self) -> str:
        return f"HFCaptioner({self.model_id!r})"


def load_t2i_pipeline(spec: str, device: Optional[str] = None, dtype: Optional[str] = None, steps: int = DEFAULT_STEPS):
    """A diffusers text-to-image pipeline: SDXL-Lightning (``ByteDance/SDXL-Lightning``: its
    ``steps``-step UNet on the SDXL base, Euler trailing schedule) or any pipeline id / directory."""
    import torch

    device = _device(device)
    torch_dtype = _dtype(device, dtype)
    if spec.lower() in LIGHTNING_ALIASES:
        from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
        from huggingface_hub import hf_hub_download
        from safetensors.torch import load_file

        if steps not in (2, 4, 8):
            raise ValueError(f"SDXL-Lightning has 2-, 4- and 8-step UNets, not {steps}")
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(SDXL_BASE, subfolder="unet"))
        unet.load_state_dict(load_file(hf_hub_download(LIGHTNING_REPO, f"sdxl_lightning_{steps}step_unet.safetensors")))
        pipe = StableDiffusionXLPipeline.from_pretrained(
            SDXL_BASE,
            unet=unet.to(dtype=torch_dtype),
            torch_dtype=torch_dtype,
            variant="fp16" if torch_dtype == torch.float16 else None,
        )
        pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    else:
        from diffusers import DiffusionPipeline

        pipe = DiffusionPipeline.from_pretrained(spec, torch_dtype=torch_dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


class DiffusersT2I:
    """``(prompts, seeds) -> images`` with a diffusers pipeline (or a spec for :func:`load_t2i_pipeline`)."""

    def __init__(
        self,
        pipeline: Any = DEFAULT_T2I,
        steps: int = DEFAULT_STEPS,
        guidance: float = DEFAULT_GUIDANCE,
        size: Optional[int] = None,
        device: Optional[str] = None,
        dtype: Optional[str] = None,
    ):
        self.spec = pipeline if isinstance(pipeline, str) else type(pipeline).__name__
        self.pipe = load_t2i_pipeline(pipeline, device, dtype, steps) if isinstance(pipeline, str) else pipeline
        self.steps, self.guidance, self.size = int(steps), float(guidance), size

    def __call__(self, prompts: List[str], seeds: List[int]) -> List[Any]:
        import torch

        generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
        kwargs: Dict[str, Any] = {
            "prompt": list(prompts),
            "num_inference_steps": self.steps,
            "guidance_scale": self.guidance,
            "generator": generators,
        }
        if self.size:
            kwargs.update(height=int(self.size), width=int(self.size))
        return list(self.pipe(**kwargs).images)

    def __repr__(self) -> str:
        return f"DiffusersT2I({self.spec!r}, steps={self.steps}, guidance={self.guidance})"


class ClipSimilarity:
    """Cosine similarity of CLIP image embeddings of image pairs (a CLIP model id or directory)."""

    def __init__(self, model_id: str = DEFAULT_CLIP, device: Optional[str] = None):
        from transformers import AutoImageProcessor, CLIPModel

        self.model_id, self.device = model_id, _device(device)
        self.processor = AutoImageProcessor.from_pretrained(model_id)
        self.model = CLIPModel.from_pretrained(model_id).to(self.device).eval()

    def embed(self, images: List[Any]):
        import torch

        inputs = self.processor(images=[im.convert("RGB") for im in images], return_tensors="pt").to(self.device)
        with torch.inference_mode():
            out = self.model.get_image_features(pixel_values=inputs["pixel_values"])
        emb = out if torch.is_tensor(out) else out.pooler_output
        return torch.nn.functional.normalize(emb.float(), dim=-1)

    def __call__(self, a: List[Any], b: List[Any]) -> List[float]:
        if len(a) != len(b):
            raise ValueError(f"similarity needs pairs, got {len(a)} and {len(b)} images")
        ea, eb = self.embed(list(a)), self.embed(list(b))
        return [float(x) for x in (ea * eb).sum(-1).cpu()]

    def __repr__(self) -> str:
        return f"ClipSimilarity({self.model_id!r})"


def _resolve(spec: Any) -> Any:
    """``module:attr`` -> the attribute (a class is instantiated without arguments)."""
    module, _, attr = spec.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj() if isinstance(obj, type) else obj


def make_captioner(spec: Any = DEFAULT_CAPTIONER, device: Optional[str] = None, **kwargs: Any) -> Captioner:
    if callable(spec):
        return spec
    if isinstance(spec, str) and ":" in spec and not os.path.exists(spec):
        return _resolve(spec)
    return HFCaptioner(spec, device=device, **kwargs)


def make_t2i(
    spec: Any = DEFAULT_T2I,
    steps: int = DEFAULT_STEPS,
    guidance: float = DEFAULT_GUIDANCE,
    size: Optional[int] = None,
    device: Optional[str] = None,
) -> TextToImage:
    if isinstance(spec, str) and ":" in spec and not os.path.exists(spec):
        spec = _resolve(spec)
    if isinstance(spec, str) or hasattr(spec, "components"):  # an id/path or a diffusers pipeline
        return DiffusersT2I(spec, steps=steps, guidance=guidance, size=size, device=device)
    return spec


def make_similarity(spec: Any = DEFAULT_CLIP, device: Optional[str] = None) -> Similarity:
    if callable(spec):
        return spec
    if isinstance(spec, str) and ":" in spec and not os.path.exists(spec):
        return _resolve(spec)
    return ClipSimilarity(spec, device=device)


def _describe(component: Any) -> str:
    if isinstance(component, str):
        return component
    return (
        repr(component)
        if type(component).__repr__ is not object.__repr__
        else getattr(component, "__qualname__", type(component).__name__)
    )


# ================================================================================== task images
def load_task(task: str, task_manager=None, include_path: Optional[List[str]] = None):
    """The lmms-eval task object of a single (clean) task."""
    from lmms_ac.plugin import load_task_or_group, require_tasks
    from lmms_ac.plugin import task_manager as make_task_manager

    manager = task_manager or make_task_manager(include_path, verbosity="INFO")
    require_tasks(manager, [task])
    loaded = load_task_or_group([task], manager)
    obj = loaded.get(task)
    if obj is None or isinstance(obj, dict):
        raise ValueError(
            f"{task!r} is a group or tag of lmms-eval; synthesize one task at a time (e.g. one of its subtasks)"
        )
    return obj


def _visual_list(task_obj, doc, doc_id: int) -> List[Any]:
    visuals = task_obj.doc_to_visual(doc) or []
    out = []
    for v in visuals:
        if v is None:
            continue
        if not hasattr(v, "tobytes") or not hasattr(v, "convert"):
            raise TypeError(
                f"{task_obj.config.task} doc {doc_id}: synthetic images need PIL images, got {type(v).__name__}"
            )
        out.append(v)
    return out


def task_images(task_obj, limit: Optional[int] = None, only: Optional[set] = None) -> Iterator[Tuple[int, List[Any]]]:
    """``(doc_id, images)`` over the task's evaluation documents (lmms-eval's doc order), the first
    ``limit`` of them, or only the ids in ``only``."""
    docs = task_obj.eval_docs
    n = len(docs) if limit is None else min(len(docs), int(limit))
    for doc_id in range(n) if only is None else sorted(d for d in only if d < n):
        yield doc_id, _visual_list(task_obj, docs[doc_id], doc_id)


# ================================================================================== synthesis
@dataclass
class SynthesisResult:
    directory: Path
    documents: int
    images: int
    similarity_mean: float
    info: Dict[str, Any]


def _jpeg(image) -> Dict[str, Any]:
    """A ``datasets.Image`` value: the image as RGB JPEG at quality 95 (Pillow's default 4:2:0)."""
    return {"bytes": jpeg_bytes(image.convert("RGB"), quality=95), "path": None}


def _decode(encoded: Dict[str, Any]):
    from PIL import Image

    return Image.open(io.BytesIO(encoded["bytes"])).convert("RGB")


def _features():
    import datasets

    return datasets.Features(
        {
            "key": datasets.Value("string"),
            "doc_ids": datasets.Sequence(datasets.Value("int64")),
            "image": datasets.Image(),
            "caption": datasets.Value("string"),
            "clip_similarity": datasets.Value("float32"),
            "width": datasets.Value("int32"),
            "height": datasets.Value("int32"),
        }
    )


def synthesize_images(
    items: Callable[[Optional[set]], Iterator[Tuple[int, List[Any]]]],
    out_dir: Union[str, os.PathLike],
    *,
    base: str,
    captioner: Captioner,
    t2i: TextToImage,
    similarity: Similarity,
    seed: int = 0,
    batch_size: int = 4,
    overwrite: bool = False,
    info: Optional[Dict[str, Any]] = None,
    shard_rows: int = 256,
) -> SynthesisResult:
    """Core of :func:`synthesize`: ``items(only)`` yields ``(doc_id, images)`` for every document
    (``only=None``) or for the ids in ``only``. It is called twice: once to collect the distinct
    images, once to fetch each for generation, so no image is held in memory for long."""
    import datasets
    from tqdm import tqdm

    out_dir = Path(out_dir)
    check_replaceable(out_dir, [INFO_FILE], "a synthetic set", overwrite=overwrite)  # never a folder of the user's
    # pass 1: distinct images and the documents that show them
    doc_ids: Dict[str, List[int]] = {}
    first: Dict[str, int] = {}
    n_docs = 0
    for doc_id, images in tqdm(items(None), desc=f"{base}: indexing images", leave=False):
        n_docs += 1
        for im in images:
            key = store_key(im)
            if key not in doc_ids:
                doc_ids[key], first[key] = [], doc_id
            if doc_id not in doc_ids[key]:
                doc_ids[key].append(doc_id)
    wanted = {doc: [k for k, d in first.items() if d == doc] for doc in set(first.values())}

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=str(out_dir.parent)))
    try:
        shards: List[Any] = []
        rows: Dict[str, List[Any]] = {k: [] for k in _features()}
        sims_all: List[float] = []

        def flush_rows() -> None:
            if rows["key"]:
                path = tmp / "shards" / f"{len(shards):05d}"
                datasets.Dataset.from_dict(rows, features=_features()).save_to_disk(str(path))
                shards.append(datasets.load_from_disk(str(path)))
                for v in rows.values():
                    v.clear()

        batch: List[Tuple[str, Any]] = []

        def run_batch() -> None:
            if not batch:
                return
            keys, sources = [k for k, _ in batch], [im for _, im in batch]
            captions = list(captioner(sources))
            if len(captions) != len(sources):
                raise ValueError(f"the captioner returned {len(captions)} captions for {len(sources)} images")
            generated = list(t2i(captions, [stable_seed(seed, base, k) for k in keys]))
            if len(generated) != len(sources):
                raise ValueError(f"the text-to-image model returned {len(generated)} images for {len(sources)} prompts")
            stored = [_jpeg(g) for g in generated]
            # the similarity of what the task will show: the stored (JPEG-decoded) image
            sims = [float(s) for s in similarity(sources, [_decode(e) for e in stored])]
            for key, src, cap, enc, sim in zip(keys, sources, captions, stored, sims):
                rows["key"].append(key)
                rows["doc_ids"].append(doc_ids[key])
                rows["image"].append(enc)
                rows["caption"].append(str(cap))
                rows["clip_similarity"].append(sim)
                rows["width"].append(int(src.size[0]))
                rows["height"].append(int(src.size[1]))
            sims_all.extend(sims)
            batch.clear()
            if len(rows["key"]) >= shard_rows:
                flush_rows()

        bar = tqdm(total=len(first), desc=f"{base}: caption -> generate -> CLIP", leave=False)
        for doc_id, images in items(set(wanted)):
            keyed = {store_key(i): i for i in images}
            for key in wanted.get(doc_id, []):
                batch.append((key, keyed[key]))
                if len(batch) >= batch_size:
                    bar.update(len(batch))
                    run_batch()
        bar.update(len(batch))
        run_batch()
        bar.close()
        flush_rows()
        final = tmp / "dataset"
        dataset = (
            datasets.concatenate_datasets(shards)
            if shards
            else datasets.Dataset.from_dict({k: [] for k in _features()}, features=_features())
        )
        dataset.save_to_disk(str(final))
        shards.clear()
        del dataset
        shutil.rmtree(tmp / "shards", ignore_errors=True)
        mean = sum(sims_all) / len(sims_all) if sims_all else float("nan")
        ordered = sorted(sims_all)
        summary = {
            **(info or {}),
            "base": base,
            "seed": int(seed),
            "documents": n_docs,
            "images": len(first),
            "clip_similarity": {
                "mean": mean,
                "median": ordered[len(ordered) // 2] if ordered else None,
                "min": ordered[0] if ordered else None,
                "max": ordered[-1] if ordered else None,
            },
        }
        summary["provenance"] = provenance(config={k: v for k, v in summary.items() if k != "clip_similarity"})
        atomic_write_text(final / INFO_FILE, json.dumps(summary, indent=2, default=str))
        if out_dir.exists():  # overwrite was allowed: swap, then drop the old copy with tmp
            os.rename(out_dir, tmp / "old")
        os.rename(final, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    forget_store(out_dir)
    logger.info(
        f"lmms-ac: {len(first)} synthetic images of {base} ({n_docs} documents) in {out_dir}; "
        f"mean CLIP similarity {mean:.3f}"
    )
    return SynthesisResult(out_dir, n_docs, len(first), mean, summary)


def synthesize(
    task: str,
    to: Union[str, os.PathLike],
    *,
    captioner: Any = DEFAULT_CAPTIONER,
    t2i: Any = DEFAULT_T2I,
    clip: Any = DEFAULT_CLIP,
    limit: Optional[int] = None,
    seed: int = 0,
    steps: int = DEFAULT_STEPS,
    guidance: float = DEFAULT_GUIDANCE,
    size: Optional[int] = None,
    batch_size: int = 4,
    device: Optional[str] = None,
    overwrite: bool = False,
    task_manager=None,
    include_path: Optional[List[str]] = None,
) -> SynthesisResult:
    """Caption and regenerate every image of ``task`` (a clean task, or its ``_synthetic`` variant)
    into ``<to>/<task>/``; the ``<task>_synthetic`` task reads it with ``LMMS_AC_SYNTHETIC=<to>``."""
    from .names import base_task

    base = base_task(task)
    task_obj = load_task(base, task_manager, include_path)
    out_dir = synthetic_dir(base, seed, to)
    check_replaceable(out_dir, [INFO_FILE], "a synthetic set", overwrite=overwrite)
    info = {
        "task": base,
        "captioner": _describe(captioner),
        "t2i": _describe(t2i),
        "clip": _describe(clip),
        "steps": int(steps),
        "guidance": float(guidance),
        "size": size,
        "limit": limit,
    }
    cap = make_captioner(captioner, device=device)
    gen = make_t2i(t2i, steps=steps, guidance=guidance, size=size, device=device)
    sim = make_similarity(clip, device=device)
    return synthesize_images(
        lambda only: task_images(task_obj, limit, only),
        out_dir,
        base=base,
        captioner=cap,
        t2i=gen,
        similarity=sim,
        seed=seed,
        batch_size=batch_size,
        overwrite=overwrite,
        info=info,
    )


__all__ = [
    "DEFAULT_CAPTIONER",
    "DEFAULT_T2I",
    "DEFAULT_CLIP",
    "HFCaptioner",
    "DiffusersT2I",
    "ClipSimilarity",
    "load_t2i_pipeline",
    "make_captioner",
    "make_t2i",
    "make_similarity",
    "synthesize",
    "synthesize_images",
    "SynthesisResult",
    "task_images",
    "load_task",
]
