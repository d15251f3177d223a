"""Partial labels: a box the annotator labelled "HE or MA" trains as positive for both, and scores as HE_MA."""
from pathlib import Path

import pytest
import torch
from torchvision.models.detection.roi_heads import fastrcnn_loss

from lesiondet.detection.metrics import coco_map, evaluate_detections, froc, merge_partial
from lesiondet.detection.model import partial_label_loss
from lesiondet.errors import LesiondetError
from lesiondet.io.labels import LabelMap, default_label_map
from lesiondet.io.voc import VocObject, VocRecord

LM = LabelMap(("OD", "EX", "HE", "MA"), partial={"HE_MA": ("HE", "MA")})


def _loss(logits, label, members=None):
    n = logits.shape[0]
    reg = torch.zeros(n, logits.shape[1] * 4)
    labels = [torch.full((n,), label, dtype=torch.int64)]
    targets = [torch.zeros(n, 4)]
    return partial_label_loss(logits, reg, labels, targets, LM.member_matrix() if members is None else members)[0]


def test_a_merged_box_is_positive_for_the_union_of_its_members():
    he_ma = LM.index("HE_MA")
    logits = torch.tensor([[0.0, 0.0, 0.0, 3.0, 3.0]])  # bg, OD, EX, HE, MA
    p = logits.softmax(1)[0]
    assert _loss(logits, he_ma).item() == pytest.approx(-torch.log(p[3] + p[4]).item(), rel=1e-5)


def test_a_merged_box_never_penalises_either_member_class():
    he_ma = LM.index("HE_MA")
    all_he = torch.tensor([[-5.0, -5.0, -5.0, 8.0, -5.0]])
    all_ma = torch.tensor([[-5.0, -5.0, -5.0, -5.0, 8.0]])
    split = torch.tensor([[-5.0, -5.0, -5.0, 8.0, 8.0]])
    for logits in (all_he, all_ma, split):
        assert _loss(logits, he_ma).item() < 1e-3  # sure it is one of them: no loss, whichever
    # ... while calling it exudate or background is penalised
    assert _loss(torch.tensor([[-5.0, -5.0, 8.0, -5.0, -5.0]]), he_ma).item() > 5


def test_a_single_class_box_gets_torchvisions_loss():
    torch.manual_seed(0)
    logits, reg = torch.randn(6, 5), torch.randn(6, 20)
    labels, targets = [torch.tensor([0, 1, 2, 3, 4, 0])], [torch.randn(6, 4)]
    ours = partial_label_loss(logits, reg, labels, targets, LM.member_matrix())
    theirs = fastrcnn_loss(logits, reg, labels, targets)
    assert ours[0].item() == pytest.approx(theirs[0].item(), rel=1e-5)
    assert ours[1].item() == pytest.approx(theirs[1].item(), rel=1e-5)


def test_a_merged_box_regresses_both_members_boxes():
    he_ma = LM.index("HE_MA")
    reg = torch.zeros(1, 20)
    reg[0, 12:16] = 1.0  # HE's deltas are off by 1, MA's are right
    loss = partial_label_loss(torch.zeros(1, 5), reg, [torch.tensor([he_ma])], [torch.zeros(1, 4)],
                              LM.member_matrix())[1]
    assert loss.item() == pytest.approx(0.5 * 4 * (1 - 0.5 / 9))  # half the HE box loss, none from MA


def test_the_default_map_has_no_merged_class_and_reads_he_ma_as_partial():
    lm = default_label_map()
    assert lm.classes == ("MA", "HE", "EX", "SE", "OD")
    assert lm.resolve("he_ma") == "HE_MA" and lm.members("HE_MA") == ("HE", "MA")
    assert LabelMap.from_dict(lm.to_dict()).partial == lm.partial


def test_a_partial_label_must_name_classes_of_the_map():
    with pytest.raises(LesiondetError, match="member"):
        LabelMap(("EX", "HE"), partial={"HE_MA": ("HE", "MA")})
    with pytest.raises(LesiondetError, match="both a class and a partial"):
        LabelMap(("HE", "MA", "HE_MA"), partial={"HE_MA": ("HE", "MA")})


def _rec(name, objs):
    return VocRecord(Path(f"{name}.jpg"), 100, 100, tuple(objs))


def test_scoring_merged_labels_matches_a_hand_computed_case():
    # Ground truth: two HE_MA lesions on one image, one on another.
    gt = [_rec("a", [VocObject("HE_MA", (10, 10, 20, 20)), VocObject("HE_MA", (50, 50, 60, 60))]),
          _rec("b", [VocObject("HE_MA", (30, 30, 40, 40))])]
    preds = [_rec("a", [VocObject("HE", (10, 10, 20, 20), score=0.9),
                        VocObject("MA", (10, 10, 20, 20), score=0.8),   # the same lesion again: merged away
                        VocObject("MA", (50, 50, 60, 60), score=0.7)]),
             _rec("b", [VocObject("HE", (70, 70, 80, 80), score=0.95)])]  # a false positive, ranked first
    merged, names, what = merge_partial(gt, preds, ["HE", "MA"], LM.partial)
    assert names == ["HE_MA"] and what == {"HE_MA": ["HE", "MA"]}
    assert [len(r.objects) for r in merged] == [2, 1]
    # Ranked: FP(0.95), TP(0.9), TP(0.7); 3 lesions. COCO's 101-point interpolated precision:
    # recall 0-2/3 at precision 2/3, recall above 2/3 never reached -> AP50 = (67/101) * (2/3).
    r = coco_map(gt, merged, names)
    assert r["per_class"]["HE_MA"]["AP50"] == pytest.approx(67 / 101 * 2 / 3, abs=1e-4)
    # FROC: with 0.5 FP/image (1 FP over 2 images) both hits are in: 2 of 3 lesions.
    assert froc(gt, merged, names)["HE_MA"]["0.5"] == pytest.approx(2 / 3)
    full = evaluate_detections(gt, preds, ["HE", "MA"], LM.partial)
    assert full["merged"] == {"HE_MA": ["HE", "MA"]}
    assert full["per_class"]["HE_MA"]["AP50"] == pytest.approx(r["per_class"]["HE_MA"]["AP50"])


def test_an_old_model_with_a_merged_class_is_scored_as_before():
    gt = [_rec("a", [VocObject("HE_MA", (10, 10, 20, 20))])]
    preds = [_rec("a", [VocObject("HE_MA", (10, 10, 20, 20), score=0.9)])]
    out, names, what = merge_partial(gt, preds, ["OD", "EX", "HE_MA", "MA", "HE"], LM.partial)
    assert what == {} and names == ["OD", "EX", "HE_MA", "MA", "HE"]
    assert coco_map(gt, out, names)["per_class"]["HE_MA"]["AP50"] == pytest.approx(1.0)
