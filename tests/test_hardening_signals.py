"""Issue 9, item 13: a C_ocr run that is cancelled (SIGTERM, as a batch scheduler does) leaves no
temporary folder and no claim behind; one killed outright (SIGKILL) leaves its folder next to the
output, and the next run of that row clears it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

DRIVER = textwrap.dedent("""
    import sys
    from lmms_ac.vision import FAMILIES
    from lmms_ac.testing.spair import PixelPatchEncoder
    FAMILIES.register("testpix", lambda spec, **kw: PixelPatchEncoder(patch=8))
    from lmms_ac.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _leftovers(out_dir: Path, tmp: Path) -> list:
    return sorted(str(p) for p in list(out_dir.glob(".scores.csv.*")) + list(tmp.glob("lmms_ac_ocr_*")))


def _start(tmp_path: Path):
    out_dir, tmp = tmp_path / "out", tmp_path / "tmp"
    out_dir.mkdir()
    tmp.mkdir()
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "TMPDIR": str(tmp)}
    proc = subprocess.Popen(
        [
            sys.executable,
            str(driver),
            "score-c",
            "--vision",
            "testpix:x",
            "--ocr",
            "--ocr-n",
            "3000",
            "--device",
            "cpu",
            "--out",
            str(out_dir / "scores.csv"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 240
    while time.time() < deadline:  # wait until pairs are being written
        if any(
            p.is_file()
            for d in list(out_dir.glob(".scores.csv.*.ocr-work")) + list(tmp.glob("lmms_ac_ocr_*"))
            for p in d.rglob("*.jpg")
        ):
            break
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("the OCR run never started writing pairs")
    return proc, out_dir, tmp


@pytest.mark.slow
def test_sigterm_leaves_no_temporary_folder(tmp_path):
    proc, out_dir, tmp = _start(tmp_path)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) != 0
    assert _leftovers(out_dir, tmp) == []
    assert not (out_dir / "scores.csv").exists()


@pytest.mark.slow
def test_sigkill_leftovers_sit_next_to_the_output_and_are_cleared(tmp_path):
    from lmms_ac.scores.run_c import ocr_workdir

    proc, out_dir, tmp = _start(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait(60)
    left = list(out_dir.glob(".scores.csv.*.ocr-work"))
    assert len(left) == 1 and list(tmp.iterdir()) == []  # nothing in the system temp folder
    from lmms_ac.scores.ocr_pairs import OcrPairsConfig

    config = {"dataset": "ocr_pairs", **OcrPairsConfig(n=3000, seed=0).to_config(), "method": "argmax", "alpha": 0.1}
    with ocr_workdir(str(out_dir / "scores.csv"), "testpix:x", "testpix:x", config) as work:
        assert work == left[0] and list(work.iterdir()) == []  # the next run of that row starts clean
    assert not left[0].exists()
