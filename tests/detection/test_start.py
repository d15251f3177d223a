"""Where a detector's training starts: the shipped detector by default, another checkpoint, or ImageNet."""
import json
import re
import shutil
from pathlib import Path

import pytest

from lesiondet.detection.operating import MIN_LESIONS, OperatingPoint, recalibrated
from lesiondet.detection.start import choose_start, same_network, with_start_classes
from lesiondet.errors import LesiondetError
from lesiondet.io.labels import LabelMap
from lesiondet.io.voc import VocObject, VocRecord

MA_ONLY = LabelMap(("MA",))
SHIPPED = Path(__file__).resolve().parents[2] / "lesiondet" / "weights" / "detector.pt"


@pytest.mark.skipif(not SHIPPED.is_file(), reason="no shipped detector in this checkout")
def test_auto_starts_from_the_shipped_detector_when_it_knows_a_class_and_is_the_same_network():
    st = choose_start("auto", {}, MA_ONLY)
    assert st.path == SHIPPED.resolve() or st.path.resolve() == SHIPPED.resolve()
    assert "knows MA" in st.why and {"MA", "HE", "EX", "OD"} <= set(st.classes)
    assert st.tiling["retina_px"] and st.model["backbone"] == "efficientnet_lite0"


@pytest.mark.skipif(not SHIPPED.is_file(), reason="no shipped detector in this checkout")
def test_auto_falls_back_to_imagenet_and_says_why():
    other_net = choose_start("auto", {"fpn_channels": 64}, MA_ONLY)
    assert other_net.path is None and "another network" in other_net.why
    no_shared = choose_start("auto", {}, LabelMap(("NV", "IRMA")))
    assert no_shared.path is None and "none of your classes (NV, IRMA)" in no_shared.why
    assert choose_start("imagenet", {}, MA_ONLY).path is None
    assert choose_start(None, {}, MA_ONLY).path is None


def test_an_explicit_start_that_cannot_be_used_is_a_one_line_error(tmp_path):
    with pytest.raises(LesiondetError, match="start checkpoint not found"):
        choose_start(tmp_path / "missing.pt", {}, MA_ONLY)


@pytest.mark.skipif(not SHIPPED.is_file(), reason="no shipped detector in this checkout")
def test_an_explicit_start_of_another_network_is_refused():
    with pytest.raises(LesiondetError, match="not the one this run's model section builds"):
        choose_start("shipped", {"fpn_channels": 64}, MA_ONLY)


def test_inference_settings_and_frozen_blocks_do_not_make_another_network():
    assert same_network({}, {"box_score_thresh": 0.05, "trainable_from": 5, "min_size": 512})
    assert not same_network({}, {"anchor_sizes": [[4, 8], [16, 32], [48, 64], [96, 128]]})


def test_the_starts_classes_join_the_runs_after_its_own():
    from lesiondet.detection.start import Start

    lm = with_start_classes(LabelMap(("MA", "NV")), Start(Path("x.pt"), "", ("OD", "EX", "MA")))
    assert lm.classes == ("MA", "NV", "OD", "EX")


def _record(i: int, boxes) -> VocRecord:
    return VocRecord(Path(f"/x/{i}.jpg"), 1000, 1000, tuple(boxes))


def test_thresholds_are_re_chosen_only_where_the_validation_photographs_have_enough_lesions():
    n_photos = 6
    per = -(-MIN_LESIONS // n_photos)  # enough MA; two HE in all
    gt, preds = [], []
    for i in range(n_photos):
        ma = [VocObject("MA", (10.0 + 30 * j, 10.0, 20.0 + 30 * j, 20.0)) for j in range(per)]
        he = [VocObject("HE", (500.0, 500.0, 540.0, 540.0))] if i < 2 else []
        gt.append(_record(i, ma + he))
        hits = [VocObject("MA", o.box, score=0.9) for o in ma]
        noise = [VocObject("MA", (600.0 + 20 * j, 900.0, 610.0 + 20 * j, 910.0), score=0.2) for j in range(3)]
        preds.append(_record(i, hits + noise + [VocObject("HE", (500.0, 500.0, 540.0, 540.0), score=0.7)] * (i < 2)))
    start = OperatingPoint({"MA": 0.5, "HE": 0.8, "OD": 0.7}, "start")
    counted, shown, notes = recalibrated(gt, preds, ["MA", "HE", "OD"], {}, start, start, "val")
    assert counted.threshold("HE") == 0.8 and "too few" in notes["HE"]
    assert counted.threshold("OD") == 0.7 and "one-disc" in notes["OD"]
    assert "re-chosen" in notes["MA"] and counted.threshold("MA") != 0.5
    # at one false positive per photograph, the three 0.2 noise boxes per photograph stay out
    assert 0.2 < counted.threshold("MA") <= 0.9


def test_a_run_from_a_checkpoint_keeps_its_classes_masks_those_unboxed_and_rechooses_thresholds(
        trained_run, tiny_sample, tiny_config, tmp_path, capsys):
    """Fine-tuning on MA boxes alone: the start's other classes stay in the model, out of the loss."""
    import torch

    from lesiondet.cli import main

    ma_only = tmp_path / "ma"
    for part in ("train", "val"):
        src = tiny_sample / part
        shutil.copytree(src, ma_only / part)
        for xml in (ma_only / part / "Annotations").glob("*.xml"):
            rec = xml.read_text()
            rec = re.sub(r"<object>(?:(?!</object>).)*?<name>(?!MA<)[^<]*</name>.*?</object>", "", rec, flags=re.S)
            xml.write_text(rec)
    start = trained_run / "best.pt"
    rc = main(["train", "--voc", str(ma_only / "train"), "--val", str(ma_only / "val"), "--config", str(tiny_config),
               "--from", str(start), "--epochs", "1", "--out", str(tmp_path / "ft"), "--device", "cpu"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "starting from" in err and "fine-tuning: " in err and " epochs, lr " in err and "masked out of its loss" in err
    ck = torch.load(tmp_path / "ft" / "best.pt", weights_only=True)
    start_ck = torch.load(start, weights_only=True)
    assert ck["classes"][0] == "MA" and set(ck["classes"]) == set(start_ck["classes"])
    assert ck["annotated"] and list(ck["annotated"].values())[0] == ["MA"]
    assert ck["operating_point"]["thresholds"], "the operating points were re-chosen or carried over"
    assert ck["tiling"]["tile"] == start_ck["tiling"]["tile"]
    json.dumps(ck["operating_point"])


def test_a_fine_tune_resumes_from_its_last_pt_without_starting_again(trained_run, tiny_sample, tiny_config,
                                                                      tmp_path, capsys):
    import torch

    from lesiondet.cli import main

    out = tmp_path / "ft"
    args = ["--config", str(tiny_config), "--device", "cpu"]
    assert main(["train", "--voc", str(tiny_sample / "train"), "--val", str(tiny_sample / "val"), "--from",
                 str(trained_run / "best.pt"), "--epochs", "1", "--out", str(out), *args]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(out / "last.pt"), "--epochs", "2", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "starting from" not in err  # a resumed run continues its own weights
    ck = torch.load(out / "last.pt", weights_only=True)
    assert [r["epoch"] for r in ck["history"]] == [1, 2] and ck["config"]["start"] == str(trained_run / "best.pt")


def test_an_old_checkpoint_without_scale_or_thresholds_can_be_the_start(trained_run, tiny_sample, tiny_config,
                                                                        tmp_path):
    """A detector written before the retinal scale, the operating points and the source masks."""
    import torch

    from lesiondet.cli import main
    from lesiondet.engine.checkpoint import save_checkpoint

    ck = torch.load(trained_run / "best.pt", weights_only=True)
    for key in ("operating_point", "display_point", "annotated"):
        ck.pop(key, None)
    ck["tiling"] = {k: v for k, v in ck["tiling"].items() if k != "retina_px"}
    save_checkpoint(tmp_path / "old.pt", ck)
    out = tmp_path / "ft"
    assert main(["train", "--voc", str(tiny_sample / "train"), "--val", str(tiny_sample / "val"), "--from",
                 str(tmp_path / "old.pt"), "--epochs", "1", "--config", str(tiny_config), "--out", str(out),
                 "--device", "cpu"]) == 0
    new = torch.load(out / "best.pt", weights_only=True)
    assert new["classes"] == ck["classes"] and new["operating_point"]["thresholds"]
