"""The model logs the doc id of an image that fails to decode (lmms-eval's LOAD_TRUNCATED_IMAGES would
otherwise score it silently) and names the doc when an image cannot be decoded at all."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageFile

from lmms_ac.testing.datasets import sample_images


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format=fmt)
    return buf.getvalue()


class DecodingDocs:
    """Docs whose images decode from bytes on every access, as a ``datasets`` Image column does."""

    def __init__(self, blobs):
        self.blobs = blobs

    def __len__(self):
        return len(self.blobs)

    def __getitem__(self, i):
        image = Image.open(io.BytesIO(self.blobs[i]))
        image.load()
        return {"image": image, "question": "What is it?"}


@pytest.fixture()
def logs():
    from loguru import logger

    records = []
    handle = logger.add(lambda m: records.append(str(m)), level="WARNING")
    yield records
    logger.remove(handle)


@pytest.fixture(scope="module")
def model(llava_hf_dir):
    from lmms_ac.models.lmms_ac_llava import LmmsAcLlava

    return LmmsAcLlava(pretrained=llava_hf_dir, device="cpu", variant="tiny")


def test_truncated_image_is_logged_by_doc_id_and_scored_as_lmms_eval_would(model, logs, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # what importing lmms_eval.api.task does
    good, other = sample_images(2, seed=1)
    jpeg = _encoded(other.resize((64, 48)), "JPEG")
    blobs = [_encoded(good, "PNG"), jpeg[: len(jpeg) * 2 // 3]]
    model.task_dict["bad_images"] = {"test": DecodingDocs(blobs)}
    visual = lambda doc: [doc["image"]]  # noqa: E731
    assert len(model.fetch_images(visual, "bad_images", "test", 0)) == 1
    assert not logs
    images = model.fetch_images(visual, "bad_images", "test", 1)
    assert len(images) == 1 and images[0].size == (64, 48)  # decoded leniently, as lmms-eval does
    assert any("task 'bad_images' split 'test' doc 1" in r and "image failed to decode" in r for r in logs)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the global setting is restored
    n = len(logs)
    model.fetch_images(visual, "bad_images", "test", 1)  # a doc is reported once
    assert len(logs) == n


def test_undecodable_image_is_an_error_naming_the_doc(model, logs):
    model.task_dict["garbage"] = {"test": DecodingDocs([b"not an image at all"])}
    with pytest.raises(RuntimeError, match="task 'garbage' split 'test' doc 0: image cannot be decoded"):
        model.fetch_images(lambda doc: [doc["image"]], "garbage", "test", 0)
    assert any("doc 0" in r for r in logs)
