"""MME-schema datasets with many questions per image, for shared-prefix tests and benchmarks.

``mme_many_questions(n_images, per_image)`` gives records in MME's schema (``question_id``, ``image``,
``question``, ``answer``, ``category``) whose questions about one image differ in wording and length
(they share the image and sometimes a few opening words), the way MME (2 per image), POPE (about 18)
and GQA (about 30) ask several questions about one picture. ``lmms_ac.testing.datasets.write_mme_copy``
saves them where the ``mme`` task reads its local copy (``LMMS_AC_DATASETS``).
"""

from __future__ import annotations

from typing import Dict, List

from PIL import Image

from lmms_ac.testing.datasets import sample_images

_OBJECTS = ["cat", "dog", "car", "tree", "person", "flower", "clock", "boat", "bird", "chair"]
_COLOURS = ["red", "green", "blue", "yellow", "black", "white"]
_TEMPLATES = [
    "Is there a {o} in this image?",
    "Is there a {c} {o} in the image?",
    "Are there two {o}s in the picture?",
    "Is the {o} on the left side of the image?",
    "Does this photo show a {o} next to a {o2}?",
    "Is the main object {c}?",
    "Is this a photo of a {o}?",
    "Can you see a {c} {o} and a {o2} here?",
]
_POST = " Please answer yes or no."


def distinct_images(n: int, seed: int = 0) -> List[Image.Image]:
    """``n`` RGB images that all differ in content (``sample_images`` repeats its few photographs):
    each gets a small square whose place and colour depend on its index."""
    out = []
    for i, image in enumerate(sample_images(n, seed=seed)):
        image = image.convert("RGB").copy()
        w, h = image.size
        x, y = (7 * i) % max(1, w - 6), (5 * i) % max(1, h - 6)
        image.paste((37 * i % 256, 91 * i % 256, 53 * i % 256), (x, y, x + 6, y + 6))
        out.append(image)
    return out


def mme_many_questions(n_images: int, per_image: int, seed: int = 0) -> List[Dict]:
    """``n_images * per_image`` records, the questions about one image adjacent (as in MME)."""
    records = []
    categories = ["existence", "color", "position", "count"]
    for i, image in enumerate(distinct_images(n_images, seed=seed)):
        for q in range(per_image):
            k = i * per_image + q
            text = _TEMPLATES[q % len(_TEMPLATES)].format(
                o=_OBJECTS[(q + i) % len(_OBJECTS)],
                o2=_OBJECTS[(q + 3) % len(_OBJECTS)],
                c=_COLOURS[(q // 2 + i) % len(_COLOURS)],
            )
            records.append(
                {
                    "question_id": f"{categories[i % 4]}/{i:04d}.png",
                    "image": image,
                    "category": categories[i % 4],
                    "answer": "Yes" if k % 2 == 0 else "No",
                    "question": text + _POST,
                }
            )
    return records
