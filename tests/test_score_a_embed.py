"""A_embed per benchmark: seeded images of the benchmark's own data through the lmms-eval task."""

from __future__ import annotations

import csv

import pytest
from PIL import Image

from lmms_ac.scores.alignment import a_embed_name, embedding_alignment, score_a_embed
from lmms_ac.scores.benchmark_images import images_from_task


class FakeTask:
    """An lmms-eval task's surface: eval_docs + doc_to_visual (some docs without an image)."""

    task_name = "fake"

    def __init__(self, n=10):
        self.eval_docs = [
            {"i": i, "image": Image.new("RGB", (8 + i, 8), (i * 20, 0, 0)) if i % 3 else None} for i in range(n)
        ]

    def doc_to_visual(self, doc):
        return [doc["image"], Image.new("RGB", (2, 2))] if doc["image"] is not None else []


def test_images_from_task_seeded_skips_imageless_docs():
    t = FakeTask()
    a, b, c = images_from_task(t, 4, seed=0), images_from_task(t, 4, seed=0), images_from_task(t, 4, seed=1)
    sizes = lambda ims: [im.size for im in ims]  # noqa: E731
    assert sizes(a) == sizes(b) and sizes(a) != sizes(c)
    assert all(im.size != (2, 2) for im in a)  # the first image of each doc
    assert len(images_from_task(t, 100)) == 6  # only 6 docs have an image: all of them, with a warning
    with pytest.raises(ValueError, match="no doc has an image"):
        images_from_task(type("T", (), {"eval_docs": [{}], "doc_to_visual": lambda self, d: []})(), 3)


def test_score_names():
    assert a_embed_name("mme") == "A_embed_mme" and a_embed_name() == "A_embed"
    with pytest.raises(ValueError):
        a_embed_name("a,b")


@pytest.fixture(scope="module")
def reference_vlm(tmp_path_factory):
    from lmms_ac.testing.tiny import make_llava_hf
    from lmms_ac.vlm.loaders import load_vlm

    return load_vlm(make_llava_hf(str(tmp_path_factory.mktemp("ref") / "tiny-ref"), seed=1))


@pytest.mark.slow
def test_a_embed_differs_between_benchmarks(llava_hf_vlm, reference_vlm, mirror_dir, monkeypatch):
    monkeypatch.setenv("LMMS_AC_DATASETS", mirror_dir)
    mme = score_a_embed(llava_hf_vlm, [reference_vlm], "mme", n=4, seed=0)
    seed = score_a_embed(llava_hf_vlm, [reference_vlm], "seed_image", n=4, seed=0)
    assert mme["score"] == "A_embed_mme" and seed["score"] == "A_embed_seed_image" and mme["n"] == seed["n"] == 4
    assert mme["value"] != pytest.approx(seed["value"], abs=1e-6)
    from lmms_ac.scores.benchmark_images import benchmark_images

    again = embedding_alignment(llava_hf_vlm, [reference_vlm], benchmark_images("mme", 4, 0))
    assert again == pytest.approx(mme["value"])  # seeded


@pytest.mark.slow
def test_cli_one_row_per_benchmark(llava_hf_dir, reference_vlm, mirror_dir, tmp_path, monkeypatch, capsys):
    from lmms_ac.cli import main
    from lmms_ac.testing.tiny import make_llava_hf

    monkeypatch.setenv("LMMS_AC_DATASETS", mirror_dir)
    ref = make_llava_hf(str(tmp_path / "ref"), seed=1)
    out = tmp_path / "scores.csv"
    args = [
        "score-a",
        "--pretrained",
        llava_hf_dir,
        "--method",
        "embed",
        "--reference",
        ref,
        "--benchmark",
        "mme,seed_image",
        "--n",
        "3",
        "--out",
        str(out),
        "--variant",
        "tiny",
    ]
    assert main(args) == 0
    rows = list(csv.DictReader(open(out)))
    assert [r["score"] for r in rows] == ["A_embed_mme", "A_embed_seed_image"]
    assert rows[0]["value"] != rows[1]["value"]
    assert main(args) == 0 and "already in" in capsys.readouterr().out
    assert main(["score-a", "--pretrained", llava_hf_dir, "--benchmark", "mme", "--out", str(out)]) == 2
    assert "--method embed" in capsys.readouterr().err
