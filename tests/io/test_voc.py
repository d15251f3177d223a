"""The VOC reader: labelImg's 1-based inclusive pixels, labels, negatives and every bad-input error."""
from pathlib import Path

import pytest

from lesiondet.errors import ImageError, VocError
from lesiondet.io.labels import LabelMap, default_label_map, load_label_map
from lesiondet.io.voc import VocObject, VocRecord, parse_voc, read_voc_dir, write_voc
from tests.conftest import write_image, write_xml

LM = default_label_map()


def test_voc_pixels_are_converted_once_to_0_based_continuous_boxes(voc_dir):
    rec = parse_voc(voc_dir([("MA", 5, 7, 9, 12)]), LM)
    assert rec.objects[0].box == (4.0, 6.0, 9.0, 12.0)
    assert rec.objects[0].width == 5  # pixels 5..9 inclusive


def test_a_one_pixel_box_is_valid_and_one_pixel_wide(voc_dir):
    o = parse_voc(voc_dir([("MA", 10, 10, 10, 10)]), LM).objects[0]
    assert (o.width, o.height) == (1.0, 1.0)


def test_full_image_box_is_inside(voc_dir):
    o = parse_voc(voc_dir([("OD", 1, 1, 64, 48)]), LM).objects[0]
    assert o.box == (0.0, 0.0, 64.0, 48.0)


def test_float_coordinates_and_unknown_tags_are_accepted(voc_dir):
    xml = voc_dir([("EX", 2.5, 3.5, 10.25, 20.0)], extra="<owner><name>x</name></owner><verified>yes</verified>")
    assert parse_voc(xml, LM).objects[0].box == (1.5, 2.5, 10.25, 20.0)


@pytest.mark.parametrize("name,expected", [
    ("microaneurysm", "MA"), ("Haemorrhage", "HE"), ("hemorrhage", "HE"), ("hard_exudate", "EX"),
    ("Hard Exudate", "EX"), ("cotton-wool spot", "SE"), ("optic_disc", "OD"), ("HE_MA", "HE_MA"), ("ma", "MA")])
def test_aliases_map_to_canonical_classes(voc_dir, name, expected):
    assert parse_voc(voc_dir([(name, 1, 1, 5, 5)]), LM).objects[0].label == expected


def test_a_merged_label_is_partial_and_its_members_are_the_classes(shared_data):
    lm = load_label_map(Path(__file__).parents[2] / "configs/datasets/codras.yaml")
    assert lm.classes == ("OD", "EX", "HE", "MA")
    assert lm.partial == {"HE_MA": ("HE", "MA")}
    assert lm.resolve("haemorrhage") == "HE_MA"  # the box keeps what the annotator said


def test_image_without_objects_is_a_negative(voc_dir):
    rec = parse_voc(voc_dir([]), LM)
    assert rec.objects == () and rec.width == 64


def test_difficult_is_kept_and_flagged(voc_dir):
    rec = parse_voc(voc_dir([("MA", 1, 1, 3, 3, 1), ("MA", 5, 5, 8, 8, 0)]), LM)
    assert [o.difficult for o in rec.objects] == [True, False]


def test_ignored_labels_are_dropped(voc_dir):
    lm = LabelMap.from_dict({"classes": ["MA"], "ignore": ["drusen"]})
    assert [o.label for o in parse_voc(voc_dir([("drusen", 1, 1, 3, 3), ("MA", 1, 1, 3, 3)]), lm).objects] == ["MA"]


def test_image_is_found_in_sibling_JPEGImages(tmp_path):
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "JPEGImages").mkdir()
    write_image(tmp_path / "JPEGImages" / "a.jpg")
    write_xml(tmp_path / "Annotations" / "a.xml", "a.jpg")
    recs = read_voc_dir(tmp_path, LM)  # parent folder with Annotations/ works too
    assert recs[0].image_path == tmp_path / "JPEGImages" / "a.jpg"


def test_image_is_found_with_images_option(tmp_path):
    (tmp_path / "imgs").mkdir()
    write_image(tmp_path / "imgs" / "a.png")
    xml = write_xml(tmp_path / "a.xml", "a.png")
    assert parse_voc(xml, LM, images_dir=tmp_path / "imgs").image_path.name == "a.png"


def test_missing_size_is_read_from_the_image(tmp_path):
    write_image(tmp_path / "a.jpg", (30, 20))
    (tmp_path / "a.xml").write_text("<annotation><filename>a.jpg</filename>"
                                    "<size><width>0</width><height>0</height></size></annotation>")
    rec = parse_voc(tmp_path / "a.xml", LM)
    assert (rec.width, rec.height) == (30, 20)


def test_writing_then_reading_round_trips_with_scores(tmp_path):
    write_image(tmp_path / "a.jpg")
    objs = (VocObject("MA", (4.0, 6.0, 9.0, 12.0), False, 0.91), VocObject("HE", (0.0, 0.0, 1.0, 1.0), True, None))
    write_voc(VocRecord(tmp_path / "a.jpg", 64, 48, objs), tmp_path / "a.xml")
    text = (tmp_path / "a.xml").read_text()
    assert "<score>0.9100</score>" in text and "<xmin>5</xmin>" in text and "<xmin>1</xmin>" in text
    back = parse_voc(tmp_path / "a.xml", LM)
    assert back.objects == objs


# ------------------------------------------------------------------ errors: one line, names the file
@pytest.mark.parametrize("content,needle", [
    ("<annotation><filename>img.jpg", "malformed XML"),
    ("<foo><filename>img.jpg</filename></foo>", "root element is <foo>"),
    ("", "malformed XML"),
])
def test_broken_xml_raises_VocError_naming_the_file(tmp_path, content, needle):
    write_image(tmp_path / "img.jpg")
    (tmp_path / "img.xml").write_text(content)
    with pytest.raises(VocError) as e:
        parse_voc(tmp_path / "img.xml", LM)
    assert needle in str(e.value) and "img.xml" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("obj,needle", [
    (("tumour", 1, 1, 5, 5), "unknown label 'tumour'"),
    (("MA", 10, 10, 80, 20), "outside the 64x48 image"),
    (("MA", -5, 1, 4, 4), "outside"),
    (("MA", 10, 10, 9, 20), "zero or negative size"),
    (("MA", "nan", 1, 4, 4), "'nan'"),
    (("MA", "ten", 1, 4, 4), "not a number"),
])
def test_invalid_objects_raise_VocError_with_a_fix(voc_dir, obj, needle):
    with pytest.raises(VocError) as e:
        parse_voc(voc_dir([obj]), LM)
    msg = str(e.value)
    assert needle in msg and "img.xml" in msg and ";" in msg  # problem; fix


def test_a_box_one_pixel_past_the_edge_is_clipped_not_rejected(voc_dir):
    o = parse_voc(voc_dir([("MA", 0, 0, 65, 49)]), LM).objects[0]
    assert o.box == (0.0, 0.0, 64.0, 48.0)


def test_missing_image_raises_ImageError(tmp_path):
    xml = write_xml(tmp_path / "a.xml", "gone.jpg")
    with pytest.raises(ImageError, match="image 'gone.jpg' not found"):
        parse_voc(xml, LM)


def test_empty_folder_raises(tmp_path):
    with pytest.raises(VocError, match="no .xml annotation files"):
        read_voc_dir(tmp_path, LM)


def test_missing_folder_raises(tmp_path):
    with pytest.raises(VocError, match="folder not found"):
        read_voc_dir(tmp_path / "nope", LM)


def test_label_map_restrict_keeps_order_and_ignores_dropped_names(voc_dir):
    lm = LM.restrict({"EX", "MA"})
    assert lm.classes == ("MA", "EX") and lm.num_classes == 3
    assert lm.resolve("haemorrhage") is None


def test_detect_xml_keeps_which_boxes_the_rules_counted_through_a_round_trip(tmp_path):
    objs = (VocObject("EX", (10.0, 10.0, 20.0, 20.0), False, 0.95, True, True),
            VocObject("EX", (30.0, 10.0, 40.0, 20.0), False, 0.6, False, True),
            VocObject("MA", (50.0, 10.0, 53.0, 13.0)))
    write_image(tmp_path / "a.png", (64, 48))
    write_voc(VocRecord(tmp_path / "a.png", 64, 48, objs), tmp_path / "a.xml")
    back = parse_voc(tmp_path / "a.xml", LM)
    assert [(o.counted, o.shown) for o in back.objects] == [(True, True), (False, True), (None, None)]


def test_a_folder_split_by_hand_into_train_and_val_is_recognised(tmp_path):
    from lesiondet.io.voc import split_folders

    for part in ("train", "val", "test"):
        (tmp_path / "data" / part / "Annotations").mkdir(parents=True)
        write_xml(tmp_path / "data" / part / "Annotations" / "a.xml")
    assert split_folders(tmp_path / "data") == {p: tmp_path / "data" / p for p in ("train", "val", "test")}
    # test/ is optional; val/ is not
    (tmp_path / "two" / "train").mkdir(parents=True), (tmp_path / "two" / "val").mkdir()
    write_xml(tmp_path / "two" / "train" / "a.xml"), write_xml(tmp_path / "two" / "val" / "a.xml")
    assert set(split_folders(tmp_path / "two")) == {"train", "val"}
    (tmp_path / "one" / "train").mkdir(parents=True)
    write_xml(tmp_path / "one" / "train" / "a.xml")
    assert split_folders(tmp_path / "one") is None
    # a plain labelImg folder is a plain folder, even with a train/ beside its XML
    write_xml(tmp_path / "two" / "b.xml")
    assert split_folders(tmp_path / "two") is None
