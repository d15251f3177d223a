"""``lesiondet grader train|fit|eval|predict`` and ``detect --grade`` with an image model, on graded photographs."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from lesiondet.cli import main
from tests.cli.test_hardening import IMAGE_CASES, expect_one_line_error, write_kind
from tests.conftest import GRADER_FAST

pytestmark = pytest.mark.e2e

EVAL_KEYS = {"qwk", "accuracy", "confusion", "n", "referable", "maculopathy"}


def test_train_writes_a_run_folder_with_tuned_thresholds_and_the_split(grader_run):
    from lesiondet.engine.checkpoint import load_checkpoint

    for name in ("best.pt", "last.pt", "metrics.csv", "curves.png", "config.yaml", "train.csv", "val.csv"):
        assert (grader_run / name).is_file(), name
    ck = load_checkpoint(grader_run / "best.pt")
    assert len(ck["cuts"]) == 4 and ck["cuts"] == sorted(ck["cuts"])
    train = {r["patient"] for r in csv.DictReader(open(grader_run / "train.csv"))}
    val = {r["patient"] for r in csv.DictReader(open(grader_run / "val.csv"))}
    assert train and val and not train & val


def test_eval_writes_the_issue_json_keys_and_the_pictures(grader_run, srahim_subset, tmp_path):
    j = tmp_path / "m.json"
    assert main(["grader", "eval", "--data", str(srahim_subset), "--weights", str(grader_run / "best.pt"),
                 "--json", str(j), "--out", str(tmp_path / "ev")]) == 0
    m = json.loads(j.read_text())
    assert EVAL_KEYS <= set(m) and m["n"] == len(list(csv.DictReader(open(srahim_subset))))
    assert {"sensitivity", "specificity", "auc", "ci95"} <= set(m["referable"])
    assert {"sensitivity", "specificity", "auc"} <= set(m["maculopathy"])
    assert len(m["confusion"]) == 5 and sum(map(sum, m["confusion"])) == m["n"]
    assert (tmp_path / "ev" / "grade_confusion.png").is_file() and (tmp_path / "ev" / "embedding_tsne.png").is_file()


def test_predict_grades_photographs_and_reports_an_ungradable_one(grader_run, srahim_subset, tmp_path, capsys):
    import cv2

    first = next(csv.DictReader(open(srahim_subset)))["image"]
    dark = tmp_path / "dark.jpg"
    cv2.imwrite(str(dark), (cv2.imread(first) * 0.05).astype("uint8"))
    j = tmp_path / "p.json"
    assert main(["grader", "predict", first, str(dark), "--weights", str(grader_run / "best.pt"),
                 "--json", str(j)]) == 0
    good, bad = json.loads(j.read_text())
    assert good["gradable"] and good["grade"] in range(5) and isinstance(good["referable"], bool)
    assert not bad["gradable"] and bad["grade"] is None and "too dark" in " ".join(bad["quality"]["reasons"])
    assert "ungradable" in capsys.readouterr().out


def test_resume_continues_a_grader_run(srahim_subset, tmp_path):
    cfg = tmp_path / "g.yaml"
    cfg.write_text(GRADER_FAST)
    out = tmp_path / "run"
    assert main(["grader", "train", "--data", str(srahim_subset), "--config", str(cfg), "--out", str(out)]) == 0
    assert main(["grader", "train", "--data", str(srahim_subset), "--resume", str(out / "last.pt"),
                 "--epochs", "2"]) == 0
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]


def test_detect_grade_with_an_image_model_gives_one_final_grade_per_photograph(trained_run, grader_run,
                                                                              srahim_subset, tmp_path):
    first = next(csv.DictReader(open(srahim_subset)))["image"]
    out = tmp_path / "det"
    assert main(["detect", first, "--weights", str(trained_run / "best.pt"), "--grade", "--grader",
                 str(grader_run / "best.pt"), "--out", str(out), "--report"]) == 0
    g = json.loads((out / f"{Path(first).stem}.json").read_text())["grade"]
    assert {"grade", "referable", "grade_source", "model_probabilities", "rule_grade", "reasons", "counts",
            "gradable", "quality"} <= set(g)
    assert g["grade_source"] in ("cnn", "cnn+lesions") and g["grade"] in range(5)
    html = (out / "report.html").read_text()
    assert "The lesions' account (rule grade)" in html and "from: cnn" in html


# ----------------------------------------------------------------------------- bad input
def graded_csv(tmp_path: Path, case: str) -> tuple[Path, str]:
    d = tmp_path / "imgs"
    d.mkdir()
    rows = []
    for i in range(4):
        write_kind(d / f"good{i}.jpg", "good")
        rows.append(f"imgs/good{i}.jpg,{i % 3},0,P{i}")
    bad = "bad.jpg" if case == "missing_image" else write_kind(d / "bad.jpg", case).name
    rows.append(f"imgs/{bad},1,0,P9")
    p = tmp_path / "labels.csv"
    p.write_text("image,dr_grade,maculopathy,patient\n" + "\n".join(rows) + "\n")
    return p, bad


@pytest.mark.parametrize("case", list(IMAGE_CASES))
def test_train_fit_and_eval_refuse_a_bad_photograph_before_writing_anything(case, tmp_path, capsys, grader_run):
    data, bad = graded_csv(tmp_path, case)
    out = tmp_path / "runs" / "g"
    rc = main(["grader", "train", "--data", str(data), "--out", str(out)])
    expect_one_line_error(capsys, rc, bad, IMAGE_CASES[case])
    assert not out.exists()
    j = tmp_path / "m.json"
    rc = main(["grader", "eval", "--data", str(data), "--weights", str(grader_run / "best.pt"), "--json", str(j),
               "--out", str(tmp_path / "ev")])
    expect_one_line_error(capsys, rc, bad)
    assert not j.exists() and not (tmp_path / "ev").exists()
    rc = main(["grader", "fit", "--data", str(data), "--weights", str(grader_run / "best.pt"),
               "--out", str(tmp_path / "fit")])
    expect_one_line_error(capsys, rc, bad)
    assert not (tmp_path / "fit").exists()


def test_predict_on_a_folder_skips_a_bad_photograph_and_names_it(tmp_path, capsys, grader_run):
    d = tmp_path / "imgs"
    d.mkdir()
    write_kind(d / "good.jpg", "good")
    write_kind(d / "bad.jpg", "truncated")
    j = tmp_path / "p.json"
    rc = main(["grader", "predict", str(d), "--weights", str(grader_run / "best.pt"), "--json", str(j)])
    assert rc == 1
    expect_one_line_error(capsys, rc, "bad.jpg", "truncated or corrupt")
    assert [Path(p["image"]).name for p in json.loads(j.read_text())] == ["good.jpg"]


def test_an_empty_folder_and_a_wrong_model_file_are_one_line(tmp_path, capsys, trained_run):
    empty = tmp_path / "empty"
    empty.mkdir()
    rc = main(["grader", "predict", str(empty), "--weights", str(trained_run / "best.pt")])
    expect_one_line_error(capsys, rc, str(empty))
    d = tmp_path / "imgs"
    d.mkdir()
    write_kind(d / "good.jpg", "good")
    rc = main(["grader", "predict", str(d), "--weights", str(trained_run / "best.pt")])
    expect_one_line_error(capsys, rc, "not a lesiondet grading-CNN checkpoint")


# ----------------------------------------------------------------------------- grader fit (the grade readout)
FIT_FAST = "grader:\n  batch: 8\n  readout_sizes: [64, 96]\n  readout_folds: 3\n  readout_views: 1\n"


def lesion_results(srahim_subset: Path, folder: Path) -> Path:
    """``detect --grade``-shaped JSONs for the subset, with more haemorrhages in worse eyes (no detector run)."""
    from tests.grading.test_learned import write_result

    folder.mkdir(exist_ok=True)
    for r in csv.DictReader(open(srahim_subset)):
        write_result(folder, Path(r["image"]).stem, 2 * int(r["dr_grade"]))
    return folder


@pytest.fixture(scope="module")
def fitted(grader_run, srahim_subset, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("fit")
    (tmp / "fit.yaml").write_text(FIT_FAST)
    out = tmp / "fit"
    assert main(["grader", "fit", "--data", str(srahim_subset), "--weights", str(grader_run / "best.pt"),
                 "--lesions", str(lesion_results(srahim_subset, tmp / "lesions")), "--config", str(tmp / "fit.yaml"),
                 "--out", str(out), "--device", "cpu"]) == 0
    return out


def ck_views(fitted):
    from lesiondet.engine.checkpoint import load_checkpoint

    return load_checkpoint(fitted / "grader.pt")["readout"]["views"]


def test_fit_writes_a_grader_with_its_readout_and_out_of_fold_figures(fitted, srahim_subset):
    from lesiondet.engine.checkpoint import load_checkpoint

    for name in ("grader.pt", "fit.json", "grade_confusion.png"):
        assert (fitted / name).is_file(), name
    report = json.loads((fitted / "fit.json").read_text())
    # the CNN block's figures on the photographs' camera-shifted views too (``grader.readout_views``)
    assert set(report["out_of_fold"]) == {"cnn", "cnn+lesions", "cnn@views"}
    assert ck_views(fitted) == 1
    assert report["n"] == len(list(csv.DictReader(open(srahim_subset)))) and report["sizes"] == [64, 96]
    for m in report["out_of_fold"].values():
        assert EVAL_KEYS <= set(m) and -1 <= m["qwk"] <= 1
    ck = load_checkpoint(fitted / "grader.pt")
    assert ck["readout"]["sizes"] == [64, 96] and "optimizer" not in ck


def test_a_fitted_grader_predicts_and_detect_grade_weighs_the_lesions(fitted, trained_run, srahim_subset, tmp_path):
    first = next(csv.DictReader(open(srahim_subset)))["image"]
    j = tmp_path / "p.json"
    assert main(["grader", "predict", first, "--weights", str(fitted / "grader.pt"), "--json", str(j)]) == 0
    p = json.loads(j.read_text())
    assert p["source"] == "cnn" and p["grade"] in range(5) and len(p["probabilities"]) == 5
    out = tmp_path / "det"
    assert main(["detect", first, "--weights", str(trained_run / "best.pt"), "--grade", "--grader",
                 str(fitted / "grader.pt"), "--out", str(out)]) == 0
    g = json.loads((out / f"{Path(first).stem}.json").read_text())["grade"]
    assert g["grade_source"] == "cnn+lesions" and g["grade"] in range(5)
    assert g["referable"] or g["grade"] < 2  # grade 2 or worse is always referred


def test_fit_without_a_photograph_s_detections_is_one_line_and_writes_nothing(grader_run, srahim_subset, tmp_path,
                                                                              capsys):
    lesions = lesion_results(srahim_subset, tmp_path / "lesions")
    missing = sorted(lesions.glob("*.json"))[3]
    missing.unlink()
    out = tmp_path / "fit"
    rc = main(["grader", "fit", "--data", str(srahim_subset), "--weights", str(grader_run / "best.pt"),
               "--lesions", str(lesions), "--out", str(out)])
    expect_one_line_error(capsys, rc, missing.name, "lesiondet detect")
    assert not out.exists()
