"""Per-class thresholds stored in a checkpoint and used by detect; old checkpoints with a merged class."""
import json

import torch

from lesiondet.cli import main
from lesiondet.detection.operating import OperatingPoint
from lesiondet.engine.checkpoint import load_checkpoint, save_checkpoint


def test_calibrate_stores_thresholds_that_detect_then_uses(trained_run, tiny_sample, tmp_path, capsys):
    cal = tmp_path / "calibrated.pt"
    assert main(["calibrate", "--weights", str(trained_run / "best.pt"), "--voc", str(tiny_sample / "val"),
                 "--fp-per-image", "2", "--class-rate", "OD=0", "--out", str(cal), "--device", "cpu"]) == 0
    stored = OperatingPoint.from_checkpoint(load_checkpoint(cal))
    assert stored.thresholds and "2 false positive(s) per image" in stored.purpose
    assert "OD" not in stored.thresholds or stored.thresholds["OD"] > 0

    assert main(["detect", str(tiny_sample / "test" / "JPEGImages"), "--weights", str(cal),
                 "--out", str(tmp_path / "d"), "--device", "cpu"]) == 0
    for f in (tmp_path / "d").glob("*.json"):
        doc = json.loads(f.read_text())
        assert OperatingPoint.from_dict(doc["operating_point"]) == stored  # the JSON says where the counts come from
        assert all(d["score"] >= stored.threshold(d["label"]) for d in doc["detections"])
        assert sum(d["label"] == "OD" for d in doc["detections"]) <= 1
        assert doc["optic_disc"]["found"] == any(d["label"] == "OD" for d in doc["detections"])
        assert doc["counts"] == {k: v for k, v in doc["counts"].items() if v}

    # --score overrides with one number for every class, and says so
    assert main(["detect", str(tiny_sample / "test" / "JPEGImages"), "--weights", str(cal), "--score", "0.05",
                 "--out", str(tmp_path / "d2"), "--device", "cpu"]) == 0
    doc = json.loads(next((tmp_path / "d2").glob("*.json")).read_text())
    assert doc["operating_point"]["thresholds"] == {} and "--score 0.05" in doc["operating_point"]["purpose"]


def test_an_old_checkpoint_with_a_merged_class_loads_and_reports_it(trained_run, tiny_sample, tmp_path):
    """lesiondet <= 0.2 trained CODRAS's HE_MA as a class; such a model still runs and reports HE_MA."""
    from lesiondet.detection.predict import Predictor

    ck = load_checkpoint(trained_run / "best.pt")
    old = [c if c != "HE" else "HE_MA" for c in ck["classes"]]
    ck["classes"] = old
    ck["label_map"] = {"classes": old, "aliases": {}, "ignore": []}
    ck["tiling"] = {k: v for k, v in ck["tiling"].items() if k not in ("disc_core", "balance_sources")}
    ck.pop("operating_point", None)
    save_checkpoint(tmp_path / "old.pt", ck)
    p = Predictor(tmp_path / "old.pt", "cpu", 0.001)
    assert p.classes == old and p.operating_point.thresholds == {}
    rec = p.predict(next((tiny_sample / "test" / "JPEGImages").iterdir()))
    assert {o.label for o in rec.objects} <= set(old)
    assert any(o.label == "HE_MA" for o in rec.objects)  # scored down to 0.001, every class shows up
    # the default operating point of an old model: 0.3 for every class, and it says so
    q = Predictor(tmp_path / "old.pt", "cpu")
    assert q.operating_point.lowest == 0.3 and "stores no operating point" in q.operating_point.purpose
    assert torch.is_tensor(ck["model"][next(iter(ck["model"]))])


def test_display_thresholds_are_stored_and_detect_draws_more_than_the_rules_count(trained_run, tiny_sample, tmp_path):
    from lesiondet.detection.predict import Predictor
    from lesiondet.io.labels import default_label_map
    from lesiondet.io.voc import parse_voc

    cal = tmp_path / "calibrated.pt"
    assert main(["calibrate", "--weights", str(trained_run / "best.pt"), "--voc", str(tiny_sample / "val"),
                 "--fp-per-image", "0.5", "--display-precision", "0.3", "--out", str(cal), "--device", "cpu"]) == 0
    ck = load_checkpoint(cal)
    counted, shown = OperatingPoint.from_checkpoint(ck), OperatingPoint.from_dict(ck["display_point"])
    assert "at least 0.3 of the boxes drawn" in shown.purpose
    # the drawing shows a box when it clears either threshold; the rules count only those at the operating point
    p = Predictor(cal, "cpu")
    assert p.score == min(counted.lowest, shown.lowest)
    assert main(["detect", str(tiny_sample / "test" / "JPEGImages"), "--weights", str(cal), "--grade",
                 "--grader", "none", "--out", str(tmp_path / "d"), "--device", "cpu"]) == 0
    for f in (tmp_path / "d").glob("*.json"):
        doc = json.loads(f.read_text())
        for d in doc["detections"]:
            assert d["counted"] == (d["score"] >= counted.threshold(d["label"]))
            assert d["shown"] == (d["score"] >= shown.threshold(d["label"]))
            assert d["counted"] or d["shown"]
        n_counted = sum(d["counted"] for d in doc["detections"] if d["label"] != "OD")
        assert sum(doc["counts"].get(c, 0) for c in doc["counts"] if c != "OD") == n_counted
        xml = parse_voc(f.with_suffix(".xml"), default_label_map(), need_image=False)
        assert [o.counted for o in xml.objects] == [d["counted"] for d in doc["detections"]]
