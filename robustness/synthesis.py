"""Synthetic images: caption every image of a task, regenerate it from the caption with a fast
text-to-image model, and evaluate the ``<base>_synthetic`` task on the regenerated images.

    lmms-ac synthesize mme --to /data/synthetic            # BLIP captions, SDXL-Lightning 4 steps
    export LMMS_AC_SYNTHETIC=/data/synthetic
    lmms-eval --model lmms_ac_llava --tasks mme_synthetic ...

Layout: ``<root>/<base task>/`` (seed 0; seed k: ``<root>/<base task>_s<k>/``) is a
``datasets.save_to_disk`` dataset with one row per distinct source image:

=================  =====================================================================
``key``            hash of the source image (mode, size, pixels): how the task finds it
``doc_ids``        indices (in the task's evaluation order) of the documents that show it
``image``          the regenerated image (JPEG)
``caption``        the caption it was generated from
``clip_similarity``  CLIP image-image cosine similarity of source vs regenerated
``width/height``   the source image's size
=================  =====================================================================

plus ``synthesis.json`` (models, steps, seed, limit, similarity summary, provenance). Keys are
content hashes, so the task's ``doc_to_visual`` (``synthetic_visuals``) needs no document id and
a document whose image was not synthesized (``--limit``) is an error, never a silent clean image.

Components are pluggable: a *captioner* ``(images) -> captions``, a *text-to-image* model
``(prompts, seeds) -> images`` and a *similarity* ``(images_a, images_b) -> floats``; pass objects,
hub ids / local paths (loaded with transformers / diffusers when used), or for the captioner
``module:function``. Every generation is seeded from (seed, base task, image key), so results do
not depend on batching. Nothing heavy is imported with this module.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

from loguru import logger

from lmms_ac.io import OutputExistsError, atomic_write_text, provenance

from .context import stable_seed

SYNTHETIC_ENV = "LMMS_AC_SYNTHETIC"
DEFAULT_CAPTIONER = "Salesforce/blip-image-captioning-large"
DEFAULT_T2I = "ByteDance/SDXL-Lightning"
DEFAULT_CLIP = "openai/clip-vit-large-patch14"
SDXL_BASE = "stabilityai/stable-diffusion-xl-base-1.0"
LIGHTNING_REPO = "ByteDance/SDXL-Lightning"
LIGHTNING_ALIASES = {"bytedance/sdxl-lightning", "stabilityai/sdxl-lightning", "sdxl-lightning"}
DEFAULT_STEPS = 4
DEFAULT_GUIDANCE = 0.0
INFO_FILE = "synthesis.json"

Captioner = Callable[[List[Any]], List[str]]
TextToImage = Callable[[List[str], List[int]], List[Any]]
Similarity = Callable[[List[Any], List[Any]], List[float]]


# ================================================================================== keys and layout
def image_key(image) -> str:
    """Content hash of a PIL image (mode, size and pixels)."""
    h = hashlib.sha1()
    h.update(f"{image.mode}|{image.size[0]}x{image.size[1]}|".encode())
    h.update(image.tobytes())
    return h.hexdigest()[:24]


def synthetic_root(root: Optional[Union[str, os.PathLike]] = None) -> Optional[Path]:
    value = root if root is not None else os.environ.get(SYNTHETIC_ENV)
    return Path(value).expanduser() if value else None


def synthetic_dir(base: str, seed: int = 0, root: Optional[Union[str, os.PathLike]] = None) -> Path:
    """``<root>/<base>`` (seed 0) or ``<root>/<base>_s<seed>``; root defaults to ``$LMMS_AC_SYNTHETIC``."""
    r = synthetic_root(root)
    if r is None:
        raise FileNotFoundError(f"{SYNTHETIC_ENV} is not set")
    return r / (base if int(seed) == 0 else f"{base}_s{int(seed)}")


def _make_command(base: str, seed: int, root: Any = "DIR") -> str:
    return f"lmms-ac synthesize {base} --to {root}" + (f" --seed {seed}" if seed else "")


class SyntheticStore:
    """The regenerated images of one base task, looked up by source-image key."""

    def __init__(self, directory: Union[str, os.PathLike]):
        import datasets

        self.directory = Path(directory)
        self.dataset = datasets.load_from_disk(str(self.directory))
        self.rows = {k: i for i, k in enumerate(self.dataset["key"])}
        info_path = self.directory / INFO_FILE
        self.info = json.loads(info_path.read_text()) if info_path.is_file() else {}

    def __len__(self) -> int:
        return len(self.rows)

    def row(self, key: str) -> Dict[str, Any]:
        return self.dataset[self.rows[key]]

    def lookup(self, image, task: str = "") -> Any:
        key = image_key(image)
        if key not in self.rows:
            limit = self.info.get("limit")
            command = _make_command(
                self.info.get("base", "<task>"), int(self.info.get("seed", 0) or 0), self.directory.parent
            )
            raise KeyError(
                f"{task or 'synthetic task'}: an image of this document is not in the synthetic set {self.directory} "
                f"({len(self.rows)} images{f', made with --limit {limit}' if limit else ''}); rerun "
                f"`{command}` "
                "without --limit (or evaluate with a --limit no larger than the one used)"
            )
        return self.dataset[self.rows[key]]["image"].convert("RGB")


_STORES: Dict[str, SyntheticStore] = {}
_LOCK = threading.RLock()


def load_store(
    base: str, seed: int = 0, task: str = "", root: Optional[Union[str, os.PathLike]] = None
) -> SyntheticStore:
    """The store of ``base`` (cached per process); a clear error naming the command when missing."""
    task = task or f"{base}_synthetic"
    r = synthetic_root(root)
    if r is None:
        raise FileNotFoundError(
            f"task {task!r} evaluates on regenerated images, but {SYNTHETIC_ENV} is not set. Make them with "
            f"`{_make_command(base, seed)}`, then `export {SYNTHETIC_ENV}=DIR`"
        )
    directory = synthetic_dir(base, seed, r)
    with _LOCK:
        key = str(directory.resolve())
        if key not in _STORES:
            if not ((directory / "dataset_info.json").is_file() or (directory / "dataset_dict.json").is_file()):
                raise FileNotFoundError(
                    f"task {task!r} needs the synthetic images of {base!r} at {directory}, which do not exist; make "
                    f"them with `{_make_command(base, seed, r)}`"
                )
            _STORES[key] = SyntheticStore(directory)
        return _STORES[key]


def synthetic_visuals(base: str, visuals: Any, seed: int = 0, task: str = "") -> Any:
    """``doc_to_visual`` of ``<base>_synthetic``: each source image replaced by its regenerated one."""
    if not visuals:
        return visuals
    store = load_store(base, seed, task)
    out = []
    for v in visuals:
        if not hasattr(v, "tobytes"):
            raise TypeError(f"{task or base}: synthetic images replace PIL images only, got {type(v).__name__}")
        out.append(store.lookup(v, task))
    return out


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


def _jpeg(image, quality: int = 95) -> Dict[str, Any]:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=quality)
    return {"bytes": buf.getvalue(), "path": None}


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
    if out_dir.exists() and not overwrite:
        raise OutputExistsError(f"{out_dir} already exists; pass --overwrite to replace it")
    # pass 1: distinct images and the documents that show them
    doc_ids: Dict[str, List[int]] = {}
    first: Dict[str, int] = {}
    n_docs = 0
    for doc_id, images in tqdm(items(None), desc=f"{base}: indexing images", leave=False):
        n_docs += 1
        for im in images:
            key = image_key(im)
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
            keyed = {image_key(i): i for i in images}
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
    with _LOCK:
        _STORES.pop(str(out_dir.resolve()), None)
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
    if out_dir.exists() and not overwrite:
        raise OutputExistsError(f"{out_dir} already exists; pass --overwrite to replace it")
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
    "SYNTHETIC_ENV",
    "DEFAULT_CAPTIONER",
    "DEFAULT_T2I",
    "DEFAULT_CLIP",
    "image_key",
    "synthetic_dir",
    "SyntheticStore",
    "load_store",
    "synthetic_visuals",
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
