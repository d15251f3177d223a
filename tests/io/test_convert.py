"""Bring your own data: masks, COCO and YOLO into labelImg VOC and back, exactly."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from lesiondet.cli import main
from lesiondet.io.convert import (
    coco_to_records,
    components,
    masks_to_records,
    records_to_coco,
    write_coco,
    write_labelimg_folder,
    write_yolo,
    yolo_to_records,
)
from lesiondet.io.labels import load_label_map
from lesiondet.io.voc import VocObject, VocRecord, read_voc_dir
from tests.conftest import write_image

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "datasets"


def _boxes(records):
    return {r.image_path.stem: sorted((o.label, tuple(round(v, 6) for v in o.box), o.difficult) for o in r.objects)
            for r in records}


def _idrid_subset(d: Path, tmp_path: Path, every: int = 4) -> set[str]:
    """Links to every ``every``-th shared IDRiD photograph and its mask, IDRiD_02 (stray colours) among them:
    12-megapixel masks convert at a few seconds each, so a sample keeps the test fast and still exact."""
    stems = sorted(p.stem for p in (d / "masks").glob("*.png"))
    keep = {s for i, s in enumerate(stems) if i % every == 0} | {"IDRiD_02"}
    for sub, ext in (("masks", ".png"), ("JPEGImages", ".jpg")):
        (tmp_path / sub).mkdir(parents=True)
        for s in keep:
            (tmp_path / sub / f"{s}{ext}").symlink_to(d / sub / f"{s}{ext}")
    return keep


def test_shared_idrid_masks_give_exactly_the_shared_idrid_boxes(shared_data, tmp_path, capsys):
    d = shared_data / "fundus" / "idrid"
    assert len(list((d / "masks").glob("*.png"))) >= 49
    keep = _idrid_subset(d, tmp_path / "in")
    out = tmp_path / "idrid"
    assert main(["convert", "--from", "masks", "--masks", str(tmp_path / "in" / "masks"),
                 "--images", str(tmp_path / "in" / "JPEGImages"),
                 "--colours", "idrid", "--unknown-colours", "ignore", "--out", str(out)]) == 0
    lm = load_label_map(CONFIGS / "idrid.yaml")
    converted = read_voc_dir(out, lm)
    shared = [r for r in read_voc_dir(d, lm) if r.image_path.stem in keep]
    assert len(converted) == len(shared) == len(keep) >= 13
    assert _boxes(converted) == _boxes(shared)  # to the pixel, every class, every sampled image
    assert (out / "predefined_classes.txt").read_text().split() == ["MA", "HE", "EX", "SE", "OD"]
    assert "counted as background" in capsys.readouterr().err  # the stray colours are reported, not hidden


def test_unknown_mask_colours_are_listed_with_pixel_counts(shared_data, tmp_path, capsys):
    d = shared_data / "fundus" / "idrid"
    rc = main(["convert", "--from", "masks", "--masks", str(d / "masks"), "--images", str(d / "JPEGImages"),
               "--colours", "idrid", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "IDRiD_02.png" in err[0] and "(255, 0, 255): 6 px" in err[0]
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("name", ["codras", "heimed", "idrid"])
def test_shared_sets_survive_voc_coco_voc_and_voc_yolo_voc(shared_data, tmp_path, name):
    lm = load_label_map(CONFIGS / f"{name}.yaml")
    original = read_voc_dir(shared_data / "fundus" / name, lm)
    classes = list(lm.labels)  # a partial label (CODRAS's HE_MA) is a category of the annotation files
    write_coco(original, classes, tmp_path / "c.json")
    from pycocotools.coco import COCO  # the file loads in pycocotools' own loader

    assert len(COCO(str(tmp_path / "c.json")).getAnnIds()) == sum(len(r.objects) for r in original)
    images = original[0].image_path.parent
    via_coco, _ = coco_to_records(tmp_path / "c.json", images)
    write_yolo(original, classes, tmp_path / "y")
    via_yolo, _ = yolo_to_records(tmp_path / "y" / "labels", tmp_path / "y" / "data.yaml", tmp_path / "y" / "images")
    assert _boxes(via_coco) == _boxes(original)
    strip = {k: [(lab, box) for lab, box, _ in v] for k, v in _boxes(original).items()}
    assert {k: [(lab, box) for lab, box, _ in v] for k, v in _boxes(via_yolo).items()} == strip
    for back in (via_coco, via_yolo):  # back through a labelImg folder: the same boxes, read as labelImg's
        folder = write_labelimg_folder(back, classes, tmp_path / f"voc{len(list(tmp_path.iterdir()))}")
        again = read_voc_dir(folder, lm)
        assert {k: [(lab, box) for lab, box, _ in v] for k, v in _boxes(again).items()} == strip


def test_a_coco_file_pycocotools_writes_converts(tmp_path):
    from pycocotools.coco import COCO

    img = write_image(tmp_path / "a.jpg", (100, 80))
    gt = {"images": [{"id": 7, "file_name": "a.jpg", "width": 100, "height": 80}],
          "annotations": [], "categories": [{"id": 3, "name": "EX"}, {"id": 5, "name": "MA"}]}
    coco = COCO()
    coco.dataset = gt
    coco.createIndex()
    res = coco.loadRes([{"image_id": 7, "category_id": 5, "bbox": [10.0, 20.0, 4.0, 3.0], "score": 0.9}])
    (tmp_path / "res.json").write_text(json.dumps({**res.dataset, "categories": gt["categories"]}))
    records, classes = coco_to_records(tmp_path / "res.json", tmp_path)
    assert classes == ["EX", "MA"] and records[0].image_path == img
    assert records[0].objects == (VocObject("MA", (10.0, 20.0, 14.0, 23.0), False, 0.9),)


def test_mask_boxes_are_the_bounding_boxes_of_8_connected_components():
    m = np.zeros((20, 30), np.uint8)
    m[2, 3] = 1                      # one pixel
    m[5:8, 10:14] = 1                # a 4x3 block
    m[8, 14] = 1                     # touches the block diagonally: same component (8-connected)
    m[15:17, 25:27] = 1
    assert sorted(components(m)) == [(3, 2, 4, 3), (10, 5, 15, 9), (25, 15, 27, 17)]
    assert sorted(components(m, min_area=2)) == [(10, 5, 15, 9), (25, 15, 27, 17)]
    assert sorted(components(m, merge_distance=7)) == [(3, 2, 15, 9), (25, 15, 27, 17)]  # gaps 6 and 10 px


def test_class_folders_of_binary_masks(tmp_path):
    (tmp_path / "img").mkdir()
    write_image(tmp_path / "img" / "p1.jpg", (40, 30))
    for cls, box in (("EX", (5, 6, 9, 8)), ("HE", (20, 10, 25, 20))):
        (tmp_path / "m" / cls).mkdir(parents=True)
        m = np.zeros((30, 40), np.uint8)
        m[box[1]:box[3], box[0]:box[2]] = 255
        cv2.imwrite(str(tmp_path / "m" / cls / f"p1_{cls}.png"), m)
    recs = masks_to_records(tmp_path / "m", tmp_path / "img", class_dirs=True)
    assert sorted((o.label, o.box) for o in recs[0].objects) == [("EX", (5, 6, 9, 8)), ("HE", (20, 10, 25, 20))]


def _yolo_case(tmp_path, line):
    (tmp_path / "imgs").mkdir()
    write_image(tmp_path / "imgs" / "a.jpg", (64, 48))
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.1 0.1\n" + line + "\n")
    (tmp_path / "classes.txt").write_text("MA\nHE\n")
    return ["convert", "--from", "yolo", "--yolo", str(tmp_path / "labels"), "--names",
            str(tmp_path / "classes.txt"), "--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "o")]


@pytest.mark.parametrize("line,needle", [("0 0.5 0.5 0.1", "line 2 has 4 fields"),
                                         ("0 0.5 0.5 0.1 0.1 0.9", "line 2 has 6 fields"),
                                         ("1 0.98 0.5 0.1 0.1", "line 2: box"),
                                         ("1 1.5 0.5 0.1 0.1", "outside [0, 1]"),
                                         ("4 0.5 0.5 0.1 0.1", "class 4")])
def test_bad_yolo_lines_name_the_file_and_line(tmp_path, capsys, line, needle):
    rc = main(_yolo_case(tmp_path, line))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "a.txt" in err[0] and needle in err[0], err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("change,needle", [
    (lambda d: d["images"][0].update(file_name="missing.jpg"), "missing.jpg"),
    (lambda d: d["annotations"][0].update(category_id=99), "category_id 99"),
    (lambda d: d.pop("categories"), "'categories'"),
    (lambda d: d["annotations"][0].update(image_id=42), "image id"),
])
def test_bad_coco_files_are_one_line(tmp_path, capsys, change, needle):
    write_image(tmp_path / "a.jpg", (64, 48))
    doc = records_to_coco([VocRecord(tmp_path / "a.jpg", 64, 48, (VocObject("MA", (1, 2, 5, 6)),))], ["MA"])
    change(doc)
    (tmp_path / "c.json").write_text(json.dumps(doc))
    rc = main(["convert", "--from", "coco", "--json", str(tmp_path / "c.json"), "--images", str(tmp_path),
               "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "c.json" in err[0] and needle in err[0], err
    assert not (tmp_path / "o").exists()


def test_a_mask_of_another_size_is_refused(tmp_path, capsys):
    (tmp_path / "img").mkdir()
    (tmp_path / "m").mkdir()
    write_image(tmp_path / "img" / "a.jpg", (64, 48))
    cv2.imwrite(str(tmp_path / "m" / "a.png"), np.zeros((10, 10, 3), np.uint8))
    rc = main(["convert", "--from", "masks", "--masks", str(tmp_path / "m"), "--images", str(tmp_path / "img"),
               "--colours", "idrid", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "a.png" in err[0] and "10x10" in err[0] and "64x48" in err[0]


def test_voc_to_coco_and_yolo_from_the_command_line(tmp_path):
    from tests.conftest import SAMPLE

    assert main(["convert", "--voc", str(SAMPLE / "test"), "--to", "coco", "--out", str(tmp_path / "t.json")]) == 0
    doc = json.loads((tmp_path / "t.json").read_text())
    assert len(doc["images"]) == 6 and doc["annotations"]
    assert main(["convert", "--voc", str(SAMPLE / "test"), "--to", "yolo", "--out", str(tmp_path / "y")]) == 0
    assert len(list((tmp_path / "y" / "labels").glob("*.txt"))) == 6 and (tmp_path / "y" / "data.yaml").is_file()


def test_keep_masks_puts_the_masks_beside_the_xml(tmp_path):
    from lesiondet import api

    (tmp_path / "img").mkdir()
    write_image(tmp_path / "img" / "p1.jpg", (40, 30))
    (tmp_path / "m" / "EX").mkdir(parents=True)
    m = np.zeros((30, 40), np.uint8)
    m[3:6, 4:9] = 1
    cv2.imwrite(str(tmp_path / "m" / "EX" / "p1.png"), m)
    r = api.convert(tmp_path / "out", source="masks", masks=tmp_path / "m", images=tmp_path / "img",
                    class_dirs=True, keep_masks=True)
    assert r["objects"] == 1 and r["classes"] == ["EX"]
    assert (tmp_path / "out" / "masks" / "EX" / "p1.png").is_file()
    assert (tmp_path / "out" / "Annotations" / "p1.xml").is_file()
    assert (tmp_path / "out" / "JPEGImages" / "p1.jpg").is_file()


def test_an_existing_output_folder_is_never_overwritten(tmp_path, capsys):
    from tests.conftest import SAMPLE

    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "keep.txt").write_text("mine")
    assert main(["convert", "--voc", str(SAMPLE / "test"), "--to", "yolo", "--out", str(tmp_path / "y")]) == 2
    assert "not empty" in capsys.readouterr().err and (tmp_path / "y" / "keep.txt").read_text() == "mine"
