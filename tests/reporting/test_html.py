"""``detect --report``: a self-contained report.html, checked as text and rendered in headless Chromium."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from lesiondet.cli import main
from lesiondet.grading.rules import grade
from lesiondet.io.voc import VocObject, VocRecord
from lesiondet.reporting.html import ReportWriter, flags_for
from tests.conftest import ROOT

ARTIFACTS = Path(os.environ.get("LESIONDET_TEST_ARTIFACTS", ROOT / "runs" / "test-artifacts"))


@pytest.fixture(scope="module")
def report_run(trained_run, tiny_sample, tmp_path_factory) -> Path:
    """``detect --report`` on the test images plus one unreadable file."""
    d = tmp_path_factory.mktemp("imgs")
    for p in (tiny_sample / "test" / "JPEGImages").iterdir():
        shutil.copy(p, d / p.name)
    (d / "zz_broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path_factory.mktemp("det") / "run"
    rc = main(["detect", str(d), "--weights", str(trained_run / "best.pt"), "--score", "0.05",
               "--out", str(out), "--report"])
    assert rc == 1  # the broken file fails the run, after everything else was written
    return out


def test_report_is_one_file_with_every_image_embedded(report_run):
    page = (report_run / "report.html").read_text()
    assert not re.search(r"(src|href)=['\"]?(https?:|//|[\w./-]+\.(png|jpg|js|css))", page)  # nothing external
    # two good images: one annotated view and one thumbnail each
    assert page.count("data:image/jpeg;base64,") == 4
    assert page.count("<section class=image") == 2
    assert "zz_broken.jpg" in page and "could not be read" in page
    assert not list(report_run.glob(".report.html.*"))  # no temporary parts left behind


def test_report_shows_grade_reasons_and_what_cannot_be_assessed(report_run):
    page = (report_run / "report.html").read_text()
    assert page.count("class=reasons") == 2 and "Cannot assess" in page and "proliferative" in page.lower()


def test_flags_say_what_needs_a_look():
    rec = VocRecord(Path("a.jpg"), 1000, 1000, (VocObject("EX", (495, 495, 505, 505)),))
    g = grade(rec)
    flags = flags_for(rec, g)
    assert any("macular oedema" in f for f in flags) and any("No optic disc" in f for f in flags)
    assert flags_for(rec.with_objects([]), grade(rec.with_objects([]))) == [
        "No optic disc found: fovea placed at the image centre; quadrants are approximate.",
        "Nothing detected above the score threshold."]


def test_a_failed_run_leaves_no_report(tmp_path):
    w = ReportWriter(tmp_path / "report.html", ["MA"])
    w.abort()
    assert list(tmp_path.iterdir()) == []


def _chromium():
    for exe in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(exe):
            return shutil.which(exe)
    return None


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium driven by Selenium, offline. CI installs Debian's chromium and sets
    LESIONDET_REQUIRE_BROWSER=1, so a missing browser fails there instead of skipping."""
    exe, driver = _chromium(), shutil.which("chromedriver")
    if not exe or not driver:
        if os.environ.get("LESIONDET_REQUIRE_BROWSER") == "1":
            pytest.fail("Chromium and chromedriver are required (apt-get install chromium chromium-driver)")
        pytest.skip("no chromium/chromedriver on this machine")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = exe
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,1600"):
        opts.add_argument(flag)
    drv = webdriver.Chrome(service=Service(driver), options=opts)
    yield drv
    drv.quit()


def test_report_renders_in_chromium_and_sorts_by_grade(report_run, browser):
    from selenium.webdriver.common.by import By

    browser.get((report_run / "report.html").resolve().as_uri())
    imgs = browser.find_elements(By.TAG_NAME, "img")
    assert len(imgs) == 4
    # every embedded image decoded to real pixels
    assert all(browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", i) > 0
               for i in imgs)
    cells = browser.find_elements(By.CSS_SELECTOR, "#summary tbody td.grade")
    assert len(cells) == 2 and all(c.text.strip() in "01234" for c in cells)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000

    # Put one row's grade above the other, then sort by clicking the header: the DOM order must follow.
    browser.execute_script("var c = document.querySelectorAll('#summary tbody td.grade');"
                           "c[0].dataset.sort = '0'; c[0].textContent = '0';"
                           "c[1].dataset.sort = '3'; c[1].textContent = '3';")
    header = browser.find_element(By.XPATH, "//table[@id='summary']//th[text()='grade']")
    header.click()
    assert [c.text for c in browser.find_elements(By.CSS_SELECTOR, "#summary tbody td.grade")] == ["0", "3"]
    header.click()
    assert [c.text for c in browser.find_elements(By.CSS_SELECTOR, "#summary tbody td.grade")] == ["3", "0"]
    assert header.get_attribute("aria-sort") == "descending"


def test_shown_and_counted_boxes_are_told_apart_in_the_drawing_json_and_xml():
    import numpy as np
    from lxml import etree

    from lesiondet.io.voc import voc_xml
    from lesiondet.reporting.draw import detections_json, draw

    img = np.full((200, 300, 3), 60, np.uint8)
    counted = VocObject("EX", (20.0, 20.0, 60.0, 60.0), score=0.95, counted=True, shown=True)
    shown = VocObject("EX", (120.0, 20.0, 160.0, 60.0), score=0.6, counted=False, shown=True)
    rec = VocRecord(Path("a.jpg"), 300, 200, (counted, shown))
    doc = detections_json(rec)
    assert doc["counts"] == {"EX": 1} and doc["shown"] == {"EX": 2}
    assert [(d["counted"], d["shown"]) for d in doc["detections"]] == [(True, True), (False, True)]
    objs = etree.fromstring(voc_xml(rec)).findall("object")
    assert [(o.findtext("counted"), o.findtext("shown")) for o in objs] == [("1", "1"), ("0", "1")]
    out = draw(img, rec)
    solid, dashed = out[19:62, 18], out[19:62, 118]  # the left edge of each box
    assert (solid != 60).all()  # a counted box: a solid line
    assert (dashed != 60).any() and (dashed == 60).any()  # shown only: dashes
