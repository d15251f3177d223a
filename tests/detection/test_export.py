"""Export: the per-tile network as ONNX or TorchScript, run through the same slicing and merging."""
import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from lesiondet.cli import main
from lesiondet.detection.export import export
from lesiondet.detection.predict import Predictor
from lesiondet.images import read_rgb

pytestmark = pytest.mark.e2e

#: The stated tolerance: every detection above SCORE in one runtime has one in the other
#: of the same class with box IoU >= IOU and a score within ATOL.
SCORE, IOU, ATOL = 0.05, 0.99, 1e-3


def _match(a, b) -> tuple[int, int]:
    """(detections of ``a`` above SCORE, how many of them have their twin in ``b``)."""
    strong = [o for o in a.objects if o.score > SCORE]
    near = [o for o in b.objects if o.score > SCORE - ATOL]  # a twin may sit just under the cut
    found = 0
    for o in strong:
        cands = [q for q in near if q.label == o.label and abs(q.score - o.score) <= ATOL]
        if cands and box_iou(torch.tensor([o.box]), torch.tensor([q.box for q in cands])).max() >= IOU:
            found += 1
    return len(strong), found


@pytest.fixture(scope="module")
def onnx_file(trained_run, tmp_path_factory):
    return export(trained_run / "best.pt", "onnx", tmp_path_factory.mktemp("onnx") / "best.onnx")


def test_onnx_gives_the_pytorch_detections_on_real_photographs(trained_run, onnx_file, shared_data):
    images = sorted((shared_data / "fundus" / "codras" / "JPEGImages").glob("*.jpg"))[:2]
    torch_p = Predictor(trained_run / "best.pt", "cpu", score=0.001)
    onnx_p = Predictor(onnx_file, score=0.001)
    assert onnx_p.tiling == torch_p.tiling and onnx_p.classes == torch_p.classes
    compared = 0
    for path in images:
        img = read_rgb(path)
        a, b = torch_p.predict_array(img, path), onnx_p.predict_array(img, path)
        for x, y in ((a, b), (b, a)):
            n, found = _match(x, y)
            assert found == n, f"{path.name}: {n - found} of {n} detections above {SCORE} have no twin"
            compared += n
    print(f"{compared} detections above {SCORE} compared")
    assert compared > 0  # the tolerance was checked on real detections, not on none


def test_detect_and_eval_take_the_onnx_file(onnx_file, tiny_sample, tmp_path, capsys):
    assert main(["detect", str(tiny_sample / "test" / "JPEGImages"), "--weights", str(onnx_file),
                 "--out", str(tmp_path / "d"), "--score", "0.01"]) == 0
    assert len(list((tmp_path / "d").glob("*.xml"))) == 2
    assert main(["eval", "--map", "--voc", str(tiny_sample / "test"), "--weights", str(onnx_file),
                 "--json", str(tmp_path / "m.json"), "--out", str(tmp_path / "e")]) == 0
    assert (tmp_path / "m.json").is_file()


def test_torchscript_export_loads_and_detects(trained_run, tmp_path):
    out = tmp_path / "best.torchscript"
    assert main(["export", "--weights", str(trained_run / "best.pt"), "--format", "torchscript",
                 "--out", str(out)]) == 0
    extra = {"lesiondet.json": ""}
    net = torch.jit.load(str(out), _extra_files=extra)
    assert b'"classes"' in extra["lesiondet.json"]
    img = torch.rand(3, 128, 128)
    boxes, scores, labels = net(img)
    assert boxes.shape[1] == 4 and len(scores) == len(labels)


def test_an_onnx_file_without_lesiondet_metadata_is_refused(tmp_path, capsys, tiny_sample):
    (tmp_path / "x.onnx").write_bytes(b"not onnx")
    img = next((tiny_sample / "test" / "JPEGImages").glob("*.jpg"))
    assert main(["detect", str(img), "--weights", str(tmp_path / "x.onnx"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "x.onnx" in err[0] and "ONNX" in err[0]
    assert not (tmp_path / "o").exists()


def test_exported_network_takes_any_input_size(onnx_file):
    from lesiondet.detection.export import OnnxDetector

    det = OnnxDetector(onnx_file)
    for h, w in ((128, 128), (96, 160)):
        out = det([torch.from_numpy(np.random.default_rng(0).random((3, h, w), dtype=np.float32))])[0]
        assert out["boxes"].shape[1] == 4
