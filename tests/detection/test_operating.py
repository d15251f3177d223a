"""What detect reports: per-class thresholds (the operating point) and the anatomy rules."""
from pathlib import Path

import pytest

from lesiondet.detection.operating import (
    DEFAULT_SCORE,
    OperatingPoint,
    apply_anatomy,
    calibrated,
    displayed,
    displayed_across,
    flag_boxes,
    threshold_at_fp,
    threshold_at_precision,
)
from lesiondet.io.voc import VocObject, VocRecord

OD = VocObject("OD", (100, 100, 200, 200), score=0.9)


def test_at_most_one_optic_disc_the_best_scoring():
    weaker = VocObject("OD", (600, 100, 700, 200), score=0.6)
    kept, disc = apply_anatomy([weaker, OD, VocObject("OD", (300, 300, 360, 360), score=0.4)], OperatingPoint())
    assert [o for o in kept if o.label == "OD"] == [OD]
    assert disc.found and disc.candidates == 3 and disc.score == pytest.approx(0.9)
    assert disc.to_dict()["found"] is True


def test_a_disc_below_its_threshold_is_reported_as_none_and_says_why():
    op = OperatingPoint({"OD": 0.95})
    kept, disc = apply_anatomy([OD], op)
    assert not disc.found
    assert "below 0.95" in disc.to_dict()["reason"]
    assert op.keep(kept) == []  # the candidate is not drawn either


def test_no_disc_candidate_at_all():
    _, disc = apply_anatomy([VocObject("EX", (5, 5, 9, 9), score=0.9)], OperatingPoint())
    assert not disc.found and disc.to_dict()["reason"] == "no optic-disc candidate"


def test_lesions_centred_on_the_disc_are_dropped_and_counted():
    on = VocObject("EX", (145, 145, 155, 155), score=0.9)      # the disc's centre
    rim = VocObject("HE", (101, 101, 105, 105), score=0.9)     # a corner of the box, outside the ellipse
    away = VocObject("MA", (400, 400, 404, 404), score=0.9)
    kept, disc = apply_anatomy([OD, on, rim, away], OperatingPoint())
    assert on not in kept and rim in kept and away in kept
    assert disc.lesions_on_disc == 1
    # with the rule off, or without a confident disc, nothing is dropped
    assert on in apply_anatomy([OD, on], OperatingPoint(), disc_core=0)[0]
    assert on in apply_anatomy([OD, on], OperatingPoint({"OD": 0.95}))[0]


def test_ground_truth_without_scores_is_left_alone():
    gt = [VocObject("OD", (0, 0, 10, 10)), VocObject("OD", (50, 50, 60, 60))]
    assert apply_anatomy(gt, OperatingPoint())[0] == gt


def test_thresholds_per_class_and_a_default_for_the_rest():
    op = OperatingPoint({"MA": 0.6, "EX": 0.2}, "test")
    objs = [VocObject("MA", (0, 0, 1, 1), score=0.5), VocObject("EX", (0, 0, 1, 1), score=0.25),
            VocObject("SE", (0, 0, 1, 1), score=0.29), VocObject("SE", (0, 0, 1, 1), score=0.31)]
    assert [(o.label, o.score) for o in op.keep(objs)] == [("EX", 0.25), ("SE", 0.31)]
    assert op.lowest == 0.2 and OperatingPoint().default == DEFAULT_SCORE
    assert OperatingPoint.from_dict(op.to_dict()) == op


def _rec(name, objs):
    return VocRecord(Path(f"{name}.jpg"), 100, 100, tuple(objs))


def test_the_threshold_at_a_false_positive_budget_is_read_off_the_froc_curve():
    gt = [_rec("a", [VocObject("MA", (10, 10, 14, 14))]), _rec("b", [VocObject("MA", (50, 50, 54, 54))])]
    preds = [_rec("a", [VocObject("MA", (10, 10, 14, 14), score=0.9), VocObject("MA", (80, 80, 84, 84), score=0.7)]),
             _rec("b", [VocObject("MA", (30, 30, 34, 34), score=0.6), VocObject("MA", (50, 50, 54, 54), score=0.5)])]
    # best first: TP 0.9, FP 0.7, FP 0.6, TP 0.5 over 2 images
    assert threshold_at_fp(gt, preds, "MA", 0.0) == pytest.approx(0.9)   # no false positive allowed
    assert threshold_at_fp(gt, preds, "MA", 0.5) == pytest.approx(0.7)   # one in two images
    assert threshold_at_fp(gt, preds, "MA", 1.0) == pytest.approx(0.5)   # two: the last TP comes in too
    op = calibrated(gt, preds, ["MA", "OD"], {}, {"*": 0.5}, "a test set")
    assert op.thresholds == {"MA": pytest.approx(0.7)}  # OD has no ground truth: it keeps the default
    assert "0.5 false positive(s) per image" in op.purpose


def test_a_partial_labels_threshold_goes_to_each_member():
    gt = [_rec("a", [VocObject("HE_MA", (10, 10, 14, 14))])]
    preds = [_rec("a", [VocObject("HE", (10, 10, 14, 14), score=0.8), VocObject("MA", (60, 60, 64, 64), score=0.4)])]
    op = calibrated(gt, preds, ["HE", "MA"], {"HE_MA": ("HE", "MA")}, 0.0, "x")
    assert op.thresholds == {"HE": pytest.approx(0.8), "MA": pytest.approx(0.8)}


def test_the_display_threshold_is_the_lowest_score_whose_boxes_are_right_often_enough():
    gt = [_rec("a", [VocObject("MA", (10, 10, 14, 14))]), _rec("b", [VocObject("MA", (50, 50, 54, 54))])]
    preds = [_rec("a", [VocObject("MA", (10, 10, 14, 14), score=0.9), VocObject("MA", (80, 80, 84, 84), score=0.7)]),
             _rec("b", [VocObject("MA", (30, 30, 34, 34), score=0.6), VocObject("MA", (50, 50, 54, 54), score=0.5)])]
    # best first: right, wrong, wrong, right: precision 1, 1/2, 1/3, 1/2
    assert threshold_at_precision(gt, preds, "MA", 1.0) == pytest.approx(0.9)
    assert threshold_at_precision(gt, preds, "MA", 0.5) == pytest.approx(0.5)  # all four: half right
    assert threshold_at_precision(gt, preds, "MA", 0.6) == pytest.approx(0.9)
    op = displayed(gt, preds, ["MA", "OD"], 0.5, "a test set", keep=OperatingPoint({"OD": 0.77}))
    assert op.thresholds == {"MA": pytest.approx(0.5), "OD": 0.77}  # the disc keeps its counted threshold
    assert "at least 0.5 of the boxes drawn" in op.purpose


def test_the_drawing_takes_the_threshold_that_holds_on_every_camera():
    gt = [_rec("a", [VocObject("MA", (10, 10, 14, 14))]), _rec("b", [VocObject("MA", (50, 50, 54, 54))])]
    preds = [_rec("a", [VocObject("MA", (10, 10, 14, 14), score=0.9), VocObject("MA", (80, 80, 84, 84), score=0.7)]),
             _rec("b", [VocObject("MA", (30, 30, 34, 34), score=0.6), VocObject("MA", (50, 50, 54, 54), score=0.5)])]
    easy = [_rec("c", [VocObject("MA", (10, 10, 14, 14))])]
    easy_preds = [_rec("c", [VocObject("MA", (10, 10, 14, 14), score=0.2)])]
    keep = OperatingPoint({"OD": 0.77, "HE": 0.8})
    op, per_set = displayed_across({"hard": (gt, preds), "easy": (easy, easy_preds)}, ["MA", "HE", "OD"], 0.6,
                                   keep=keep, min_lesions=1)
    assert per_set == {"MA": {"hard": pytest.approx(0.9), "easy": pytest.approx(0.2)}}
    assert op.threshold("MA") == pytest.approx(0.9)  # the more conservative of the two cameras
    assert op.threshold("HE") == 0.8 and op.threshold("OD") == 0.77  # no lesions of them: as counted
    # a set with too few lesions of a class does not vote
    op, per_set = displayed_across({"hard": (gt, preds), "easy": (easy, easy_preds)}, ["MA"], 0.6, keep=keep,
                                   min_lesions=2)
    assert per_set == {"MA": {"hard": pytest.approx(0.9)}}


def test_a_class_no_small_photograph_draws_right_is_drawn_by_scale():
    gt = [_rec("a", [VocObject("MA", (10, 10, 14, 14))])]
    large = [_rec("a", [VocObject("MA", (10, 10, 14, 14), score=0.5)])]
    small = [_rec("a", [VocObject("MA", (60, 60, 64, 64), score=0.9)])]  # never right on the small camera
    op, per_set = displayed_across({"big": (gt, large), "phone": (gt, small)}, ["MA"], 0.5,
                                   keep=OperatingPoint({"MA": 0.6}), min_lesions=1, small_sets={"phone"})
    assert per_set == {"MA": {"big": pytest.approx(0.5), "phone": 1.0}}
    assert op.threshold("MA") == pytest.approx(0.5)  # at the working scale: what holds there
    assert op.threshold("MA", small=True) == 1.0  # below it: only what is counted is drawn
    assert OperatingPoint.from_dict(op.to_dict()).small == {"MA": 1.0}  # stored with the checkpoint
    boxes = [VocObject("MA", (0, 0, 4, 4), score=0.55)]
    assert flag_boxes(boxes, OperatingPoint({"MA": 0.6}), op)[0].shown is True
    assert flag_boxes(boxes, OperatingPoint({"MA": 0.6}), op, small=True) == []  # neither counted nor shown


def test_a_small_field_of_view_is_read_below_the_working_scale():
    import numpy as np

    from lesiondet.detection.scale import below_working_scale

    tiling = {"retina_px": 2200, "zoom": 1.3, "max_zoom": 4.0}
    def disc(side: int) -> np.ndarray:
        import cv2

        img = np.zeros((side, side, 3), np.uint8)
        cv2.circle(img, (side // 2, side // 2), int(side * 0.45), (180, 90, 40), -1)
        return img
    assert below_working_scale(disc(1024), tiling)  # a 920-px retina, enlarged 1.3x: 1,200 px
    assert not below_working_scale(disc(3000), tiling)  # a 2,700-px retina is shrunk to 2,200
    assert not below_working_scale(disc(1024), {**tiling, "retina_px": None})  # native scale: no notion


def test_a_partial_label_is_read_as_each_of_its_members_for_the_drawing():
    gt = [_rec("a", [VocObject("HE_MA", (10, 10, 30, 30))])]
    preds = [_rec("a", [VocObject("HE", (12, 12, 28, 28), score=0.7), VocObject("HE", (60, 60, 70, 70), score=0.4)])]
    op, per_set = displayed_across({"codras": (gt, preds)}, ["HE"], 1.0, keep=OperatingPoint(),
                                   partial={"HE_MA": ("HE", "MA")}, min_lesions=1)
    assert per_set == {"HE": {"codras": pytest.approx(0.7)}}


def test_boxes_are_flagged_counted_and_shown_and_those_that_are_neither_dropped():
    counted, shown = OperatingPoint({"EX": 0.9, "MA": 0.3}), OperatingPoint({"EX": 0.5, "MA": 0.6})
    objs = [VocObject("EX", (0, 0, 1, 1), score=s) for s in (0.95, 0.7, 0.4)] + \
        [VocObject("MA", (0, 0, 1, 1), score=s) for s in (0.7, 0.4, 0.2)] + [VocObject("MA", (0, 0, 1, 1))]
    got = [(o.label, o.score, o.counted, o.shown) for o in flag_boxes(objs, counted, shown)]
    assert got == [("EX", 0.95, True, True), ("EX", 0.7, False, True),
                   ("MA", 0.7, True, True), ("MA", 0.4, True, False), ("MA", None, None, None)]


def test_the_grading_rules_count_only_the_counted_boxes():
    from lesiondet.grading.rules import grade

    shown_only = [VocObject("HE", (40 + 5 * i, 40, 44 + 5 * i, 44), score=0.6, counted=False, shown=True)
                  for i in range(5)]
    counted = [VocObject("MA", (20, 60, 23, 63), score=0.9, counted=True, shown=True)]
    g = grade(_rec("a", shown_only + counted))
    assert g.grade == 1 and g.counts.get("HE", 0) == 0
