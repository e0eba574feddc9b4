"""Issue 20: an image that cannot be decoded (garbage, a decompression bomb, an image over Pillow's pixel
limit) is named by its doc, in the model, in ``datasets --verify`` and when lmms-eval builds a task that has
it at doc 0; ``--verify`` reports it instead of crashing."""

from __future__ import annotations

import io
import shutil
import struct
import zlib

import pytest
from PIL import Image

from lmms_ac.vlm.decode import fetch_visuals


def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A few bytes of PNG whose header claims ``width`` x ``height`` pixels (Pillow refuses it on open)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def png(size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


def opened(blob: bytes):
    def fetch():
        image = Image.open(io.BytesIO(blob))
        image.load()
        return [image]

    return fetch


@pytest.fixture()
def logs():
    from loguru import logger

    records = []
    handle = logger.add(lambda m: records.append(str(m)), level="WARNING")
    yield records
    logger.remove(handle)


# ------------------------------------------------------------------ the model's image fetch
def test_a_decompression_bomb_stops_the_run_naming_the_doc(logs):
    with pytest.raises(RuntimeError, match=r"task 'mme' split 'test' doc 0: image cannot be decoded \(Decompress"):
        fetch_visuals(opened(bomb_png()), "task 'mme' split 'test' doc 0")
    assert any("doc 0" in r for r in logs)


def test_an_image_over_the_pixel_limit_is_logged_by_doc_and_decoded(logs, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # 64 x 48 = 3072: over the limit, under twice it
    with pytest.warns(Image.DecompressionBombWarning):  # the lenient pass decodes it, as lmms-eval would
        images = fetch_visuals(opened(png()), "task 'mme' split 'test' doc 41")
    assert images[0].size == (64, 48)
    assert any("doc 41: image failed to decode (DecompressionBombWarning" in r for r in logs)


def test_other_pillow_errors_name_the_doc_and_task_bugs_pass_through():
    def value_error():
        raise ValueError("tile cannot extend outside image")

    with pytest.raises(RuntimeError, match=r"doc 3: image cannot be decoded \(ValueError: tile cannot extend"):
        fetch_visuals(value_error, "task 't' split 'test' doc 3")

    def task_bug():
        raise KeyError("image")  # a doc_to_visual bug is not reported as a bad image

    with pytest.raises(KeyError):
        fetch_visuals(task_bug, "task 't' split 'test' doc 4")


# ------------------------------------------------------------------ datasets --verify
def _dataset(blobs):
    import datasets

    records = [{"image": {"bytes": b, "path": None}, "question_id": f"q{i}"} for i, b in enumerate(blobs)]
    features = datasets.Features({"image": datasets.Image(), "question_id": datasets.Value("string")})
    return datasets.Dataset.from_list(records, features=features)


def test_verify_reports_garbage_bombs_and_oversized_images_by_doc(monkeypatch):
    from lmms_ac.verify_images import verify_dataset

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)
    report = verify_dataset(_dataset([b"garbage", bomb_png(), png(), png((20, 20))]), "t", "test")
    assert report.docs == 4 and report.images == 4
    reasons = {b.doc_id: b.reason for b in report.bad}
    assert sorted(reasons) == [0, 1, 2]
    assert reasons[0].startswith("UnidentifiedImageError")
    assert reasons[1].startswith("DecompressionBombError")
    assert reasons[2].startswith("DecompressionBombWarning")


def test_tasks_are_built_with_a_placeholder_for_an_undecodable_image():
    from lmms_ac.verify_images import placeholder_for_undecodable

    ds = _dataset([bomb_png(), png()])
    with placeholder_for_undecodable():
        assert ds[0]["image"].size == (1, 1) and ds[1]["image"].size == (64, 48)
    with pytest.raises(Image.DecompressionBombError):
        ds[0]  # only while the tasks are built


# ------------------------------------------------------------------ a real task with the bad image at doc 0
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["garbage", "bomb"])
def test_bad_image_at_doc_0_names_the_doc_and_verify_reports_it(kind, tmp_path, monkeypatch, capsys):
    import datasets

    from lmms_ac.cli import main
    from lmms_ac.local_datasets import dataset_key
    from lmms_ac.testing import datasets as tiny

    tiny.write_mirror(str(tmp_path / "mirror"))
    path = tmp_path / "mirror" / dataset_key(tiny.MME_PATH)
    ds = datasets.load_from_disk(str(path))["test"]
    raw = ds.cast_column("image", datasets.Image(decode=False))
    records = raw.to_list()
    records[0]["image"] = {"bytes": b"not an image" if kind == "garbage" else bomb_png(), "path": None}
    fixed = datasets.Dataset.from_list(records, features=raw.features).cast(ds.features)
    shutil.rmtree(path)
    datasets.DatasetDict({"test": fixed}).save_to_disk(str(path))
    monkeypatch.setenv("LMMS_AC_DATASETS", str(tmp_path / "mirror"))

    assert main(["datasets", "mme", "--verify"]) == 1
    out = capsys.readouterr().out
    bad = [line.split("\t") for line in out.splitlines() if line.startswith("BAD\t")]
    expected = "UnidentifiedImageError" if kind == "garbage" else "DecompressionBombError"
    assert [(b[1], b[2]) for b in bad] == [("mme", "doc_id=0")] and bad[0][5].startswith(expected), out

    import lmms_eval.models  # noqa: F401  (installs the plugin hooks, as the lmms-eval CLI does)
    from lmms_eval.tasks import TaskManager, get_task_dict

    with pytest.raises(ValueError, match=rf"task 'mme' split 'test' doc 0 cannot be read \({expected}"):
        get_task_dict(["mme"], TaskManager(verbosity="ERROR"))


@pytest.mark.slow
def test_verify_numbers_docs_as_lmms_eval_does_after_process_docs(tmp_path, monkeypatch, capsys):
    """SEED's process_docs drops video questions: with a video first, the bad image's doc id is one less than
    its row in the stored split, and that doc id is the one lmms-eval logs (lmms-eval replaces each split by
    its processed docs, which --verify reads)."""
    import datasets

    from lmms_ac.cli import main
    from lmms_ac.local_datasets import dataset_key
    from lmms_ac.testing import datasets as tiny

    tiny.write_mirror(str(tmp_path / "mirror"))
    path = tmp_path / "mirror" / dataset_key(tiny.SEED_PATH)
    ds = datasets.load_from_disk(str(path))["test"]
    raw = ds.cast_column("image", datasets.Sequence(datasets.Image(decode=False)))
    records = raw.to_list()
    records = [records[-1]] + records[:-1]  # a video question first
    assert records[0]["data_type"] == "video" and records[3]["data_type"] == "image"
    records[3]["image"] = [{"bytes": b"not an image", "path": None}]
    fixed = datasets.Dataset.from_list(records, features=raw.features).cast(ds.features)
    shutil.rmtree(path)
    datasets.DatasetDict({"test": fixed}).save_to_disk(str(path))
    monkeypatch.setenv("LMMS_AC_DATASETS", str(tmp_path / "mirror"))

    assert main(["datasets", "seed", "--verify"]) == 1
    out = capsys.readouterr().out
    bad = [line.split("\t") for line in out.splitlines() if line.startswith("BAD\t")]
    assert [(b[1], b[2], b[3]) for b in bad] == [("seed", "doc_id=2", f"question_id={records[3]['question_id']}")]
    assert "seed\ttest\t6\t" in out  # the 6 image questions lmms-eval evaluates, not the 8 stored rows
