"""``lesiondet data stats``: what a folder holds, before training on it."""
import json
import shutil

import cv2
import numpy as np

from lesiondet.cli import main
from lesiondet.io.stats import dataset_stats
from lesiondet.io.voc import VocObject, VocRecord
from tests.conftest import SAMPLE, write_xml


def _photo(path, seed):
    rng = np.random.default_rng(seed)
    img = np.zeros((120, 160, 3), np.uint8)
    cv2.circle(img, (80, 60), 55, (40, 80, 200), -1)
    for _ in range(30):
        x, y = rng.integers(30, 130), rng.integers(15, 105)
        cv2.circle(img, (int(x), int(y)), int(rng.integers(2, 8)), tuple(int(v) for v in rng.integers(0, 255, 3)), -1)
    cv2.imwrite(str(path), img)
    return path


def test_counts_sizes_empty_images_border_boxes_and_warnings(tmp_path):
    a, b, c = (_photo(tmp_path / f"{n}.png", i) for i, n in enumerate("abc"))
    recs = [VocRecord(a, 160, 120, (VocObject("MA", (0, 10, 4, 14)), VocObject("MA", (50, 50, 51.5, 60)))),
            VocRecord(b, 160, 120, (VocObject("EX", (10, 10, 150, 110)),)), VocRecord(c, 160, 120, ())]
    s = dataset_stats(recs)
    assert s["images"] == 3 and s["objects"] == 3 and s["empty_images"] == ["c"]
    assert s["classes"]["MA"]["objects"] == 2 and s["classes"]["MA"]["touching_border"] == 1
    assert s["classes"]["EX"]["size_px"]["p50"] == round((140 * 100) ** 0.5, 2)
    text = " | ".join(s["warnings"])
    assert "under 2 px" in text and "over half the image" in text and "class MA has only 2 objects" in text
    assert s["duplicates"] == [] and s["image_sizes"] == {"160x120": 3}


def test_the_same_photograph_on_both_sides_of_a_split_is_found(tmp_path, capsys):
    for split in ("train", "val"):
        (tmp_path / split).mkdir()
    for i in range(3):
        _photo(tmp_path / "train" / f"t{i}.png", i)
        write_xml(tmp_path / "train" / f"t{i}.xml", f"t{i}.png", (160, 120), [("MA", 20, 20, 25, 25)])
    _photo(tmp_path / "val" / "v0.png", 10)
    write_xml(tmp_path / "val" / "v0.xml", "v0.png", (160, 120), [("MA", 20, 20, 25, 25)])
    # a re-encoded copy of a training photograph, as a JPEG, in the validation split
    cv2.imwrite(str(tmp_path / "val" / "v1.jpg"), cv2.imread(str(tmp_path / "train" / "t1.png")),
                [cv2.IMWRITE_JPEG_QUALITY, 80])
    write_xml(tmp_path / "val" / "v1.xml", "v1.jpg", (160, 120), [("MA", 20, 20, 25, 25)])
    assert main(["data", "stats", "--voc", str(tmp_path / "val"), "--against", str(tmp_path / "train"),
                 "--out", str(tmp_path / "s")]) == 0
    doc = json.loads((tmp_path / "s" / "stats.json").read_text())
    leaks = doc["against"]["duplicates"]
    assert [(p["a"].rsplit("/", 1)[-1], p["b"].rsplit("/", 1)[-1]) for p in leaks] == [("v1.jpg", "t1.png")]
    assert "both sides" in capsys.readouterr().out
    page = (tmp_path / "s" / "stats.html").read_text()
    assert "data:image/png;base64," in page and "v1.jpg" in page
    assert (tmp_path / "s" / "sizes.png").stat().st_size > 1000


def test_stats_on_the_sample_from_the_command_line(tmp_path, capsys):
    shutil.copytree(SAMPLE / "train", tmp_path / "train")
    assert main(["data", "stats", "--voc", str(tmp_path / "train"), "--out", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "24 images" in out and "MA" in out and "p50" in out
