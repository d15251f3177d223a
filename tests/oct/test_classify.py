"""OCT classifier: data reading, patient-grouped splits, metrics, and train → predict → eval."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from lesiondet.cli import main
from lesiondet.errors import LesiondetError
from lesiondet.oct.classify import (
    OctClassifier,
    class_weights,
    classification_metrics,
    patient_of,
    patient_split,
    read_oct_data,
    read_scan,
)
from tests.conftest import OCT_FAST as FAST


def test_kermany_names_give_the_patient():
    assert patient_of("CNV-53018-1.jpeg") == "53018"
    assert patient_of("/x/DRUSEN-9-12.jpeg") == "9"
    assert patient_of("scan_0001.png") == "scan_0001"  # no patient in the name: its own group


def test_no_patient_is_on_both_sides_of_the_split(oct_sample):
    samples = read_oct_data(oct_sample)
    assert len(samples) == 24 and {s.label for s in samples} == {"CNV", "DME", "DRUSEN", "NORMAL"}
    train, val = patient_split(samples, 0.25, seed=0)
    assert train and val and len(train) + len(val) == 24
    assert not {s.patient for s in train} & {s.patient for s in val}


def test_a_validation_folder_sharing_a_patient_with_training_is_refused_in_one_line(oct_sample, tmp_path, capsys):
    import shutil

    val = tmp_path / "val" / "CNV"
    val.mkdir(parents=True)
    scan = sorted((oct_sample / "CNV").iterdir())[0]
    shutil.copy(scan, val / scan.name)  # the same patient's scan on both sides
    assert main(["oct", "train", "--data", str(oct_sample), "--val", str(tmp_path / "val"),
                 "--out", str(tmp_path / "run"), "--device", "cpu"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"patient {patient_of(scan)} has B-scans in both training and validation" in err[0]
    assert not (tmp_path / "run").exists()


def test_csv_input_reads_relative_paths_and_rejects_missing_files(oct_sample, tmp_path):
    rows = [f"{p.relative_to(oct_sample.parent)},{p.parent.name}" for p in sorted(oct_sample.glob("*/*.jpeg"))]
    csv_path = oct_sample.parent / "labels.csv"
    csv_path.write_text("path,label\n" + "\n".join(rows) + "\n")
    assert [s.label for s in read_oct_data(csv_path)] == [s.label for s in read_oct_data(oct_sample)]
    bad = tmp_path / "bad.csv"
    bad.write_text("nowhere.jpeg,CNV\n")
    with pytest.raises(LesiondetError, match="nowhere.jpeg"):
        read_oct_data(bad)


def test_grey_rgb_and_16_bit_scans_all_become_rgb_uint8(tmp_path):
    grey = np.tile(np.arange(64, dtype=np.uint8) * 4, (32, 1))
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    cv2.imwrite(str(tmp_path / "c.png"), np.dstack([grey] * 3))
    cv2.imwrite(str(tmp_path / "w.png"), grey.astype(np.uint16) * 257)
    for name in ("g.png", "c.png", "w.png"):
        img = read_scan(tmp_path / name)
        assert img.dtype == np.uint8 and img.shape == (32, 64, 3), name
        assert abs(int(img[0, 63, 0]) - 252) <= 1, name


def test_class_weights_favour_rare_classes():
    from lesiondet.oct.classify import OctSample

    s = [OctSample(Path(f"{c}.jpg"), c, str(i)) for i, c in enumerate(["CNV"] * 9 + ["DRUSEN"] * 1)]
    w = class_weights(s, ["CNV", "DRUSEN"])
    assert w[1] == pytest.approx(9 * w[0]) and w.mean() == pytest.approx(1.0)


def test_metrics_match_scikit_learn():
    from sklearn.metrics import confusion_matrix, recall_score, roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 60)
    proba = rng.dirichlet(np.ones(4), 60)
    proba[np.arange(60), y] += rng.uniform(0, 0.6, 60)  # better than chance, not perfect
    proba /= proba.sum(1, keepdims=True)
    m = classification_metrics(y, proba, ["CNV", "DME", "DRUSEN", "NORMAL"])
    pred = proba.argmax(1)
    assert m["accuracy"] == pytest.approx((pred == y).mean())
    assert m["confusion"] == confusion_matrix(y, pred).tolist()
    sens = recall_score(y, pred, average=None)
    for i, c in enumerate(["CNV", "DME", "DRUSEN", "NORMAL"]):
        assert m["per_class"][c]["sensitivity"] == pytest.approx(sens[i])
        spec = recall_score(y != i, pred != i)  # specificity is the recall of the negatives
        assert m["per_class"][c]["specificity"] == pytest.approx(spec)
        assert m["per_class"][c]["auc"] == pytest.approx(roc_auc_score(y == i, proba[:, i]))


def test_train_writes_both_heads_curves_and_metrics(oct_run):
    for name in ("best.pt", "metrics.csv", "curves.png"):
        assert (oct_run / name).is_file(), name
    import torch

    ck = torch.load(oct_run / "best.pt", weights_only=False)
    assert set(ck["heads"]) == {"finetune", "linear"} and ck["classes"] == ["CNV", "DME", "DRUSEN", "NORMAL"]


def test_linear_head_separates_the_synthetic_classes(oct_run, oct_sample):
    """Frozen ImageNet features see fluid pockets, drusen and CNV lifts: better than chance."""
    clf = OctClassifier(oct_run / "best.pt", head="linear", device="cpu")
    samples = read_oct_data(oct_sample)
    proba = clf.predict_proba([s.path for s in samples])
    acc = np.mean(proba.argmax(1) == [clf.classes.index(s.label) for s in samples])
    assert acc > 0.5
    assert np.allclose(proba.sum(1), 1.0)


def test_the_linear_head_is_one_head_per_input_size_with_probabilities_averaged(oct_run, oct_sample, tmp_path):
    from lesiondet.engine.checkpoint import load_checkpoint, save_checkpoint
    from lesiondet.nn.logistic import PlainLogistic
    from lesiondet.oct.classify import linear_proba, transforms

    ck = load_checkpoint(oct_run / "best.pt")
    lin = ck["heads"]["linear"]
    assert lin["sizes"] == [64, 96] and len(lin["heads"]) == 2
    clf = OctClassifier(oct_run / "best.pt", head="linear", device="cpu")
    img = read_scan(read_oct_data(oct_sample)[0].path)
    per_size = []
    with torch.inference_mode():
        for z, head in zip(lin["sizes"], lin["heads"]):
            x = torch.from_numpy(transforms(z, False)(image=img)["image"]).permute(2, 0, 1)[None].float()
            per_size.append(linear_proba(PlainLogistic.from_dict(head), clf.model.features(x).numpy(), 4))
    from lesiondet.oct.calibrate import with_temperature

    t = lin["calibration"]["temperature"]  # the averaged probabilities, then the stored temperature
    assert np.allclose(clf.predict_proba_arrays([img]), with_temperature((per_size[0] + per_size[1]) / 2, t),
                       atol=1e-5)
    # a checkpoint from before the per-size heads: one head, at the network's size
    old = {**ck, "heads": {**ck["heads"], "linear": {"body": lin["body"], "head": lin["head"]}}}
    save_checkpoint(tmp_path / "old.pt", old)
    legacy = OctClassifier(tmp_path / "old.pt", head="linear", device="cpu")
    assert legacy.sizes == [64] and np.allclose(legacy.predict_proba_arrays([img]), per_size[0], atol=1e-5)
    assert legacy.uncertain_below is None  # no calibration stored: never "uncertain"


def test_predict_prints_class_and_probabilities_and_saves_a_picture(oct_run, oct_sample, tmp_path, capsys):
    scan = sorted((oct_sample / "DME").iterdir())[0]
    assert main(["oct", "predict", str(scan), "--weights", str(oct_run / "best.pt"), "--topk", "2",
                 "--json", str(tmp_path / "p.json"), "--out", str(tmp_path / "pics"), "--device", "cpu"]) == 0
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["class"] in ("CNV", "DME", "DRUSEN", "NORMAL")
    assert sum(doc["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert (tmp_path / "pics" / f"{scan.stem}.png").is_file()
    line = capsys.readouterr().out.strip()
    assert line.startswith(scan.name) and line.count(".") >= 3


def test_eval_json_and_confusion_png(oct_run, oct_sample, tmp_path):
    for head in ("finetune", "linear"):
        out = tmp_path / head
        assert main(["oct", "eval", "--data", str(oct_sample), "--weights", str(oct_run / "best.pt"),
                     "--head", head, "--json", str(out / "e.json"), "--out", str(out), "--device", "cpu"]) == 0
        doc = json.loads((out / "e.json").read_text())
        assert set(doc["per_class"]["CNV"]) >= {"sensitivity", "specificity", "auc"}
        cm = np.array(doc["confusion"])
        assert cm.sum() == 24 and doc["accuracy"] == pytest.approx(np.trace(cm) / 24)
        assert (out / "oct_confusion.png").is_file()


@pytest.mark.parametrize("args,needle", [
    (["oct", "train", "--data", "{tmp}/missing"], "not a folder or a .csv"),
    (["oct", "train", "--data", "{tmp}/empty"], "no images in class folders"),
    (["oct", "predict", "{tmp}/none.jpeg", "--weights", "{tmp}/w.pt"], "image not found"),
    (["oct", "eval", "--data", "{tmp}/empty", "--weights", "{tmp}/w.pt"], "weights file not found"),
])
def test_oct_bad_input_is_one_line(tmp_path, capsys, args, needle):
    (tmp_path / "empty" / "CNV").mkdir(parents=True)
    rc = main([a.format(tmp=tmp_path) for a in args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and needle in err and len(err.splitlines()) == 1


def test_a_detector_checkpoint_is_not_an_oct_checkpoint(trained_run, oct_sample, capsys):
    assert main(["oct", "eval", "--data", str(oct_sample), "--weights", str(trained_run / "best.pt")]) == 2
    assert "not a lesiondet OCT checkpoint" in capsys.readouterr().err


def test_real_kermany_scans_split_by_patient_train_and_predict(shared_data, tmp_path):
    """Runs end to end on the shared scans; only consistency is checked (46 scans prove nothing)."""
    (tmp_path / "fast.yaml").write_text(FAST)
    assert main(["oct", "train", "--data", str(shared_data / "oct"), "--config", str(tmp_path / "fast.yaml"),
                 "--out", str(tmp_path / "run"), "--device", "cpu"]) == 0
    samples = read_oct_data(shared_data / "oct")
    train, val = patient_split(samples, 0.2, seed=0)
    assert not {s.patient for s in train} & {s.patient for s in val}
    clf = OctClassifier(tmp_path / "run" / "best.pt", device="cpu")
    proba = clf.predict_proba([s.path for s in val])
    m = classification_metrics([clf.classes.index(s.label) for s in val], proba, clf.classes)
    assert np.array(m["confusion"]).sum() == len(val)
    assert all(v["sensitivity"] is None or 0 <= v["sensitivity"] <= 1 for v in m["per_class"].values())


@pytest.mark.e2e
def test_oct_training_resumes_from_last_pt(oct_sample, oct_fast_config, tmp_path):
    out = tmp_path / "run"
    assert main(["oct", "train", "--data", str(oct_sample), "--config", str(oct_fast_config), "--out", str(out),
                 "--device", "cpu", "--head", "finetune"]) == 0
    first = torch.load(out / "last.pt", weights_only=True)
    assert [r["epoch"] for r in first["history"]] == [1, 2] and (out / "config.yaml").is_file()
    assert main(["oct", "train", "--data", str(oct_sample), "--resume", str(out / "last.pt"), "--epochs", "2",
                 "--device", "cpu"]) == 0
    done = torch.load(out / "last.pt", weights_only=True)
    assert [r["epoch"] for r in done["history"]] == [1, 2, 3]
    assert [r["phase"] for r in done["history"]] == ["head", "all", "all"]


def test_sqrt_class_weights_sit_between_none_and_balanced():
    from lesiondet.oct.classify import class_weight_map

    labels = ["CNV"] * 100 + ["DRUSEN"] * 10 + ["NORMAL"] * 90
    classes = ["CNV", "DME", "DRUSEN", "NORMAL"]
    bal, sq = class_weight_map(labels, classes, "balanced"), class_weight_map(labels, classes, "sqrt")
    assert class_weight_map(labels, classes, "none") is None
    assert 1 not in bal  # a class with no scans gets no weight
    assert bal[2] > sq[2] > 1 > sq[0] > bal[0]
    with pytest.raises(LesiondetError):
        class_weight_map(labels, classes, "inverse")


def test_a_wide_export_and_a_narrow_one_of_the_same_scan_give_nearly_the_same_input():
    """Area resizing averages what it drops, so the classifier cannot tell a 1024-px export by its speckle."""
    from lesiondet.oct.classify import transforms

    rng = np.random.default_rng(0)
    wide = np.repeat(rng.integers(0, 256, (496, 1024, 1), dtype=np.uint8), 3, axis=2)  # speckle
    narrow = cv2.resize(wide, (512, 496), interpolation=cv2.INTER_AREA)

    def gap(interp):
        tf = transforms(224, False, interp)
        return np.abs(tf(image=wide)["image"] - tf(image=narrow)["image"]).mean()

    assert gap("area") < 0.15 < gap("linear") / 2  # measured: 0.08 against 0.41 (normalised units)


def test_kermany_like_makes_a_duke_scan_512_wide_and_full_range():
    from lesiondet.oct.classify import kermany_like

    rng = np.random.default_rng(1)
    duke = np.repeat(rng.integers(40, 120, (496, 768, 1), dtype=np.uint8), 3, axis=2)
    out = kermany_like(duke)
    assert out.shape == (496, 512, 3) and out.dtype == np.uint8
    assert out.min() == 0 and out.max() == 255


def test_training_stores_a_temperature_and_an_uncertain_cut_that_predict_reports(oct_run, oct_sample, tmp_path):
    from lesiondet.engine.checkpoint import load_checkpoint, save_checkpoint

    ck = load_checkpoint(oct_run / "best.pt")
    cal = ck["heads"]["linear"]["calibration"]
    assert cal["temperature"] > 0 and 0 < cal["coverage"] <= 1 and 0 <= cal["uncertain_below"] <= 1
    # a cut no probability reaches: every scan is "uncertain", its four probabilities still in the JSON
    ck["heads"]["linear"]["calibration"] = {**cal, "uncertain_below": 1.01}
    save_checkpoint(tmp_path / "strict.pt", ck)
    scan = sorted((oct_sample / "CNV").iterdir())[0]
    assert main(["oct", "predict", str(scan), "--weights", str(tmp_path / "strict.pt"), "--head", "linear",
                 "--json", str(tmp_path / "p.json"), "--out", str(tmp_path / "pics"), "--device", "cpu"]) == 0
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["answer"] == "uncertain" and doc["uncertain"] is True and doc["uncertain_below"] == 1.01
    assert doc["class"] in ("CNV", "DME", "DRUSEN", "NORMAL") and len(doc["probabilities"]) == 4


def test_several_data_folders_are_pooled(oct_sample, oct_fast_config, tmp_path):
    import shutil

    a, b = tmp_path / "a", tmp_path / "b"
    for d in oct_sample.iterdir():
        files = sorted(d.iterdir())
        for dst, part in ((a, files[::2]), (b, files[1::2])):
            (dst / d.name).mkdir(parents=True)
            for f in part:
                shutil.copy(f, dst / d.name / f.name)
    logged = []
    from lesiondet import api

    api.oct_train([a, b], val_split=0, head="linear", config=oct_fast_config, out=tmp_path / "run", device="cpu",
                  log=logged.append)
    assert "training on 24 scans" in logged[0]
