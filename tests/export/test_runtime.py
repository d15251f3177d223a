"""The runtime a checkpoint runs on: onnxruntime by default on the CPU, from a cached ONNX copy, same answers."""
import json

import numpy as np
import pytest
import torch

from lesiondet.errors import LesiondetError
from lesiondet.export import runtime
from lesiondet.export.runtime import cache_dir, cached_onnx, choose_backend
from tests.detection.test_export import SCORE, _match

CPU = torch.device("cpu")


def test_auto_is_onnxruntime_on_the_cpu_and_pytorch_elsewhere(monkeypatch):
    assert choose_backend("auto", CPU) == "onnx"
    assert choose_backend("torch", CPU) == "torch"
    assert choose_backend("auto", torch.device("cuda")) == "torch"
    monkeypatch.setattr(runtime, "onnxruntime_available", lambda: False)
    assert choose_backend("auto", CPU) == "torch"


def test_asking_for_onnx_where_it_cannot_run_is_a_one_line_error(monkeypatch):
    with pytest.raises(LesiondetError, match="CPU"):
        choose_backend("onnx", torch.device("cuda"))
    with pytest.raises(LesiondetError, match="unknown backend"):
        choose_backend("tensorrt", CPU)
    monkeypatch.setattr(runtime, "onnxruntime_available", lambda: False)
    with pytest.raises(LesiondetError, match="not installed"):
        choose_backend("onnx", CPU)


def test_the_copy_is_made_once_per_checkpoint_digest(tmp_path, monkeypatch):
    monkeypatch.setenv("LESIONDET_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    w = tmp_path / "a.pt"
    w.write_bytes(b"one")
    made = []

    def make(p):
        made.append(p)
        p.write_bytes(b"onnx")

    first = cached_onnx(w, "detector", make)
    assert cached_onnx(w, "detector", make) == first and len(made) == 1
    assert first.parent == tmp_path / "c" / "onnx" and first.name.startswith("detector-")
    w.write_bytes(b"two")  # retrained: a new digest, a new copy
    assert cached_onnx(w, "detector", make) != first and len(made) == 2


def test_a_user_checkpoint_runs_on_onnxruntime_with_the_pytorch_detections(trained_run, shared_data):
    from lesiondet.detection.predict import Predictor
    from lesiondet.images import read_rgb

    torch_p = Predictor(trained_run / "best.pt", "cpu", score=0.001)
    onnx_p = Predictor(trained_run / "best.pt", "cpu", score=0.001, backend="auto")
    assert (torch_p.backend, onnx_p.backend) == ("torch", "onnx")
    path = sorted((shared_data / "fundus" / "codras" / "JPEGImages").glob("*.jpg"))[0]
    img = read_rgb(path)
    a, b = torch_p.predict_array(img, path), onnx_p.predict_array(img, path)
    for x, y in ((a, b), (b, a)):
        n, found = _match(x, y)
        assert found == n, f"{n - found} of {n} detections above {SCORE} have no twin"


def test_the_shipped_grader_grades_the_same_on_onnxruntime(shared_data):
    from lesiondet.grading.cnn import GraderCNN, read_grading_csv
    from lesiondet.weights import default_grader

    items = read_grading_csv(shared_data / "grading" / "srahim" / "labels.csv")[:4]
    eager, fast = GraderCNN(default_grader(), "cpu"), GraderCNN(default_grader(), "cpu", backend="auto")
    assert fast.backend == "onnx"
    imgs = [eager.prepare(i.path) for i in items]
    for a, b in zip(eager.predict_images(imgs), fast.predict_images(imgs)):
        assert a["grade"] == b["grade"] and a["referable"] == b["referable"]
        assert abs(a["p_referable"] - b["p_referable"]) <= 1e-3 and abs(a["score"] - b["score"]) <= 1e-3
        assert np.allclose(a["embedding"], b["embedding"], rtol=1e-3, atol=1e-3)


def test_detect_grade_with_the_shipped_models_runs_on_onnxruntime_by_default(shared_data, tmp_path):
    from lesiondet.cli import main

    img = sorted((shared_data / "fundus" / "heimed" / "JPEGImages").glob("*.jpg"))[0]
    for backend in ("auto", "torch"):
        assert main(["detect", str(img), "--grade", "--out", str(tmp_path / backend), "--exist-ok",
                     "--backend", backend]) == 0
    kinds = sorted(p.name.split("-")[0] for p in (cache_dir() / "onnx").glob("*.onnx"))
    assert "detector" in kinds and "grader" in kinds
    fast, eager = (json.loads((tmp_path / b / f"{img.stem}.json").read_text()) for b in ("auto", "torch"))
    assert fast["grade"]["grade"] == eager["grade"]["grade"]
    assert fast["grade"]["referable"] == eager["grade"]["referable"]
    assert abs(fast["grade"]["model_probabilities"]["p_referable"]
               - eager["grade"]["model_probabilities"]["p_referable"]) <= 1e-3
    assert fast["counts"] == eager["counts"]
