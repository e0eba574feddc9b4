"""Tiny datasets in the real schemas of lmms-eval's benchmarks, saved as local mirrors.

``write_mirror(dir)`` writes ``lmms-lab-encoder__MME`` and ``lmms-lab-encoder__SEED-Bench`` under
``dir`` (``datasets.save_to_disk`` copies named as ``lmms_ac.local_datasets`` expects), so the real
``mme`` and ``seed`` tasks load them with ``LMMS_AC_DATASETS=dir``. Images are real photographs
shipped by scikit-image when it is installed, else seeded noise; sizes and modes vary on purpose.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import numpy as np
from PIL import Image

from lmms_ac.local_datasets import dataset_key

MME_PATH = "lmms-lab-encoder/MME"
SEED_PATH = "lmms-lab-encoder/SEED-Bench"


def sample_images(n: int, seed: int = 0) -> List[Image.Image]:
    """``n`` images of assorted sizes and modes (RGB, L, RGBA, P), photographs when available."""
    rng = np.random.RandomState(seed)
    photos: List[Image.Image] = []
    try:
        from skimage import data as skdata

        for name in ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins"):
            photos.append(Image.fromarray(getattr(skdata, name)()))
    except Exception:  # scikit-image is a test extra; noise images keep the schema right
        pass
    out = []
    for i in range(n):
        if photos:
            im = photos[i % len(photos)]
        else:
            im = Image.fromarray((rng.rand(48 + 8 * i, 64, 3) * 255).astype("uint8"))
        w, h = im.size
        scale = 64 / max(w, h)
        im = im.resize((max(1, int(w * scale)), max(1, int(h * scale))))
        mode = ("RGB", "L", "RGBA", "P")[i % 4]
        out.append(im.convert(mode))
    return out


def mme_records(n_images: int = 6) -> List[Dict]:
    """Two yes/no questions per image (MME scores pairs), categories in perception and cognition."""
    categories = ["existence", "color", "OCR", "count", "commonsense_reasoning", "code_reasoning"]
    records = []
    for i, image in enumerate(sample_images(n_images)):
        category = categories[i % len(categories)]
        qid = f"{category}/{i:04d}.png"
        for answer in ("Yes", "No"):
            records.append(
                {
                    "question_id": qid,
                    "image": image.convert("RGB"),
                    "category": category,
                    "answer": answer,
                    "question": f"Is there a {'cat' if answer == 'Yes' else 'dog'} in this image? "
                    "Please answer yes or no.",
                }
            )
    return records


def seed_records(n_image: int = 6, n_video: int = 2) -> List[Dict]:
    images = sample_images(n_image + n_video, seed=1)
    records = []
    for i in range(n_image + n_video):
        is_video = i >= n_image
        records.append(
            {
                "answer": "ABCD"[i % 4],
                "choice_a": "a cat",
                "choice_b": "a dog",
                "choice_c": "a car",
                "choice_d": "a tree",
                "data_id": f"{i}.jpg",
                "data_type": "video" if is_video else "image",
                "question": "What is the main object in the image?",
                "question_id": str(100 + i),
                "question_type_id": 1 + i % 9,
                "segment": [0, 1] if is_video else None,
                "image": [images[i].convert("RGB")] * (3 if is_video else 1),
            }
        )
    return records


def _save(records: List[Dict], features, target: Path) -> Path:
    import datasets

    ds = datasets.DatasetDict({"test": datasets.Dataset.from_list(records, features=features)})
    ds.save_to_disk(str(target))
    return target


def write_mme_copy(directory: str, records: List[Dict]) -> Path:
    """``records`` in MME's schema, saved where the ``mme`` task reads its local copy under ``directory`` (a
    ``LMMS_AC_DATASETS`` root); returns that folder."""
    import datasets

    features = datasets.Features(
        {
            "question_id": datasets.Value("string"),
            "image": datasets.Image(),
            "question": datasets.Value("string"),
            "answer": datasets.Value("string"),
            "category": datasets.Value("string"),
        }
    )
    return _save(records, features, Path(directory) / dataset_key(MME_PATH))


def write_mirror(directory: str) -> Dict[str, Path]:
    """Write the MME and SEED-Bench copies; returns task -> directory."""
    import datasets

    root = Path(directory)
    seed_features = datasets.Features(
        {
            "answer": datasets.Value("string"),
            "choice_a": datasets.Value("string"),
            "choice_b": datasets.Value("string"),
            "choice_c": datasets.Value("string"),
            "choice_d": datasets.Value("string"),
            "data_id": datasets.Value("string"),
            "data_type": datasets.Value("string"),
            "question": datasets.Value("string"),
            "question_id": datasets.Value("string"),
            "question_type_id": datasets.Value("int64"),
            "segment": datasets.Sequence(datasets.Value("int64")),
            "image": datasets.Sequence(datasets.Image()),
        }
    )
    return {
        "mme": write_mme_copy(directory, mme_records()),
        "seed": _save(seed_records(), seed_features, root / dataset_key(SEED_PATH)),
    }


def write_llava_pretrain(directory: str, n: int = 6) -> Dict[str, str]:
    """A tiny LLaVA-558K: ``blip_laion_cc_sbu_558k.json`` plus its image folder."""
    import json

    root = Path(directory)
    (root / "images" / "00000").mkdir(parents=True, exist_ok=True)
    captions = [
        "a cat sitting on a mat",
        "a red car on the road",
        "two people in the picture",
        "a photo of a dog",
        "a blue sky with clouds",
        "a green tree in a field",
        "a yellow flower",
        "a black and white photo",
    ]
    records = []
    for i, im in enumerate(sample_images(n, seed=2)):
        rel = f"00000/{i:09d}.jpg"
        im.convert("RGB").save(root / "images" / rel)
        records.append(
            {
                "id": f"{i:09d}",
                "image": rel,
                "conversations": [
                    {"from": "human", "value": "<image>\nWrite a terse but informative summary of the picture."},
                    {"from": "gpt", "value": captions[i % len(captions)]},
                ],
            }
        )
    (root / "blip_laion_cc_sbu_558k.json").write_text(json.dumps(records))
    return {"captions": str(root / "blip_laion_cc_sbu_558k.json"), "images": str(root / "images")}
