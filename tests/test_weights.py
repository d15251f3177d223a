"""Shipped default models: strict digests, fp16 shipping copies, and detect working without --weights."""
import json

import pytest
import torch

from lesiondet import weights
from lesiondet.errors import CheckpointError


def test_a_file_whose_digest_differs_is_refused(tmp_path, monkeypatch):
    f = tmp_path / "detector.pt"
    f.write_bytes(b"not the shipped bytes")
    monkeypatch.setattr(weights, "HERE", tmp_path)
    monkeypatch.setattr(weights, "SHIPPED", {"detector.pt": "0" * 64})
    with pytest.raises(CheckpointError, match="does not match the shipped model"):
        weights.default_detector()
    monkeypatch.setattr(weights, "SHIPPED", {"detector.pt": weights.sha256(f)})
    assert weights.default_detector() == f


def test_a_missing_shipped_model_points_to_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "HERE", tmp_path)
    with pytest.raises(CheckpointError, match="pass --weights"):
        weights.default_grader()


@pytest.mark.parametrize("name", sorted(weights.SHIPPED))
def test_every_shipped_model_is_in_the_package_under_25_mb_and_matches_its_digest(name):
    p = weights.shipped(name)
    assert p.stat().st_size <= 25 * 2**20


def test_shipping_halves_the_weights_and_drops_the_training_state(trained_run, tmp_path):
    from lesiondet.detection.predict import Predictor
    from lesiondet.engine.checkpoint import load_checkpoint

    info = weights.ship_checkpoint(trained_run / "last.pt", tmp_path / "d.pt")
    ck = load_checkpoint(tmp_path / "d.pt")
    assert "optimizer" not in ck and "rng" not in ck
    assert all(v.dtype == torch.float16 for v in ck["model"].values() if v.is_floating_point())
    assert info["bytes"] < (trained_run / "best.pt").stat().st_size * 0.7
    assert len(Predictor(tmp_path / "d.pt", "cpu").classes) > 0


@pytest.mark.skipif(not {"detector.pt", "grader.pt"} <= set(weights.SHIPPED), reason="no shipped models")
def test_detect_grade_works_out_of_the_box_with_the_shipped_models(shared_data, tmp_path):
    from lesiondet.cli import main

    img = shared_data / "grading" / "srahim" / "images" / "Patient002_L.jpg"
    assert main(["detect", str(img), "--grade", "--out", str(tmp_path / "d")]) == 0
    g = json.loads((tmp_path / "d" / "Patient002_L.json").read_text())["grade"]
    assert g["grade_source"] in ("cnn", "cnn+lesions") and g["gradable"] and g["grade"] in range(5)


def test_the_shipped_detector_reports_the_users_classes_at_its_stored_operating_point():
    from lesiondet.detection.predict import Predictor

    p = Predictor(weights.default_detector(), "cpu")
    assert sorted(p.classes) == ["EX", "HE", "MA", "OD", "SE"]  # no set's merged label among the outputs
    op = p.stored_operating_point
    assert set(op.thresholds) == {"MA", "HE", "EX", "SE", "OD"} and "srahim" in op.purpose
    assert p.operating_point == op  # detect's default
