"""Splits by patient or subject: nobody's images on both sides."""
import pytest

from lesiondet.errors import LesiondetError
from lesiondet.io.splits import check_disjoint, group_folds, group_split

GROUPS = [f"P{i // 2}" for i in range(80)]
LABELS = [(i // 2) % 5 for i in range(80)]


@pytest.mark.parametrize("labels", [LABELS, None, [0] * 79 + [1]])  # stratified, unlabelled, a rare label
def test_a_split_keeps_each_group_on_one_side(labels):
    tr, va = group_split(GROUPS, labels, 0.2, 0)
    assert not {GROUPS[i] for i in tr} & {GROUPS[i] for i in va}
    assert 0.1 < len(va) / len(GROUPS) < 0.3 and len(tr) + len(va) == len(GROUPS)


def test_folds_cover_every_image_once_with_each_group_in_one_fold():
    folds = group_folds(GROUPS, LABELS, 5, 0)
    seen = sorted(i for _, te in folds for i in te)
    assert seen == list(range(len(GROUPS)))
    for tr, te in folds:
        assert not {GROUPS[i] for i in tr} & {GROUPS[i] for i in te}


def test_one_group_cannot_be_split_and_an_overlap_is_refused():
    with pytest.raises(LesiondetError, match="one subject"):
        group_split(["s1"] * 4, None, 0.2, 0, "scans", "subject")
    with pytest.raises(LesiondetError, match="one patient"):
        group_folds(["P1"] * 3, [0, 1, 2])
    with pytest.raises(LesiondetError, match="P3 has images in both training and validation"):
        check_disjoint(["P1", "P3"], ["P3"], "val.csv")
