"""Mutual k-nearest-neighbour alignment (Huh et al., 2024) of image and caption features.

For N image-caption pairs: u_i = the vision encoder's feature of image i (mean over its patch tokens;
the encoder's own resize + crop), v_i = a language model's feature of caption i at layer L (mean over
the caption's tokens, BOS excluded; ``hidden_states[L]`` of a text-only forward, 0 = embeddings).
S_u(i), S_v(i) are the k nearest neighbours of i among the other samples by cosine similarity; the
alignment is mean_i |S_u(i) & S_v(i)| / k. Independent spaces give about k / (N - 1); spaces related
by a rotation give 1. Each image and each caption is encoded once; all layers come from one forward.

Pairs come from DOCCI (``docci_descriptions.jsonlines``: ``example_id``, ``split``, ``image_file``,
``description``; images in ``images/``) or LLaVA-558K (``blip_laion_cc_sbu_558k.json``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from lmms_ac.scores.alignment import CaptionPair, read_llava_pretrain


def mutual_knn(u: torch.Tensor, v: torch.Tensor, k: int = 10) -> float:
    """Mean over samples of |kNN_u(i) & kNN_v(i)| / k, neighbours by cosine, self excluded."""
    if u.shape[0] != v.shape[0]:
        raise ValueError(f"mutual k-NN needs paired features, got {u.shape[0]} and {v.shape[0]} samples")
    n = u.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k must be in 1..N-1 = {n - 1}, got {k} (use more pairs or a smaller --k)")

    def neighbours(x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(x.double(), dim=-1)
        sims = x @ x.T
        sims.fill_diagonal_(float("-inf"))
        return sims.topk(k, dim=1).indices

    a, b = neighbours(u), neighbours(v.to(u.device))
    hits = torch.zeros(n, n, dtype=torch.bool, device=a.device)
    hits.scatter_(1, a, True)
    overlap = hits.gather(1, b).sum(1).double()
    return float((overlap / k).mean())


def read_docci(path: str, split: Optional[str] = None, image_root: Optional[str] = None) -> List[CaptionPair]:
    """DOCCI pairs: ``path`` is the dataset root or its ``docci_descriptions.jsonlines``; ``split`` keeps one split."""
    p = Path(path)
    file = p / "docci_descriptions.jsonlines" if p.is_dir() else p
    if not file.is_file():
        raise FileNotFoundError(
            f"{file} not found; pass the DOCCI root (with docci_descriptions.jsonlines and images/)"
        )
    root = Path(image_root) if image_root else file.parent / "images"
    pairs = []
    for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if split and rec.get("split") != split:
                continue
            pairs.append(CaptionPair(str(rec["example_id"]), root / rec["image_file"], str(rec["description"]).strip()))
        except (KeyError, ValueError, TypeError) as err:
            raise ValueError(f"{file}:{n} is not a DOCCI record (example_id, image_file, description): {err}") from err
    if not pairs:
        raise ValueError(f"{file} holds no pairs" + (f" of split {split!r}" if split else ""))
    return pairs


def read_caption_pairs(
    kind: str, path: str, image_root: Optional[str] = None, split: Optional[str] = None
) -> List[CaptionPair]:
    if kind == "docci":
        return read_docci(path, split, image_root)
    if kind == "llava558k":
        if not image_root:
            raise ValueError("--images is required for llava558k (the folder the json's 'image' paths are relative to)")
        return read_llava_pretrain(path, image_root)
    raise ValueError(f"unknown caption data kind {kind!r}; choose docci or llava558k")


@torch.inference_mode()
def image_features(vision, paths: Sequence[Path], batch_size: int = 16, progress: bool = True) -> torch.Tensor:
    """Mean-pooled patch tokens ``[N, D]`` (float32, CPU), one encoder pass per image."""
    feats = []
    for start in tqdm(range(0, len(paths), batch_size), desc="image features", disable=not progress):
        images = []
        for path in paths[start : start + batch_size]:
            if not Path(path).is_file():
                raise FileNotFoundError(f"image {path} not found; check the image folder")
            with Image.open(path) as im:
                im.load()
                images.append(im.copy())
        px = vision.preprocess(images).to(device=vision.device, dtype=vision.dtype)
        feats.append(vision.encode(px).float().mean(1).cpu())
    return torch.cat(feats)


@torch.inference_mode()
def caption_features(
    llm,
    tokenizer,
    captions: Sequence[str],
    layers: Sequence[int],
    batch_size: int = 16,
    max_tokens: int = 512,
    progress: bool = True,
    desc: str = "caption features",
) -> Dict[int, torch.Tensor]:
    """``{layer: [N, D]}``: mean over each caption's tokens (BOS excluded) of ``hidden_states[layer]``."""
    device = llm.get_input_embeddings().weight.device
    base = getattr(llm, getattr(llm, "base_model_prefix", "model"), llm)
    out: Dict[int, List[torch.Tensor]] = {layer: [] for layer in layers}
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for start in tqdm(range(0, len(captions), batch_size), desc=desc, disable=not progress):
        ids, keep = [], []
        for text in captions[start : start + batch_size]:
            t = tokenizer(text, add_special_tokens=True)["input_ids"][:max_tokens]
            bos = 1 if tokenizer.bos_token_id is not None and t and t[0] == tokenizer.bos_token_id else 0
            if len(t) <= bos:
                raise ValueError(f"caption {text!r} has no tokens")
            ids.append(t)
            keep.append(bos)
        longest = max(len(t) for t in ids)
        input_ids = torch.full((len(ids), longest), pad, dtype=torch.long)
        mask = torch.zeros(len(ids), longest, dtype=torch.long)
        for b, t in enumerate(ids):  # right padding
            input_ids[b, : len(t)] = torch.tensor(t)
            mask[b, : len(t)] = 1
        hidden = base(
            input_ids=input_ids.to(device), attention_mask=mask.to(device), output_hidden_states=True, use_cache=False
        ).hidden_states
        caption_mask = mask.clone()
        for b, skip in enumerate(keep):
            caption_mask[b, :skip] = 0
        w = caption_mask.to(device).unsqueeze(-1).float()
        for layer in layers:
            h = hidden[layer].float()
            out[layer].append(((h * w).sum(1) / w.sum(1)).cpu())
    return {layer: torch.cat(v) for layer, v in out.items()}


def knn_by_layer(u: torch.Tensor, captions: Dict[int, torch.Tensor], k: int = 10) -> Dict[int, float]:
    return {layer: mutual_knn(u, v, k) for layer, v in sorted(captions.items())}


def load_base_llm(name: str, device, dtype="auto"):
    """A base causal LM and its tokenizer (e.g. lmsys/vicuna-7b-v1.5 for LLaVA-1.5)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmms_ac.vlm.loaders import resolve_dtype

    llm = AutoModelForCausalLM.from_pretrained(name, dtype=resolve_dtype(dtype)).to(device).eval()
    return llm, AutoTokenizer.from_pretrained(name)
