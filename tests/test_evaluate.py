"""COCO mAP: ground truth against itself is perfect, and the figures equal pycocotools' own."""
import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
from pycocotools.cocoeval import COCOeval

from lesiondet.evaluate import coco_map, to_coco
from lesiondet.voc import VocObject, VocRecord


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
