"""The report in a real browser: headless Chromium opens the page, every section renders, sorting and
filtering work, no JavaScript error is raised; a screenshot is saved under the test's folder.

Needs Chromium and its driver (Debian: ``apt-get install chromium chromium-driver``) and the
``selenium`` package; skips with the reason when one is missing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("LMMS_AC_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = os.environ.get("LMMS_AC_CHROMEDRIVER") or shutil.which("chromedriver")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
]
SECTIONS = ["leaderboard", "law", "policy", "robustness", "maps", "provenance"]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    if not CHROMIUM:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium chromium-driver)")
    if not CHROMEDRIVER:
        pytest.skip("chromedriver is not installed (Debian: apt-get install chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for f in FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        opts.add_argument(f)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    from lmms_ac.report import Options, build_report
    from lmms_ac.testing.results_fixture import write_study

    root = tmp_path_factory.mktemp("report")
    table, scores = write_study(root)
    return build_report(table, scores, root / "report.html", options=Options(policy_runs=30))


def _column(driver, table_id: str, index: int):
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#' + arguments[0] + ' tbody tr'))"
        ".map(r => r.cells[arguments[1]].textContent.trim());",
        table_id,
        index,
    )


def _header(driver, table_id: str, label: str):
    from selenium.webdriver.common.by import By

    heads = driver.find_elements(By.CSS_SELECTOR, f"#{table_id} thead th")
    return next(h for h in heads if h.text.strip() == label), [h.text.strip() for h in heads].index(label)


@pytest.mark.slow
def test_report_in_chromium(browser, report, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    d = browser
    d.get(report.resolve().as_uri())
    assert d.title == "lmms-ac study report"

    # every section rendered, none empty with this data
    for s in SECTIONS:
        el = d.find_element(By.ID, s)
        assert el.size["height"] > 50, s
        assert not d.find_elements(By.CSS_SELECTOR, f"#{s} .empty"), f"section {s} says it has no data"
    rows = d.find_elements(By.CSS_SELECTOR, "#leaderboard-all tbody tr")
    assert len(rows) == 13 and all(r.is_displayed() for r in rows)
    assert len(d.find_elements(By.CSS_SELECTOR, "#law-r2 tbody tr")) >= 4

    # every figure outside a closed <details> has a non-zero size
    sizes = d.execute_script(
        "return Array.from(document.querySelectorAll('figure svg'))"
        ".filter(s => !s.closest('details:not([open])') && !s.closest('[hidden]'))"
        ".map(s => { const r = s.getBoundingClientRect(); return [r.width, r.height]; });"
    )
    # 4 law surfaces, predicted vs actual, recall@3, 3 robustness heat maps, 2 PIL maps (recall@1 is folded)
    assert len(sizes) == 11 and len(d.find_elements(By.CSS_SELECTOR, "figure svg")) == 12
    assert all(w > 100 and h > 80 for w, h in sizes), sizes

    # sorting: click "variant" -> alphabetical, again -> reversed; numbers sort by value, blanks last
    th, j = _header(d, "leaderboard-all", "variant")
    before = _column(d, "leaderboard-all", j)
    th.click()
    asc = _column(d, "leaderboard-all", j)
    assert asc == sorted(before, key=str.lower) and asc != before
    assert th.get_attribute("aria-sort") == "ascending"
    th.click()
    assert _column(d, "leaderboard-all", j) == asc[::-1]
    th, j = _header(d, "leaderboard-all", "average")
    th.click()
    avg = _column(d, "leaderboard-all", j)
    values = [float(v) for v in avg if v]
    assert values == sorted(values) and avg[-2:] == ["", ""]  # the two untrained candidates last

    # filtering: the benchmark-group view and the variant filter
    Select(d.find_element(By.CSS_SELECTOR, "#leaderboard select.view-select")).select_by_value("ocr")
    assert d.find_element(By.ID, "leaderboard-ocr").is_displayed()
    assert not d.find_element(By.ID, "leaderboard-all").is_displayed()
    heads = [h.text for h in d.find_elements(By.CSS_SELECTOR, "#leaderboard-ocr thead th")]
    assert "textvqa_val" in heads and "mme" not in heads
    box = d.find_element(By.CSS_SELECTOR, "#leaderboard input.row-filter")
    box.send_keys("siglip")
    shown = [
        r.find_element(By.CSS_SELECTOR, "td:nth-child(2)").text
        for r in d.find_elements(By.CSS_SELECTOR, "#leaderboard-ocr tbody tr")
        if r.is_displayed()
    ]
    assert shown and all("siglip" in s for s in shown)

    # no JavaScript error, nothing fetched from the network
    errors = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    remote = d.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
        ".filter(n => !n.startsWith('file:') && !n.startsWith('data:'));"
    )
    assert remote == []

    # a full-page screenshot for people to look at
    d.refresh()  # the page as it opens: no sort, no filter
    height = d.execute_script("return document.body.scrollHeight")
    d.set_window_size(1400, min(height + 120, 20000))
    shot = tmp_path / "report.png"
    assert d.save_screenshot(str(shot)) and shot.stat().st_size > 50_000
    print(f"screenshot: {shot}")
