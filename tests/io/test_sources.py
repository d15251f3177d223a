"""Training on several datasets at once: union of classes, and what each source annotates."""
from pathlib import Path

import pytest

from lesiondet.errors import LesiondetError
from lesiondet.io.sources import parse_source, read_sources
from tests.conftest import write_image, write_xml


def _folder(root: Path, name: str, objects) -> Path:
    d = root / name
    d.mkdir()
    write_image(d / "a.jpg", (64, 64))
    write_xml(d / "a.xml", "a.jpg", (64, 64), objects)
    return d


def _dataset_yaml(root: Path, name: str, folder: Path, classes) -> Path:
    p = root / f"{name}.yaml"
    p.write_text(f"name: {name}\npath: {folder.name}\nlabels:\n  classes: {list(classes)}\n")
    return p


def test_sources_with_different_label_sets_train_on_the_union(tmp_path):
    a = _folder(tmp_path, "codras_like", [("HE_MA", 5, 5, 10, 10), ("optic_disc", 20, 20, 40, 40)])
    b = _folder(tmp_path, "heimed_like", [("exudate", 5, 5, 8, 8)])
    sources = [parse_source(_dataset_yaml(tmp_path, "c", a, ["OD", "EX", "HE_MA"])),
               parse_source(_dataset_yaml(tmp_path, "h", b, ["EX", "MA", "HE", "SE"]))]
    records, union, annotated = read_sources(sources)
    assert union.classes == ("OD", "EX", "HE_MA", "MA", "HE", "SE")
    assert annotated == {"c": ["OD", "EX", "HE_MA"], "h": ["EX", "MA", "HE", "SE"]}
    assert [r.source for r in records] == ["c", "h"]
    assert records[1].objects[0].label == "EX"  # each source's own aliases applied


def test_a_plain_folder_annotates_the_classes_found_in_it(tmp_path):
    a = _folder(tmp_path, "x", [("MA", 5, 5, 10, 10)])
    _, union, annotated = read_sources([parse_source(a)])
    assert union.classes == ("MA",) and annotated == {"x": ["MA"]}


def test_a_dataset_yaml_without_path_is_a_one_line_error(tmp_path):
    p = tmp_path / "d.yaml"
    p.write_text("labels:\n  classes: [MA]\n")
    with pytest.raises(LesiondetError, match="path"):
        parse_source(p)


def test_masks_reach_the_training_targets(tmp_path):
    from lesiondet.detection.data import DetectionDataset

    a = _folder(tmp_path, "a", [("OD", 5, 5, 30, 30)])
    b = _folder(tmp_path, "b", [("EX", 5, 5, 8, 8)])
    sources = [parse_source(_dataset_yaml(tmp_path, "a", a, ["OD", "EX"])),
               parse_source(_dataset_yaml(tmp_path, "b", b, ["EX"]))]
    records, union, annotated = read_sources(sources)
    ds = DetectionDataset(records, union, annotated=annotated)
    assert ds[0][1]["class_mask"].tolist() == [True, True, True]
    assert ds[1][1]["class_mask"].tolist() == [True, False, True]  # b never labels OD


def test_a_partial_label_trains_its_members_and_the_union_keeps_it(tmp_path):
    a = _folder(tmp_path, "codras_like", [("HE_MA", 5, 5, 10, 10), ("optic_disc", 20, 20, 40, 40)])
    b = _folder(tmp_path, "idrid_like", [("MA", 5, 5, 8, 8), ("HE", 10, 10, 20, 20)])
    ya = tmp_path / "c.yaml"
    ya.write_text(f"name: c\npath: {a.name}\nlabels:\n  classes: [OD, EX, HE, MA]\n  partial: {{HE_MA: [HE, MA]}}\n")
    records, union, annotated = read_sources([parse_source(ya), parse_source(_dataset_yaml(tmp_path, "i", b,
                                                                                         ["MA", "HE"]))])
    assert union.classes == ("OD", "EX", "HE", "MA") and union.partial == {"HE_MA": ("HE", "MA")}
    assert annotated["c"] == ["OD", "EX", "HE", "MA"]  # an unboxed CODRAS region is neither HE nor MA
    assert records[0].objects[0].label == "HE_MA"
    m = union.member_matrix()
    assert m[union.index("HE_MA")].tolist() == [False, False, False, True, True]


def test_a_plain_folder_with_merged_boxes_brings_both_members(tmp_path):
    a = _folder(tmp_path, "x", [("HE_MA", 5, 5, 10, 10)])
    _, union, annotated = read_sources([parse_source(a)])
    assert union.classes == ("MA", "HE") and annotated == {"x": ["MA", "HE"]}


def test_the_sources_of_an_epoch_get_equal_shares():
    from collections import Counter

    from lesiondet.detection.data import balanced_index

    sources = ["big"] * 2 + ["small"] * 10
    counts = [50, 50] + [1] * 10  # two photographs slicing into 50 tiles each, ten small ones
    idx = balanced_index(sources, counts)
    per = Counter(sources[i] for i in idx)
    assert per["big"] == per["small"] == 55
    assert set(idx) == set(range(12))  # every photograph at least once
