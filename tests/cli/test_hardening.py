"""Bad input across every command: one line naming the file and the fix, a non-zero exit, no traceback,
no partial output. Odd but valid images (RGBA, grey, CMYK, 64 px, 8000 px) simply work.

Each command is run in-process through ``lesiondet.cli.main``: an exception other than the
documented ``LesiondetError`` would escape ``main`` and fail the test with its traceback.
"""
from __future__ import annotations

import json
import pathlib
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from lesiondet.cli import main
from tests.conftest import write_xml

pytestmark = pytest.mark.e2e  # through the CLI, with trained models

SIZE = (96, 80)  # width, height of the synthetic good images


# ----------------------------------------------------------------------------- image files
def fundus_like(w: int, h: int, seed: int = 0) -> np.ndarray:
    """An RGB disc on black, so field-of-view logic sees a real fundus shape."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    r = min(w, h) // 2 - 2
    cv2.circle(img, (w // 2, h // 2), r, (170, 70, 30), -1)
    return np.clip(img.astype(int) + rng.integers(0, 20, img.shape) * (img > 0), 0, 255).astype(np.uint8)


def write_kind(path: Path, kind: str, size=SIZE) -> Path:
    """Write an image of ``kind``; returns the path actually written."""
    w, h = size
    rgb = fundus_like(w, h)
    if kind in ("good", "tiny64"):
        if kind == "tiny64":
            rgb = fundus_like(64, 64)
        cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    elif kind == "truncated":
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(fundus_like(400, 300), cv2.COLOR_RGB2BGR))
        path.write_bytes(buf.tobytes()[: len(buf) // 2])
    elif kind == "zero_byte":
        path.write_bytes(b"")
    elif kind == "16bit":
        path = path.with_suffix(".png")
        cv2.imwrite(str(path), (rgb.astype(np.uint16) * 257))
    elif kind == "rgba":
        path = path.with_suffix(".png")
        Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]), "RGBA").save(path)
    elif kind == "grey":
        path = path.with_suffix(".png")
        Image.fromarray(rgb[..., 0]).save(path)
    elif kind == "cmyk":
        Image.fromarray(rgb).convert("CMYK").save(path, "JPEG")
    elif kind == "huge8000":
        # An 8000x8000 mosaic that is mostly black: slicing skips tiles without field of view.
        big = np.zeros((8000, 8000, 3), np.uint8)
        big[7000:7400, 7000:7400] = fundus_like(400, 400)
        cv2.imwrite(str(path), big)
    else:
        raise ValueError(kind)
    return path


def image_size_of(path: Path) -> tuple[int, int]:
    if path.stat().st_size == 0:
        return SIZE
    try:
        with Image.open(path) as im:
            return im.size
    except Exception:
        return SIZE


XML_CASES = {
    "malformed_xml": ("<annotation><object><name>MA</name>", "malformed XML"),
    "wrong_root": ("<VOC><filename>bad.jpg</filename></VOC>", "not <annotation>"),
    "unknown_label": ([("tumour", 2, 2, 9, 9)], "unknown label 'tumour'"),
    "box_outside": ([("MA", 60, 2, 140, 9)], "outside"),
    "zero_size": ([("MA", 9, 9, 8, 20)], "zero or negative size"),
    "negative_size": ([("MA", 30, 30, 10, 10)], "zero or negative size"),
    "nan_coords": ([("MA", "nan", 2, 9, 9)], "'nan'"),
}
IMAGE_CASES = {"missing_image": "not found", "truncated": "truncated or corrupt",
               "zero_byte": "empty (0 bytes)", "16bit": "16-bit"}
OCT_IMAGE_CASES = [c for c in IMAGE_CASES if c != "16bit"]  # 16-bit scans are valid OCT input (OCT exports are)
ODD_KINDS = ["rgba", "grey", "cmyk", "tiny64", "huge8000"]


def voc_folder(root: Path, case: str | None = None) -> tuple[Path, str]:
    """Two good annotated images plus, for ``case``, one bad one; returns (folder, bad file name)."""
    d = root / "voc"
    d.mkdir(parents=True, exist_ok=True)
    for i in range(2):
        write_kind(d / f"good{i}.jpg", "good")
        write_xml(d / f"good{i}.xml", f"good{i}.jpg", SIZE, [("MA", 10, 10, 16, 16), ("EX", 40, 30, 52, 44)])
    if case is None:
        return d, ""
    if case in XML_CASES:
        write_kind(d / "bad.jpg", "good")
        spec = XML_CASES[case][0]
        if isinstance(spec, str):
            (d / "bad.xml").write_text(spec)
        else:
            write_xml(d / "bad.xml", "bad.jpg", SIZE, spec)
        return d, "bad.xml"
    if case == "missing_image":
        write_xml(d / "bad.xml", "bad.jpg", SIZE, [("MA", 10, 10, 16, 16)])
        return d, "bad.jpg"
    img = write_kind(d / "bad.jpg", case)
    write_xml(d / "bad.xml", img.name, image_size_of(img), [("MA", 10, 10, 16, 16)])
    return d, img.name


def image_folder(root: Path, case: str) -> tuple[Path, str]:
    """Two good images plus one bad one; returns (folder, bad file name)."""
    d = root / "imgs"
    d.mkdir(parents=True, exist_ok=True)
    for i in range(2):
        write_kind(d / f"good{i}.jpg", "good")
    return d, write_kind(d / "bad.jpg", case).name


def oct_folder(root: Path, case: str | None = None, oct_sample: Path | None = None) -> tuple[Path, str]:
    """A copy of the synthetic OCT set with one bad scan in CNV/."""
    d = root / "oct"
    shutil.copytree(oct_sample, d)
    if case is None:
        return d, ""
    if case == "missing_image":
        csv = root / "oct.csv"
        rows = [f"{p.relative_to(root)},{p.parent.name}" for p in sorted(d.rglob("*.png"))]
        csv.write_text("path,label\n" + "\n".join(rows + ["oct/CNV/CNV-1-1.jpeg,CNV"]) + "\n")
        return csv, "CNV-1-1.jpeg"
    return d, write_kind(d / "CNV" / "CNV-77-1.jpeg", case).name


# ----------------------------------------------------------------------------- assertions
def expect_one_line_error(capsys, rc: int, *needles: str) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("lesiondet: error:") or ln.startswith("lesiondet ")]
    assert rc != 0, err
    assert "Traceback" not in err
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def no_files(folder: Path, *patterns: str) -> bool:
    return not folder.exists() or not any(f for p in patterns for f in folder.rglob(p))


# ----------------------------------------------------------------------------- commands that read VOC folders
@pytest.mark.parametrize("case", list(XML_CASES) + list(IMAGE_CASES))
def test_train_refuses_bad_data_before_making_a_run_folder(case, tmp_path, capsys, tiny_config):
    d, bad = voc_folder(tmp_path, case)
    out = tmp_path / "runs" / "train"
    rc = main(["train", "--voc", str(d), "--config", str(tiny_config), "--out", str(out), "--device", "cpu"])
    needle = XML_CASES[case][1] if case in XML_CASES else IMAGE_CASES[case]
    expect_one_line_error(capsys, rc, bad, needle)
    assert not out.exists()


@pytest.mark.parametrize("case", list(XML_CASES) + list(IMAGE_CASES))
def test_eval_refuses_bad_ground_truth_and_writes_no_json(case, tmp_path, capsys, trained_run):
    d, bad = voc_folder(tmp_path, case)
    j = tmp_path / "e.json"
    rc = main(["eval", "--map", "--voc", str(d), "--weights", str(trained_run / "best.pt"), "--json", str(j)])
    expect_one_line_error(capsys, rc, bad)
    assert not j.exists() and no_files(tmp_path, "*.tmp")


@pytest.mark.parametrize("case", list(XML_CASES) + list(IMAGE_CASES))
def test_grade_refuses_bad_annotations_and_writes_no_json(case, tmp_path, capsys):
    d, bad = voc_folder(tmp_path, case)
    j = tmp_path / "g.json"
    rc = main(["grade", "--voc", str(d), "--json", str(j)])
    expect_one_line_error(capsys, rc, bad)
    assert not j.exists()


# ----------------------------------------------------------------------------- commands that read images
@pytest.mark.parametrize("case", list(IMAGE_CASES))
def test_detect_on_a_folder_skips_a_bad_image_and_lists_it(case, tmp_path, capsys, trained_run):
    if case == "missing_image":
        out = tmp_path / "det"
        rc = main(["detect", str(tmp_path / "nope.jpg"), "--weights", str(trained_run / "best.pt"),
                   "--out", str(out)])
        expect_one_line_error(capsys, rc, "nope.jpg", "not found")
        assert not out.exists()
        return
    d, bad = image_folder(tmp_path, case)
    out = tmp_path / "det"
    rc = main(["detect", str(d), "--weights", str(trained_run / "best.pt"), "--out", str(out), "--report"])
    assert rc == 1
    expect_one_line_error(capsys, rc, bad, IMAGE_CASES[case])
    assert sorted(p.name for p in out.glob("*.json")) == ["good0.json", "good1.json"]
    assert bad in (out / "failures.txt").read_text() and (out / "report.html").is_file()
    assert no_files(out, "bad.*", ".*.tmp")


@pytest.mark.parametrize("case", OCT_IMAGE_CASES)
def test_oct_train_refuses_a_bad_scan_before_making_a_run_folder(case, tmp_path, capsys, oct_sample,
                                                                   oct_fast_config):
    data, bad = oct_folder(tmp_path, case, oct_sample)
    out = tmp_path / "runs" / "oct"
    rc = main(["oct", "train", "--data", str(data), "--config", str(oct_fast_config), "--out", str(out)])
    expect_one_line_error(capsys, rc, bad, IMAGE_CASES[case])
    assert not out.exists()


@pytest.mark.parametrize("case", OCT_IMAGE_CASES)
def test_oct_predict_and_eval_handle_a_bad_scan(case, tmp_path, capsys, oct_sample, oct_run):
    data, bad = oct_folder(tmp_path, case, oct_sample)
    j = tmp_path / "e.json"
    rc = main(["oct", "eval", "--data", str(data), "--weights", str(oct_run / "best.pt"), "--json", str(j),
               "--out", str(tmp_path / "ev")])
    expect_one_line_error(capsys, rc, bad)
    assert not j.exists() and no_files(tmp_path / "ev", "*.png")
    if case == "missing_image":
        return
    out = tmp_path / "pred"
    rc = main(["oct", "predict", str(data / "CNV"), "--weights", str(oct_run / "best.pt"), "--out", str(out),
               "--json", str(tmp_path / "p.json")])
    expect_one_line_error(capsys, rc, bad)
    assert no_files(out, Path(bad).stem + ".png") and len(list(out.glob("*.png"))) == 6


# ----------------------------------------------------------------------------- odd but valid images
def test_odd_images_work_in_every_command(tmp_path, capsys, tiny_config, trained_run, oct_sample, oct_run,
                                          oct_fast_config):
    d = tmp_path / "odd"
    d.mkdir()
    for kind in ODD_KINDS:
        p = write_kind(d / f"{kind}.jpg", kind)
        w, h = image_size_of(p)
        # a lesion inside each image's field of view
        x, y = (7100, 7100) if kind == "huge8000" else (w // 2 - 5, h // 2 - 5)
        write_xml(d / f"{kind}.xml", p.name, (w, h), [("EX", x, y, x + 8, y + 8), ("MA", x + 1, y + 1, x + 4, y + 4)])
    val, _ = voc_folder(tmp_path)
    assert main(["train", "--voc", str(d), "--val", str(val), "--config", str(tiny_config),
                 "--out", str(tmp_path / "run"), "--device", "cpu"]) == 0
    assert (tmp_path / "run" / "best.pt").is_file()

    w = str(trained_run / "best.pt")
    det = tmp_path / "det"
    assert main(["detect", str(d), "--weights", w, "--out", str(det), "--report"]) == 0
    assert sorted(p.stem for p in det.glob("*.json")) == sorted(ODD_KINDS)
    assert json.loads((det / "huge8000.json").read_text())["width"] == 8000
    assert main(["eval", "--map", "--voc", str(d), "--weights", w, "--json", str(tmp_path / "e.json")]) == 0
    assert main(["grade", "--voc", str(d), "--json", str(tmp_path / "g.json")]) == 0
    assert len(json.loads((tmp_path / "g.json").read_text())) == len(ODD_KINDS)

    data, _ = oct_folder(tmp_path, None, oct_sample)
    for kind in ODD_KINDS + ["16bit"]:
        write_kind(data / "CNV" / f"CNV-9{len(kind)}-{kind}.jpeg", kind)
    assert main(["oct", "train", "--data", str(data), "--config", str(oct_fast_config),
                 "--out", str(tmp_path / "octrun"), "--head", "linear"]) == 0
    assert main(["oct", "predict", str(data / "CNV"), "--weights", str(oct_run / "best.pt"),
                 "--out", str(tmp_path / "op")]) == 0
    assert main(["oct", "eval", "--data", str(data), "--weights", str(oct_run / "best.pt"),
                 "--out", str(tmp_path / "oe")]) == 0
    assert "Traceback" not in capsys.readouterr().err


# ----------------------------------------------------------------------------- empty and unreadable folders
def _commands(folder: Path, trained_run: Path, oct_run: Path, out: Path, seg: str = "", grader: str = ""
              ) -> dict[str, list[str]]:
    w, o = str(trained_run / "best.pt"), str(oct_run / "best.pt")
    return {
        "train": ["train", "--voc", str(folder), "--out", str(out)],
        "detect": ["detect", str(folder), "--weights", w, "--out", str(out)],
        "eval": ["eval", "--map", "--voc", str(folder), "--weights", w, "--json", str(out / "e.json")],
        "grade": ["grade", "--voc", str(folder), "--json", str(out / "g.json")],
        "oct train": ["oct", "train", "--data", str(folder), "--out", str(out)],
        "oct predict": ["oct", "predict", str(folder), "--weights", o, "--out", str(out)],
        "oct eval": ["oct", "eval", "--data", str(folder), "--weights", o, "--out", str(out)],
        "oct segment train": ["oct", "segment", "train", "--data", str(folder), "--out", str(out)],
        "oct segment predict": ["oct", "segment", "predict", str(folder), "--weights", seg, "--out", str(out)],
        "oct segment eval": ["oct", "segment", "eval", "--data", str(folder), "--weights", seg, "--out", str(out)],
        "grader predict": ["grader", "predict", str(folder), "--weights", grader, "--json", str(out / "p.json")],
    }


COMMANDS = ["train", "detect", "eval", "grade", "oct train", "oct predict", "oct eval", "oct segment train",
            "oct segment predict", "oct segment eval", "grader predict"]


@pytest.mark.parametrize("command", COMMANDS)
def test_an_empty_folder_is_one_line(command, tmp_path, capsys, trained_run, oct_run, seg_run, grader_run):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    rc = main(_commands(empty, trained_run, oct_run, out, str(seg_run / "best.pt"),
                        str(grader_run / "best.pt"))[command])
    expect_one_line_error(capsys, rc, str(empty))
    assert not out.exists()


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unreadable_folder_is_one_line(command, tmp_path, capsys, trained_run, oct_run, seg_run, grader_run,
                                         monkeypatch):
    # chmod 000 does not stop root (CI runs as root), so the OS refusal is simulated where folders are listed.
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "a.xml").write_text("<annotation/>")
    real = pathlib.Path.iterdir

    def iterdir(self):
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(pathlib.Path, "iterdir", iterdir)
    out = tmp_path / "out"
    rc = main(_commands(locked, trained_run, oct_run, out, str(seg_run / "best.pt"),
                        str(grader_run / "best.pt"))[command])
    expect_one_line_error(capsys, rc, str(locked), "permission denied")
    assert not out.exists()


# ----------------------------------------------------------------------------- CLI values and checkpoints
@pytest.mark.parametrize("argv,needle", [
    (["train", "--voc", "x", "--epochs", "ten"], "'ten' is not a whole number"),
    (["train", "--voc", "x", "--lr", "fast"], "'fast' is not a number"),
    (["detect", "a.jpg", "--weights", "w.pt", "--score", "high"], "'high' is not a number"),
    (["detect", "a.jpg", "--weights", "w.pt", "--tile", "-5"], "must be at least 1"),
    (["detect", "a.jpg", "--weights", "w.pt", "--nested-ios", "2"], "must be between 0 and 1"),
    (["eval", "--map", "--voc", "x", "--pred", "y", "--score", "1.5"], "must be between 0 and 1"),
    (["oct", "train", "--data", "x", "--epochs", "two"], "'two' is not a whole number"),
    (["oct", "predict", "a.png", "--weights", "w.pt", "--topk", "0"], "must be at least 1"),
    (["oct", "eval", "--data", "x", "--weights", "w.pt", "--head", "deep"], "invalid choice"),
    (["grade", "--voc", "x", "--labels"], "expected one argument"),
])
def test_a_bad_option_value_is_one_line(argv, needle, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    expect_one_line_error(capsys, 2, needle)


@pytest.fixture(scope="module")
def bad_checkpoints(tmp_path_factory, trained_run, oct_run) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ckpt")
    ck = torch.load(trained_run / "best.pt", weights_only=False)
    ck["arch"] = {**ck["arch"], "fpn_channels": 32}  # another architecture than its tensors
    torch.save(ck, d / "other_arch.pt")
    good = (trained_run / "last.pt").read_bytes()
    (d / "truncated.pt").write_bytes(good[: len(good) // 3])
    (d / "garbage.pt").write_bytes(b"\x00not a checkpoint" * 10)
    shutil.copy(oct_run / "best.pt", d / "oct.pt")
    shutil.copy(trained_run / "best.pt", d / "detector.pt")
    return {p.stem: p for p in d.iterdir()}


@pytest.mark.parametrize("command,ckpt,needle", [
    ("detect", "other_arch", "do not match"), ("detect", "truncated", "cannot read"),
    ("detect", "garbage", "cannot read"), ("detect", "oct", "not a lesiondet detector"),
    ("eval", "other_arch", "do not match"), ("eval", "truncated", "cannot read"),
    ("eval", "oct", "not a lesiondet detector"),
    ("train --resume", "truncated", "cannot read"), ("train --resume", "oct", "cannot be resumed"),
    ("oct predict", "detector", "not"), ("oct predict", "garbage", "cannot read"),
    ("oct eval", "detector", "not"), ("oct eval", "truncated", "cannot read"),
])
def test_a_wrong_or_corrupt_checkpoint_is_one_line(command, ckpt, needle, bad_checkpoints, tmp_path, capsys,
                                                   tiny_sample, oct_sample):
    w = str(bad_checkpoints[ckpt])
    img = str(next((tiny_sample / "test" / "JPEGImages").iterdir()))
    out = tmp_path / "out"
    argv = {
        "detect": ["detect", img, "--weights", w, "--out", str(out)],
        "eval": ["eval", "--map", "--voc", str(tiny_sample / "test"), "--weights", w, "--json", str(out / "e.json")],
        "train --resume": ["train", "--resume", w],
        "oct predict": ["oct", "predict", str(oct_sample / "CNV"), "--weights", w, "--out", str(out)],
        "oct eval": ["oct", "eval", "--data", str(oct_sample), "--weights", w, "--out", str(out)],
    }[command]
    rc = main(argv)
    expect_one_line_error(capsys, rc, bad_checkpoints[ckpt].name, needle)
    assert not out.exists()
