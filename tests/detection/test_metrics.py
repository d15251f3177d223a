"""COCO mAP: ground truth against itself is perfect, and the figures equal pycocotools' own."""
import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
from pycocotools.cocoeval import COCOeval

from lesiondet.detection.metrics import FROC_FPI, ap_by_size, coco_map, froc, to_coco
from lesiondet.io.voc import VocObject, VocRecord


def rec(stem, objects, w=100, h=100):
    return VocRecord(Path(f"{stem}.jpg"), w, h, tuple(objects), Path(f"{stem}.xml"))


GT = [
    rec("a", [VocObject("MA", (10, 10, 13, 13)), VocObject("HE", (40, 40, 70, 60)), VocObject("MA", (80, 5, 81, 6))]),
    rec("b", [VocObject("HE", (0, 0, 20, 20)), VocObject("EX", (50, 50, 58, 57))]),
    rec("c", []),  # a negative image
]


def test_ground_truth_scored_against_itself_is_perfect():
    r = coco_map(GT, GT, ["MA", "HE", "EX"])
    assert r["mAP"] == pytest.approx(1.0) and r["mAP50"] == pytest.approx(1.0)
    assert all(v["AP"] == pytest.approx(1.0) for v in r["per_class"].values())


def test_no_detections_scores_zero():
    r = coco_map(GT, [], ["MA", "HE", "EX"])
    assert r["mAP"] == 0.0 and r["n_pred"] == 0


def test_class_without_ground_truth_is_nan_and_left_out_of_the_mean():
    r = coco_map(GT, GT, ["MA", "HE", "EX", "OD"])
    assert np.isnan(r["per_class"]["OD"]["AP"]) and r["mAP"] == pytest.approx(1.0)


def test_more_than_100_detections_per_image_count():
    # 300 one-pixel lesions in one image: a 100-detection cap would lose two thirds of them.
    objs = [VocObject("MA", (x, y, x + 2, y + 2)) for x in range(0, 300, 10) for y in range(0, 100, 10)]
    gt = [rec("many", objs, 300, 100)]
    assert coco_map(gt, gt, ["MA"])["mAP"] == pytest.approx(1.0)


def test_difficult_ground_truth_is_neither_reward_nor_penalty():
    gt = [rec("a", [VocObject("MA", (10, 10, 13, 13)), VocObject("MA", (50, 50, 53, 53), difficult=True)])]
    only_easy = [rec("a", [VocObject("MA", (10, 10, 13, 13), score=0.9)])]
    both = [rec("a", [VocObject("MA", (10, 10, 13, 13), score=0.9), VocObject("MA", (50, 50, 53, 53), score=0.8)])]
    assert coco_map(gt, only_easy, ["MA"])["mAP"] == pytest.approx(1.0)
    assert coco_map(gt, both, ["MA"])["mAP"] == pytest.approx(1.0)


def test_figures_equal_a_direct_pycocotools_computation():
    rng = np.random.default_rng(0)
    preds = []
    for r in GT:
        objs = []
        for o in r.objects:  # jittered true positives plus a false positive each
            j = rng.normal(0, 1.0, 4)
            objs.append(VocObject(o.label, tuple(np.add(o.box, j).tolist()), score=float(rng.uniform(0.3, 1))))
            objs.append(VocObject(o.label, (5, 80, 15, 90), score=float(rng.uniform(0, 0.6))))
        preds.append(r.with_objects(objs))
    ours = coco_map(GT, preds, ["MA", "HE", "EX"])
    gt, dt = to_coco(GT, preds, ["MA", "HE", "EX"])
    ev = COCOeval(gt, dt, "bbox")
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate(), ev.accumulate(), ev.summarize()
    assert ours["mAP"] == pytest.approx(ev.stats[0], abs=1e-9)  # < 100 dets per image, so caps agree
    assert ours["mAP50"] == pytest.approx(ev.stats[1], abs=1e-9)
    assert 0.0 < ours["mAP"] < 1.0


# --------------------------------------------------------------------------- FROC and size buckets
def _rec(stem, objs):
    return VocRecord(Path(f"{stem}.jpg"), 100, 100,
                     tuple(VocObject(o[0], tuple(map(float, o[1])), *o[2:]) for o in objs))


def test_froc_counts_hits_by_centre_or_iou_and_ignores_duplicates():
    gt = [_rec("a", [("MA", (10, 10, 14, 14)), ("MA", (50, 50, 54, 54))]), _rec("b", [("MA", (30, 30, 34, 34))])]
    preds = [
        _rec("a", [("MA", (11, 11, 13, 13), False, 0.9),     # centre inside lesion 1: hit
                   ("MA", (10, 10, 15, 15), False, 0.8),     # lesion 1 again: neither TP nor FP
                   ("MA", (70, 70, 75, 75), False, 0.7)]),   # nothing there: false positive
        _rec("b", [("MA", (60, 60, 64, 64), False, 0.6),     # false positive
                   ("MA", (33, 33, 40, 40), False, 0.5)]),   # centre (36.5) outside, IoU 1/13 < 0.2: FP
    ]
    r = froc(gt, preds, ["MA"])["MA"]
    # 2 images: 1/8..1/2 FP/image allow 0 FPs (1 TP), 1 FP/image allows 2 (still 1 TP).
    assert [r[f"{f:g}"] for f in FROC_FPI] == pytest.approx([1 / 3] * 7)
    assert r["mean"] == pytest.approx(1 / 3)


def test_froc_reaches_full_sensitivity_on_ground_truth_and_skips_absent_classes():
    gt = [_rec("a", [("MA", (10, 10, 14, 14)), ("EX", (40, 40, 60, 60))])]
    r = froc(gt, gt, ["MA", "EX", "HE"])
    assert r["MA"]["0.125"] == 1.0 and r["EX"]["mean"] == 1.0
    assert all(np.isnan(v) for v in r["HE"].values())


def test_froc_difficult_lesions_neither_count_nor_penalise():
    gt = [_rec("a", [("MA", (10, 10, 14, 14), True), ("MA", (50, 50, 54, 54))])]
    preds = [_rec("a", [("MA", (10, 10, 14, 14), False, 0.9), ("MA", (50, 50, 54, 54), False, 0.8)])]
    assert froc(gt, preds, ["MA"])["MA"]["0.125"] == 1.0


def test_ap_by_size_puts_lesions_in_pixel_buckets():
    gt = [_rec("a", [("MA", (10, 10, 15, 15)), ("EX", (20, 20, 40, 40)), ("OD", (0, 0, 99, 99))])]
    r = ap_by_size(gt, gt, ["MA", "EX", "OD"])
    assert {k: v["n_gt"] for k, v in r.items()} == {"<8": 1, "8-16": 0, "16-32": 1, "32-96": 0, ">=96": 1}
    assert r["<8"]["AP50"] == pytest.approx(1.0) and np.isnan(r["8-16"]["AP50"])


def test_what_a_reader_sees_at_a_threshold_boxes_right_and_lesions_found():
    from lesiondet.detection.metrics import drawn_stats

    gt = [VocRecord(Path("a.jpg"), 100, 100, (VocObject("MA", (10, 10, 14, 14)), VocObject("MA", (50, 50, 54, 54))))]
    preds = [VocRecord(Path("a.jpg"), 100, 100, (
        VocObject("MA", (10, 10, 14, 14), score=0.9),   # right
        VocObject("MA", (11, 11, 14, 14), score=0.8),   # right again: the reader sees a real lesion
        VocObject("MA", (80, 80, 84, 84), score=0.7),   # wrong
        VocObject("MA", (50, 50, 54, 54), score=0.2)))]  # right, but under the threshold
    assert drawn_stats(gt, preds, "MA", 0.5) == {"boxes": 3, "right": 2 / 3, "found": 0.5, "lesions": 2}
    assert drawn_stats(gt, preds, "MA", 0.1)["found"] == 1.0
