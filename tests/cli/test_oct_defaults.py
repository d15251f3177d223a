"""The OCT commands out of the box: shipped classifier and fluid U-Net, no ``--weights``, digests checked."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from lesiondet import weights
from lesiondet.cli import main
from tests.cli.test_hardening import expect_one_line_error

pytestmark = pytest.mark.skipif(not {weights.OCT, weights.FLUID} <= set(weights.SHIPPED),
                                reason="no shipped OCT models")


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    """A B-scan-like picture: dark vitreous, a bright retina with a dark pocket, an RPE line."""
    img = np.full((496, 768), 25, np.uint8)
    img[180:190] = 190
    img[190:280] = 95
    img[215:245, 330:420] = 20
    img[280:288] = 220
    img = cv2.add(img, np.random.default_rng(0).integers(0, 25, img.shape, dtype=np.uint8))
    p = tmp_path_factory.mktemp("scan") / "scan.png"
    cv2.imwrite(str(p), img)
    return p


def test_oct_predict_uses_the_shipped_classifier(scan, tmp_path):
    j = tmp_path / "p.json"
    assert main(["oct", "predict", str(scan), "--out", str(tmp_path / "o"), "--json", str(j), "--device", "cpu"]) == 0
    doc = json.loads(j.read_text())
    assert set(doc["probabilities"]) == {"CNV", "DME", "DRUSEN", "NORMAL"}
    assert abs(sum(doc["probabilities"].values()) - 1) < 1e-4 and doc["class"] in doc["probabilities"]
    assert "fluid" not in doc


def test_oct_predict_seg_alone_adds_the_shipped_fluid_model(scan, tmp_path):
    j = tmp_path / "p.json"
    assert main(["oct", "predict", str(scan), "--seg", "--out", str(tmp_path / "o"), "--json", str(j),
                 "--device", "cpu"]) == 0
    doc = json.loads(j.read_text())
    assert {"fluid_px", "fluid_fraction", "regions"} <= set(doc["fluid"]) and "flag" in doc


def test_oct_segment_predict_uses_the_shipped_fluid_model(scan, tmp_path):
    out = tmp_path / "s"
    assert main(["oct", "segment", "predict", str(scan), "--out", str(out), "--spacing", "11.3", "3.9",
                 "--device", "cpu"]) == 0
    doc = json.loads((out / "scan.json").read_text())
    mask = cv2.imread(str(out / "scan_mask.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (496, 768) and (mask > 0).sum() == doc["fluid_px"]
    assert doc["fluid_mm2"] == pytest.approx(doc["fluid_px"] * 11.3 * 3.9 / 1e6, abs=1e-6)


@pytest.mark.parametrize("command, options, name", [(["oct", "predict"], [], weights.OCT),
                                                     (["oct", "segment", "predict"], [], weights.FLUID),
                                                     (["oct", "predict"], ["--seg"], weights.FLUID)])
def test_a_shipped_oct_model_with_the_wrong_digest_is_refused_in_one_line(command, options, name, scan, tmp_path,
                                                                           monkeypatch, capsys):
    monkeypatch.setitem(weights.SHIPPED, name, "0" * 64)
    rc = main([*command, str(scan), *options, "--out", str(tmp_path / "o"), "--device", "cpu"])
    expect_one_line_error(capsys, rc, name, "does not match the shipped model")
    assert not (tmp_path / "o").exists()


def test_the_shipped_models_find_what_the_shared_scans_show(shared_data, tmp_path):
    """Wiring, not accuracy (these scans were training data): DME fluid outlined where the grader drew it."""
    from lesiondet.oct.classify import OctClassifier
    from lesiondet.oct.segment import FluidScan, FluidSegmenter, dice_of, overlap_counts, read_pair

    d = shared_data / "oct_fluid"
    img, truth = read_pair(FluidScan(d / "images" / "subject05_bscan05.png", d / "masks" / "subject05_bscan05.png",
                                     "5"))
    pred = FluidSegmenter(weights.default_fluid(), "cpu").mask(img)
    assert dice_of(*overlap_counts(pred, truth)[:3]) > 0.5
    clf = OctClassifier(weights.default_oct(), device="cpu")
    scans = sorted((shared_data / "oct" / "DME").glob("*.jp*g"))[:3]
    assert (clf.predict_proba(scans).argmax(1) == clf.classes.index("DME")).sum() >= 2
