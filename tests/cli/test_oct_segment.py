"""``lesiondet oct segment train|predict|eval`` and ``oct predict --seg`` on the shared Duke scans; bad input."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from lesiondet.cli import main
from tests.cli.test_hardening import IMAGE_CASES, expect_one_line_error, no_files, write_kind
from tests.conftest import SEG_FAST

pytestmark = pytest.mark.e2e
EVAL_KEYS = {"dice", "iou", "pixel_accuracy", "dice_per_scan_mean", "per_scan", "n"}


def test_train_writes_an_engine_run_folder(seg_run):
    for name in ("best.pt", "last.pt", "metrics.csv", "curves.png", "config.yaml"):
        assert (seg_run / name).is_file(), name


def test_predict_writes_mask_overlay_and_fluid_json_per_scan(seg_run, shared_data, tmp_path):
    scan = shared_data / "oct_fluid" / "images" / "subject01_bscan05.png"
    out = tmp_path / "p"
    assert main(["oct", "segment", "predict", str(scan), "--weights", str(seg_run / "best.pt"), "--out", str(out),
                 "--json", str(tmp_path / "all.json")]) == 0
    doc = json.loads((out / "subject01_bscan05.json").read_text())
    assert {"fluid_px", "fluid_fraction", "regions"} <= set(doc) and doc["width"] == 768
    mask = cv2.imread(str(out / "subject01_bscan05_mask.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (496, 768) and set(np.unique(mask)) <= {0, 255} and (mask > 0).sum() == doc["fluid_px"]
    assert (out / "subject01_bscan05_overlay.png").is_file()


def test_eval_writes_the_issue_json_keys_and_the_pictures(seg_run, shared_data, tmp_path):
    csv = tmp_path / "v.csv"
    d = shared_data / "oct_fluid"
    csv.write_text("image,mask,subject\n" + "".join(
        f"{d}/images/subject08_bscan0{i}.png,{d}/masks/subject08_bscan0{i}.png,8\n" for i in range(4)))
    j = tmp_path / "m.json"
    assert main(["oct", "segment", "eval", "--data", str(csv), "--weights", str(seg_run / "best.pt"), "--json", str(j),
                 "--out", str(tmp_path / "ev")]) == 0
    m = json.loads(j.read_text())
    assert EVAL_KEYS <= set(m) and m["n"] == 4 and 0 <= m["dice"] <= 1
    assert {"image", "dice", "fluid_px_true", "fluid_px_pred"} <= set(m["per_scan"][0])
    assert (tmp_path / "ev" / "overlay_grid.png").is_file() and (tmp_path / "ev" / "area_scatter.png").is_file()


def test_eval_with_spacing_gives_the_hand_computed_fluid_area_of_each_reference_mask(seg_run, shared_data, tmp_path):
    d = shared_data / "oct_fluid"
    names = [f"subject08_bscan0{i}.png" for i in range(2)]
    csv = tmp_path / "v.csv"
    csv.write_text("image,mask,subject\n" + "".join(f"{d}/images/{n},{d}/masks/{n},8\n" for n in names))
    j = tmp_path / "m.json"
    assert main(["oct", "segment", "eval", "--data", str(csv), "--weights", str(seg_run / "best.pt"), "--json", str(j),
                 "--out", str(tmp_path / "ev"), "--spacing", "11.3", "3.9"]) == 0
    m = json.loads(j.read_text())
    for n, row in zip(names, m["per_scan"]):
        px = int((cv2.imread(str(d / "masks" / n), cv2.IMREAD_GRAYSCALE) > 0).sum())
        assert row["fluid_mm2_true"] == pytest.approx(px * 11.3 * 3.9 / 1e6)
        assert row["area_abs_error_mm2"] == pytest.approx(abs(row["fluid_px_pred"] - px) * 11.3 * 3.9 / 1e6)
    assert m["area_abs_error_mm2_mean"] == pytest.approx(sum(r["area_abs_error_mm2"] for r in m["per_scan"]) / 2)


def test_resume_continues_a_segmentation_run(shared_data, tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(SEG_FAST)
    out = tmp_path / "run"
    data = str(shared_data / "oct_fluid" / "scans.csv")
    assert main(["oct", "segment", "train", "--data", data, "--config", str(cfg), "--out", str(out)]) == 0
    assert main(["oct", "segment", "train", "--data", data, "--resume", str(out / "last.pt"), "--epochs", "2"]) == 0
    assert [r.split(",")[0] for r in (out / "metrics.csv").read_text().splitlines()[1:]] == ["1", "2"]


def test_oct_predict_reports_fluid_beside_the_class(seg_run, oct_run, shared_data, tmp_path):
    scan = shared_data / "oct_fluid" / "images" / "subject02_bscan05.png"
    j = tmp_path / "p.json"
    assert main(["oct", "predict", str(scan), "--weights", str(oct_run / "best.pt"), "--seg",
                 str(seg_run / "best.pt"), "--json", str(j), "--out", str(tmp_path / "op")]) == 0
    doc = json.loads(j.read_text())
    assert {"fluid_px", "fluid_fraction", "regions"} <= set(doc["fluid"]) and "flag" in doc


# ----------------------------------------------------------------------------- bad input
def scan_folder(tmp_path, case):
    d = tmp_path / "data"
    (d / "images").mkdir(parents=True)
    (d / "masks").mkdir()
    for i in range(4):
        write_kind(d / "images" / f"subj{i % 2}_scan{i}.png", "good")
        m = np.zeros((80, 96), np.uint8)
        m[20:30, 20:40] = 255
        cv2.imwrite(str(d / "masks" / f"subj{i % 2}_scan{i}.png"), m)
    bad = "subj0_scan0.png"
    if case == "mask_size":
        cv2.imwrite(str(d / "masks" / bad), np.zeros((50, 60), np.uint8))
    elif case == "mask_16bit":
        cv2.imwrite(str(d / "masks" / bad), np.zeros((80, 96), np.uint16) + 1000)
    elif case == "missing_mask":
        (d / "masks" / bad).unlink()
    elif case == "orphan_mask":
        cv2.imwrite(str(d / "masks" / "subj9_scan9.png"), np.zeros((80, 96), np.uint8))
        bad = "subj9_scan9.png"
    elif case in IMAGE_CASES and case != "missing_image":
        (d / "images" / bad).unlink()
        bad = write_kind(d / "images" / "subj0_scan0.jpg", case).name
    return d, bad


SEG_CASES = {"mask_size": "but its scan", "mask_16bit": "16-bit", "missing_mask": "no mask with this name",
             "orphan_mask": "mask without a scan", "truncated": "truncated or corrupt", "zero_byte": "empty (0 bytes)"}


@pytest.mark.parametrize("case", list(SEG_CASES))
def test_train_and_eval_refuse_bad_pairs_before_writing_anything(case, tmp_path, capsys, seg_run):
    d, bad = scan_folder(tmp_path, case)
    out = tmp_path / "runs" / "seg"
    rc = main(["oct", "segment", "train", "--data", str(d), "--out", str(out)])
    expect_one_line_error(capsys, rc, bad, SEG_CASES[case])
    assert not out.exists()
    j = tmp_path / "m.json"
    rc = main(["oct", "segment", "eval", "--data", str(d), "--weights", str(seg_run / "best.pt"), "--json", str(j),
               "--out", str(tmp_path / "ev")])
    expect_one_line_error(capsys, rc, bad, SEG_CASES[case])
    assert not j.exists() and not (tmp_path / "ev").exists()


@pytest.mark.parametrize("recipe, message", [("crop_width: 100\n  crop_height: 64", "crop_width and crop_height"),
                                             ("augment: wild", "unknown segment augment"),
                                             ("loss: lovasz", "unknown segment loss")])
def test_a_recipe_it_cannot_train_is_refused_before_a_run_folder(recipe, message, tmp_path, capsys):
    d, _ = scan_folder(tmp_path, "none")
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(f"segment:\n  {recipe}\n")
    out = tmp_path / "runs" / "seg"
    rc = main(["oct", "segment", "train", "--data", str(d), "--config", str(cfg), "--out", str(out)])
    expect_one_line_error(capsys, rc, message)
    assert not out.exists()


def test_predict_skips_a_bad_scan_and_names_it(tmp_path, capsys, seg_run):
    d = tmp_path / "imgs"
    d.mkdir()
    write_kind(d / "good.png", "good")
    write_kind(d / "bad.jpg", "truncated")
    out = tmp_path / "p"
    rc = main(["oct", "segment", "predict", str(d), "--weights", str(seg_run / "best.pt"), "--out", str(out)])
    assert rc == 1
    expect_one_line_error(capsys, rc, "bad.jpg", "truncated or corrupt")
    assert (out / "good_mask.png").is_file() and no_files(out, "bad*")


def test_an_empty_folder_a_split_across_subjects_and_a_wrong_model_are_one_line(tmp_path, capsys, seg_run,
                                                                              trained_run):
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    rc = main(["oct", "segment", "train", "--data", str(empty)])
    expect_one_line_error(capsys, rc, "images")
    d, _ = scan_folder(tmp_path, None)
    rc = main(["oct", "segment", "train", "--data", str(d), "--val", str(d), "--out", str(tmp_path / "r")])
    expect_one_line_error(capsys, rc, "both training and validation")
    rc = main(["oct", "segment", "predict", str(d / "images"), "--weights", str(trained_run / "best.pt")])
    expect_one_line_error(capsys, rc, "not a lesiondet OCT fluid checkpoint")
