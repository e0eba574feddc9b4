"""The score runs as library calls: typed settings in, a report of what was computed and what was found."""

from __future__ import annotations

import pytest

from lmms_ac.scores.run_c import ScoreCSettings, record_c_scores
from lmms_ac.testing.spair import PixelPatchEncoder, write_photo_fixture
from lmms_ac.vision import FAMILIES


@pytest.fixture
def testpix():
    snap = FAMILIES.snapshot()
    FAMILIES.register("testpix", lambda spec, **kwargs: PixelPatchEncoder(patch=int(spec.opts.get("patch", 8))))
    yield
    FAMILIES.restore(snap)


def test_record_c_scores_reports_computed_then_found(tmp_path, testpix):
    root = tmp_path / "spair"
    write_photo_fixture(root, photos=(("coffee", "cup"),))
    settings = ScoreCSettings(vision=("testpix:pix",), out=str(tmp_path / "s.csv"), spair=str(root), device="cpu")
    lines = []
    first = record_c_scores(settings, on_line=lines.append)
    assert first.computed == ["C"] and first.skipped == [] and first.variant == "testpix:pix"
    assert len(lines) == 1 and lines[0].endswith(f"(recorded in {settings.out})")
    again = record_c_scores(settings)
    assert again.computed == [] and again.skipped == ["C"] and again.rows[0]["value"] == first.rows[0]["value"]
    with pytest.raises(ValueError, match="nothing to score"):
        record_c_scores(ScoreCSettings(vision=("testpix:pix",), out=settings.out))
