"""The command line end to end: train → detect → eval, resume, and one-line errors for bad input."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lesiondet.cli import main
from tests.conftest import ROOT, write_image, write_xml

pytestmark = pytest.mark.e2e  # through the CLI, with trained models


def test_train_writes_a_complete_run_folder(trained_run: Path):
    for name in ("best.pt", "last.pt", "metrics.csv", "curves.png", "pr_curves.png"):
        assert (trained_run / name).is_file(), name
    ck = torch.load(trained_run / "best.pt", weights_only=False)
    assert ck["classes"] == ["MA", "HE", "EX", "OD"] and ck["arch"]["min_size"] == 128
    assert ck["tiling"]["tile"] == 128 and ck["tiling"]["zoom"] == 1
    header = (trained_run / "metrics.csv").read_text().splitlines()[0]
    assert "val_mAP50" in header and "loss_classifier" in header
    assert not list(trained_run.glob("*.tmp"))


def test_a_second_run_gets_a_new_numbered_folder(trained_run: Path, tiny_sample, tiny_config):
    rc = main(["train", "--voc", str(tiny_sample / "train"), "--val-split", "0.3", "--config", str(tiny_config),
               "--out", str(trained_run), "--time-limit", "0.01"])
    assert rc == 0
    second = trained_run.parent / (trained_run.name + "2")
    assert (second / "best.pt").is_file()
    assert torch.load(second / "last.pt", weights_only=False)["stopped_early"] is True


def test_detect_writes_png_json_and_labelimg_xml(trained_run, tiny_sample, tmp_path, capsys):
    img = next((tiny_sample / "test" / "JPEGImages").iterdir())
    rc = main(["detect", str(img), "--weights", str(trained_run / "best.pt"), "--score", "0.05",
               "--out", str(tmp_path / "det"), "--grade"])
    assert rc == 0
    out = tmp_path / "det"
    assert (out / f"{img.stem}.png").is_file()
    doc = json.loads((out / f"{img.stem}.json").read_text())
    assert set(doc) >= {"image", "counts", "detections"}
    assert all(0.05 <= d["score"] <= 1 for d in doc["detections"])
    from lesiondet.io.labels import default_label_map
    from lesiondet.io.voc import parse_voc

    rec = parse_voc(out / f"{img.stem}.xml", default_label_map(), images_dir=img.parent)
    assert len(rec.objects) == len(doc["detections"])
    printed = capsys.readouterr()
    assert img.name in printed.out and "grade" in printed.out


def test_detect_does_not_overwrite_an_existing_output_folder(trained_run, tiny_sample, tmp_path):
    img = next((tiny_sample / "test" / "JPEGImages").iterdir())
    for _ in range(2):
        assert main(["detect", str(img), "--weights", str(trained_run / "best.pt"), "--out", str(tmp_path / "d")]) == 0
    assert (tmp_path / "d2" / f"{img.stem}.json").is_file()


def test_eval_with_weights_and_with_prediction_folder_agree(trained_run, tiny_sample, tmp_path):
    gt = tiny_sample / "test"
    assert main(["eval", "--map", "--voc", str(gt), "--weights", str(trained_run / "best.pt"),
                 "--json", str(tmp_path / "w.json")]) == 0
    doc = json.loads((tmp_path / "w.json").read_text())
    assert set(doc) >= {"mAP", "mAP50", "per_class"} and set(doc["per_class"]["MA"]) >= {"AP", "AP50"}
    # the same detections written as VOC and scored from the folder
    assert main(["detect", str(gt / "JPEGImages"), "--weights", str(trained_run / "best.pt"), "--score", "0.01",
                 "--out", str(tmp_path / "pred"), "--exist-ok"]) == 0
    assert main(["eval", "--map", "--voc", str(gt), "--pred", str(tmp_path / "pred"),
                 "--labels", str(ROOT / "configs/datasets/sample.yaml"), "--json", str(tmp_path / "p.json")]) == 0
    doc2 = json.loads((tmp_path / "p.json").read_text())
    assert doc2["mAP50"] == pytest.approx(doc["mAP50"], abs=0.02)  # scores rounded to 4 places, boxes to pixels


def test_a_hand_split_folder_trains_on_train_validates_on_val_and_keeps_test(trained_run, tiny_sample):
    data = torch.load(trained_run / "best.pt", weights_only=False)["config"]["data"]
    assert Path(data["sources"][0]["voc"]) == tiny_sample / "train" and Path(data["val"]) == tiny_sample / "val"
    assert Path(data["heldout"]) == tiny_sample / "test"


def test_eval_map_alone_scores_the_newest_run_on_the_split_it_held_out(trained_run, tiny_sample, tmp_path, capsys):
    import shutil

    (tmp_path / "runs" / "train").mkdir(parents=True)  # the working folder's runs/, as 'lesiondet train' leaves it
    shutil.copy(trained_run / "best.pt", tmp_path / "runs" / "train" / "best.pt")
    assert main(["eval", "--map", "--json", str(tmp_path / "e.json")]) == 0
    out = capsys.readouterr().out
    assert f"scored {Path('runs/train/best.pt')} on {tiny_sample / 'test'}" in out
    assert "FROC" in out and "mAP@[.5:.95]" in out
    assert json.loads((tmp_path / "e.json").read_text())["n_images"] == 2  # tiny_sample's test/


def test_eval_map_alone_without_a_run_says_what_to_do(tmp_path, capsys):
    assert main(["eval", "--map"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no training run" in err[0] and "lesiondet train --voc annotations/" in err[0]


def test_eval_of_ground_truth_against_itself_is_one(tiny_sample, tmp_path):
    gt = str(tiny_sample / "test")
    assert main(["eval", "--map", "--voc", gt, "--pred", gt, "--json", str(tmp_path / "g.json"),
                 "--out", str(tmp_path / "ev")]) == 0
    doc = json.loads((tmp_path / "g.json").read_text())
    assert doc["mAP"] == 1.0 and doc["mAP50"] == 1.0
    assert doc["grade_agreement"]["accuracy"] == 1.0 and doc["grade_agreement"]["qwk"] == 1.0
    assert all(p == 1.0 for p in doc["pr50"]["MA"])  # perfect precision at every recall level
    for name in ("pr_curves.png", "froc.png", "grade_confusion.png"):
        assert (tmp_path / "ev" / name).stat().st_size > 5000, name
    assert set(doc["froc"]["MA"]) == {"0.125", "0.25", "0.5", "1", "2", "4", "8", "mean"}
    assert doc["froc"]["MA"]["0.125"] == 1.0 and doc["froc"]["EX"]["mean"] == 1.0
    assert sum(b["n_gt"] for b in doc["ap50_by_size"].values()) == sum(c["n_gt"] for c in doc["per_class"].values())


def test_eval_and_detect_take_slicing_options(trained_run, tiny_sample, tmp_path):
    gt = str(tiny_sample / "test")
    for extra in (["--no-slice"], ["--tile", "96", "--overlap", "0.5", "--merge", "wbf", "--nested-ios", "0"]):
        assert main(["eval", "--map", "--voc", gt, "--weights", str(trained_run / "best.pt"), *extra]) == 0


def test_training_on_two_datasets_records_what_each_annotates(tiny_sample, tiny_config, tmp_path):
    train = tiny_sample / "train"
    (tmp_path / "full.yaml").write_text(f"name: full\npath: {train}\nlabels:\n  classes: [MA, HE, EX, OD]\n")
    (tmp_path / "part.yaml").write_text(f"name: part\npath: {train}\nlabels:\n  classes: [EX]\n"
                                        "  ignore: [MA, HE, OD]\n")
    out = tmp_path / "run"
    assert main(["train", "--voc", str(tmp_path / "full.yaml"), "--voc", str(tmp_path / "part.yaml"),
                 "--config", str(tiny_config), "--out", str(out), "--time-limit", "0.01"]) == 0
    ck = torch.load(out / "best.pt", weights_only=False)
    assert ck["classes"] == ["MA", "HE", "EX", "OD"]
    assert ck["annotated"] == {"full": ["MA", "HE", "EX", "OD"], "part": ["EX"]}


def test_resume_continues_from_last_pt(trained_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    assert main(["train", "--resume", str(run / "last.pt"), "--epochs", "2"]) == 0
    ck = torch.load(run / "last.pt", weights_only=False)
    assert ck["epoch"] == 1 and [r["epoch"] for r in ck["history"]] == [1, 2]


# ------------------------------------------------------------------ bad input → one line, non-zero, no traceback
def _bad_voc(tmp_path: Path, **kw) -> Path:
    d = tmp_path / "bad"
    d.mkdir(exist_ok=True)
    write_image(d / "a.jpg")
    write_image(d / "b.jpg")
    write_xml(d / "b.xml", "b.jpg", objects=[("MA", 1, 1, 4, 4)])
    write_xml(d / "a.xml", "a.jpg", **kw)
    return d


@pytest.mark.parametrize("case", ["unknown_label", "outside", "zero_size", "malformed", "missing_image", "empty"])
def test_train_rejects_bad_data_in_one_line(tmp_path, capsys, case):
    if case == "unknown_label":
        d = _bad_voc(tmp_path, objects=[("tumour", 1, 1, 4, 4)])
    elif case == "outside":
        d = _bad_voc(tmp_path, objects=[("MA", 60, 1, 90, 4)])
    elif case == "zero_size":
        d = _bad_voc(tmp_path, objects=[("MA", 5, 5, 4, 9)])
    elif case == "malformed":
        d = _bad_voc(tmp_path)
        (d / "a.xml").write_text("<annotation><object>")
    elif case == "missing_image":
        d = _bad_voc(tmp_path)
        (d / "a.jpg").unlink()
    else:
        d = tmp_path / "empty"
        d.mkdir()
    out = tmp_path / "runs" / "x"
    rc = main(["train", "--voc", str(d), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("lesiondet: error: ") and str(d) in err[0]
    assert not out.exists()  # nothing half-written


def test_detect_with_mismatched_or_corrupt_weights_fails_cleanly(tmp_path, capsys, trained_run):
    img = write_image(tmp_path / "a.jpg")
    ck = torch.load(trained_run / "best.pt", weights_only=False)
    ck["classes"] = ck["classes"] + ["SE"]  # architecture no longer matches the tensors
    torch.save(ck, tmp_path / "other.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"\x00" * 100)
    for w, needle in (("other.pt", "do not match"), ("corrupt.pt", "cannot read"), ("nope.pt", "not found")):
        rc = main(["detect", str(img), "--weights", str(tmp_path / w), "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and needle in err[0] and w in err[0]
    assert not (tmp_path / "o").exists()


def test_detect_on_a_folder_keeps_going_past_a_bad_image(tmp_path, trained_run, capsys):
    d = tmp_path / "imgs"
    d.mkdir()
    write_image(d / "good.jpg", (128, 128))
    (d / "broken.jpg").write_bytes(b"garbage")
    rc = main(["detect", str(d), "--weights", str(trained_run / "best.pt"), "--out", str(tmp_path / "o")])
    assert rc == 1
    assert (tmp_path / "o" / "good.json").is_file() and not (tmp_path / "o" / "broken.json").exists()
    assert "broken.jpg" in (tmp_path / "o" / "failures.txt").read_text()


def test_folder_detect_draws_a_progress_bar_when_asked(tmp_path, trained_run, tiny_sample, monkeypatch, capsys):
    monkeypatch.setenv("LESIONDET_PROGRESS", "1")  # bars are drawn on a terminal; this forces one in a pipe
    assert main(["detect", str(tiny_sample / "test" / "JPEGImages"), "--weights", str(trained_run / "best.pt"),
                 "--out", str(tmp_path / "d")]) == 0
    assert "detect: 100%" in capsys.readouterr().err


def test_bars_stay_out_of_logs(tmp_path, trained_run, tiny_sample, capsys):
    assert main(["detect", str(tiny_sample / "test" / "JPEGImages"), "--weights", str(trained_run / "best.pt"),
                 "--out", str(tmp_path / "d")]) == 0
    assert "%|" not in capsys.readouterr().err


def test_non_numeric_option_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--voc", "x", "--epochs", "ten"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'ten' is not a whole number" in err[0]


def test_console_script_prints_no_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "lesiondet", "eval", "--map", "--voc", str(tmp_path / "none"),
                        "--pred", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == f"lesiondet: error: {tmp_path / 'none'}: folder not found; " \
                               "pass the folder that holds the labelImg .xml files"


def test_torchrun_ddp_on_cpu_trains_into_one_run_folder(tiny_sample, tiny_config, tmp_path):
    out = tmp_path / "runs" / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "lesiondet",
                        "train", "--voc", str(tiny_sample / "train"), "--val", str(tiny_sample / "val"),
                        "--config", str(tiny_config), "--out", str(out), "--device", "cpu"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / "best.pt").is_file() and not (tmp_path / "runs" / "ddp2").exists()
    assert r.stderr.count("done:") == 1  # only rank 0 reports
