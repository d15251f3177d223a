"""Opening a model file never runs code inside it; lesiondet 0.1 files load only when trusted explicitly."""
import json
import os
import pickle

import numpy as np
import pytest
import torch

from lesiondet.cli import main
from lesiondet.engine.checkpoint import load_checkpoint, save_checkpoint, to_plain
from tests.conftest import write_image, write_xml


class _Payload:
    """Unpickling this creates a file: the proof that loading ran code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def malicious(tmp_path):
    marker = tmp_path / "PWNED"
    pt = tmp_path / "evil.pt"
    torch.save({"format": "lesiondet-detector/1", "payload": _Payload(marker)}, pt)
    grader = tmp_path / "evil-grader.pkl"
    grader.write_bytes(pickle.dumps({"format": "lesiondet-grader/1", "model": _Payload(marker)}))
    return pt, grader, marker


def _commands(pt, grader, tmp_path):
    img = write_image(tmp_path / "a.jpg")
    voc = tmp_path / "voc"
    voc.mkdir()
    write_image(voc / "b.jpg")
    write_xml(voc / "b.xml", "b.jpg", objects=[("MA", 5, 5, 9, 9)])
    return {
        "detect": ["detect", str(img), "--weights", str(pt), "--out", str(tmp_path / "d")],
        "eval": ["eval", "--map", "--voc", str(voc), "--weights", str(pt), "--out", str(tmp_path / "e")],
        "export": ["export", "--weights", str(pt), "--out", str(tmp_path / "x.onnx")],
        "oct predict": ["oct", "predict", str(img), "--weights", str(pt), "--out", str(tmp_path / "o")],
        "grade": ["grade", "--voc", str(voc), "--model", str(grader)],
        "train --resume": ["train", "--resume", str(pt)],
    }


@pytest.mark.e2e
@pytest.mark.parametrize("command", ["detect", "eval", "export", "oct predict", "grade", "train --resume"])
def test_a_code_carrying_model_file_is_refused_without_running_it(command, malicious, tmp_path, capsys):
    pt, grader, marker = malicious
    argv = _commands(pt, grader, tmp_path)[command]
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("lesiondet: error: ") and "--trust-legacy" in err[0]
    assert not marker.exists()  # nothing in the file was executed
    assert not any((tmp_path / d).exists() for d in ("d", "e", "o", "x.onnx"))


def test_checkpoints_hold_only_plain_types():
    state = to_plain({"a": np.float32(0.5), "b": np.arange(3), "c": [np.int64(2)], "p": __import__("pathlib").Path("x")})
    assert state == {"a": 0.5, "b": state["b"], "c": [2], "p": "x"} and torch.equal(state["b"], torch.arange(3))


def test_written_checkpoints_load_with_weights_only(trained_run, oct_run):
    for f in (trained_run / "best.pt", trained_run / "last.pt", oct_run / "best.pt"):
        torch.load(f, weights_only=True)  # raises if anything but plain types were stored


def test_a_lesiondet_0_1_checkpoint_loads_with_trust_legacy(trained_run, tmp_path, capsys):
    ck = torch.load(trained_run / "best.pt", weights_only=True)
    ck["metrics"]["mAP50"] = np.float64(ck["metrics"]["mAP50"])  # 0.1 stored NumPy numbers: not weights_only-safe
    old = tmp_path / "old.pt"
    torch.save(ck, old)
    with pytest.raises(Exception):
        load_checkpoint(old)
    img = write_image(tmp_path / "a.jpg", (128, 128))
    assert main(["detect", str(img), "--weights", str(old), "--out", str(tmp_path / "d")]) == 2
    assert main(["detect", str(img), "--weights", str(old), "--out", str(tmp_path / "d"), "--trust-legacy"]) == 0
    assert "code execution" in capsys.readouterr().err


def test_the_learned_grader_is_saved_as_json_and_reloads(tmp_path):
    from lesiondet.grading.learned import OrdinalGrader

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = np.clip(np.round(X[:, 0] + 1.5), 0, 3).astype(int)
    g = OrdinalGrader().fit(X, y)
    path = g.save(tmp_path / "g.json")
    assert json.loads(path.read_text())["format"] == "lesiondet-grader/2"
    h = OrdinalGrader.load(path)
    assert np.allclose(g.predict_proba(X), h.predict_proba(X)) and (g.predict(X) == h.predict(X)).all()


def test_a_saved_state_round_trips(tmp_path):
    save_checkpoint(tmp_path / "s.pt", {"x": torch.ones(2), "rng": (1, 2), "n": np.int32(3)})
    s = load_checkpoint(tmp_path / "s.pt")
    assert s["n"] == 3 and s["rng"] == (1, 2) and os.path.getsize(tmp_path / "s.pt") > 0
