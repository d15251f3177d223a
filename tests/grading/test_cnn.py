"""The grading CNN: its CSV, patient split, heads, cut points and referable threshold."""
import numpy as np
import pytest
import torch

from lesiondet.errors import LesiondetError
from lesiondet.grading.cnn import GradedImage, check_disjoint, decode, multitask_loss, patient_split, read_grading_csv
from lesiondet.grading.learned import quadratic_weighted_kappa
from lesiondet.grading.readout import apply_cuts, tune_cuts, tune_referable


def write_csv(tmp_path, text, images=("a.jpg", "b.jpg")):
    for name in images:
        (tmp_path / name).write_bytes(b"x")
    p = tmp_path / "labels.csv"
    p.write_text(text)
    return p


def test_csv_reads_grade_maculopathy_and_patient_with_paths_relative_to_it(tmp_path):
    p = write_csv(tmp_path, "image,dr_grade,maculopathy,patient\na.jpg,2,1,P1\nb.jpg,4,,P1\n")
    a, b = read_grading_csv(p)
    assert (a.grade, a.maculopathy, a.patient, a.path) == (2, 1, "P1", tmp_path / "a.jpg")
    assert b.maculopathy is None and b.referable


def test_without_a_patient_column_each_image_is_its_own_patient(tmp_path):
    p = write_csv(tmp_path, "image,grade\na.jpg,0\nb.jpg,1\n")
    assert [i.patient for i in read_grading_csv(p)] == ["a", "b"]


@pytest.mark.parametrize("text, words", [
    ("image,label\na.jpg,1\n", "expected columns image,dr_grade"),
    ("image,dr_grade\na.jpg,7\n", "outside 0-4"),
    ("image,dr_grade\na.jpg,two\n", "not a whole number"),
    ("image,dr_grade\nmissing.jpg,1\n", "image not found"),
    ("image,dr_grade\n", "lists no images"),
    ("image,dr_grade,maculopathy\na.jpg,1,3\n", "maculopathy 3 is outside 0-1"),
])
def test_a_bad_csv_is_one_error_naming_the_file(tmp_path, text, words):
    with pytest.raises(LesiondetError, match=words):
        read_grading_csv(write_csv(tmp_path, text))


def test_patient_split_keeps_both_eyes_together_and_refuses_overlap():
    items = [GradedImage(f"{p}_{e}.jpg", p % 5, 0, f"P{p}") for p in range(40) for e in "LR"]
    train, val = patient_split(items, 0.2, 0)
    assert not {i.patient for i in train} & {i.patient for i in val}
    assert 0.1 < len(val) / len(items) < 0.3
    with pytest.raises(LesiondetError, match="in both training and validation"):
        check_disjoint(train, val + train[:1], "val.csv")


def test_decode_gives_a_score_in_range_and_probabilities_that_sum_to_one():
    d = decode(np.random.default_rng(0).normal(0, 3, (6, 11)))
    assert d["probabilities"].shape == (6, 5)
    assert np.allclose(d["probabilities"].sum(1), 1, atol=1e-6)
    assert ((d["score"] >= 0) & (d["score"] <= 4)).all()
    assert (d["p_referable"] >= d["p_maculopathy"] - 1e-9).all()


def test_confident_heads_decode_to_their_grade():
    out = np.full((1, 11), -8.0)
    out[0, 0] = 3.0  # regression
    out[0, 1 + 3] = 8.0  # class 3
    out[0, 6:9] = 8.0  # P(grade > 0,1,2) high, P(> 3) low
    assert apply_cuts(decode(out)["score"], (0.5, 1.5, 2.5, 3.5))[0] == 3


def test_loss_is_finite_and_ignores_unknown_maculopathy():
    out = torch.randn(4, 11, requires_grad=True)
    parts = multitask_loss(out, torch.tensor([0, 1, 2, 4]), torch.tensor([0, -1, 1, -1]), focal_gamma=2.0)
    parts["loss"].backward()
    assert torch.isfinite(parts["loss"]) and out.grad is not None
    none_known = multitask_loss(out, torch.tensor([0, 1, 2, 4]), torch.tensor([-1, -1, -1, -1]))
    assert float(none_known["mac"]) == 0.0


def test_tuned_cut_points_never_lower_kappa_and_fix_a_biased_score():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 5, 300)
    score = y * 0.6 + rng.normal(0, 0.2, 300)  # a squashed score: rounding under-grades
    plain = quadratic_weighted_kappa(y, apply_cuts(score, (0.5, 1.5, 2.5, 3.5)))
    cuts = tune_cuts(score, y)
    assert cuts == sorted(cuts)
    assert quadratic_weighted_kappa(y, apply_cuts(score, cuts)) > plain + 0.05


def test_referable_threshold_reaches_the_asked_sensitivity():
    rng = np.random.default_rng(2)
    truth = rng.random(200) < 0.4
    p = np.clip(truth * 0.3 + rng.random(200) * 0.7, 0, 1)
    t = tune_referable(p, truth, 0.9)
    assert (p[truth] >= t).mean() >= 0.9
