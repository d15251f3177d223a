"""The retinal scale: a photograph is read at a size set by its field of view, whatever its pixels."""
from __future__ import annotations

import random

import cv2
import numpy as np
import pytest
import torch

from lesiondet.detection.predict import sliced_predict
from lesiondet.detection.scale import factor_for, retina_factor, scale_record, to_working, working_tiling
from lesiondet.detection.slicing import resolve_tiling, slice_windows
from lesiondet.errors import LesiondetError
from lesiondet.images import fov_diameter
from lesiondet.io.voc import VocObject, VocRecord
from tests.detection.test_slicing import BrightSpotModel


def photograph(width: int, lesions=((0.62, 0.41, 0.006),)) -> tuple[np.ndarray, list[tuple[float, ...]]]:
    """A synthetic 3:2 fundus photograph ``width`` px wide: a retina 80% of the width across (cut top and
    bottom, as cameras crop it) with bright square lesions at (x, y) shares of the image, ``size`` a share of
    the width; returns it and the lesions' boxes in its pixels."""
    h = width * 2 // 3
    img = np.zeros((h, width, 3), np.uint8)
    cv2.circle(img, (width // 2, h // 2), round(0.4 * width), (150, 70, 40), -1)
    boxes = []
    for fx, fy, fs in lesions:
        x0, y0, s = round(fx * width), round(fy * h), max(2, round(fs * width))
        img[y0:y0 + s, x0:x0 + s] = 255
        boxes.append((float(x0), float(y0), float(x0 + s), float(y0 + s)))
    return img, boxes


@pytest.mark.parametrize("width", [768, 1600, 4288])
def test_the_field_of_view_diameter_is_measured_on_the_retina_not_the_frame(width):
    img, _ = photograph(width)
    assert fov_diameter(img) == pytest.approx(0.8 * width, rel=0.02)


def test_a_large_photograph_is_brought_to_the_retina_size_and_a_small_one_enlarged_at_most_by_zoom():
    t = resolve_tiling({"retina_px": 2000, "zoom": 1.3})
    assert factor_for(4000, t) == pytest.approx(0.5)      # 12 megapixels: shrunk to 2000 px of retina
    assert factor_for(1600, t) == pytest.approx(1.25)     # enlarged to 2000, within zoom
    assert factor_for(800, t) == pytest.approx(1.3)       # a 1024-px camera: read at zoom, as trained
    assert retina_factor(np.zeros((10, 10, 3), np.uint8), resolve_tiling({"zoom": 1.3})) is None  # native scale


def test_working_boxes_map_back_to_the_photograph_exactly():
    img, boxes = photograph(1001)
    work, sx, sy = to_working(img, 0.37)
    assert work.shape[:2] == (round(img.shape[0] * 0.37), round(1001 * 0.37))
    rec = VocRecord(__import__("pathlib").Path("p.png"), 1001, img.shape[0], (VocObject("MA", boxes[0]),))
    there = scale_record(rec, work.shape[1], work.shape[0], sx, sy)
    back = scale_record(there, 1001, img.shape[0], 1 / sx, 1 / sy)
    assert back.objects[0].box == pytest.approx(boxes[0], abs=1e-9)
    assert (there.width, there.height) == (work.shape[1], work.shape[0])


@pytest.mark.parametrize("width", [1200, 2400])
def test_the_same_eye_at_two_sizes_gives_the_same_working_image_and_boxes_in_each_photographs_pixels(width):
    t = resolve_tiling({"retina_px": 800, "zoom": 1.3, "tile": 256, "fov_min": 0.0})
    img, boxes = photograph(width, lesions=((0.62, 0.41, 0.008),))
    model = BrightSpotModel()
    out = sliced_predict(model, img, t, torch.device("cpu"))
    # both sizes show the network a retina 800 px across: the same tiles, whatever the camera wrote
    work_w = round(width * 800 / fov_diameter(img))
    assert abs(work_w - 1000) <= 20
    assert len(model.calls) == len(slice_windows(work_w, round(work_w * 2 / 3), 256, 0.2)) + 1 == 16  # + whole pass
    assert out["boxes"].tolist() == [pytest.approx(boxes[0], abs=width / work_w + 1e-6)]  # within a working px


def test_a_photograph_smaller_than_the_retina_size_is_read_as_before():
    t = resolve_tiling({"retina_px": 3000, "zoom": 1, "tile": 512, "fov_min": 0.0})
    img, boxes = photograph(900)  # retina 720 px: 3000 / 720 > zoom 1, so it stays at its pixels
    native = resolve_tiling({"zoom": 1, "tile": 512, "fov_min": 0.0})
    cpu = torch.device("cpu")
    a = sliced_predict(BrightSpotModel(), img, t, cpu)["boxes"].tolist()
    assert a == sliced_predict(BrightSpotModel(), img, native, cpu)["boxes"].tolist() == [list(boxes[0])]


def test_training_tiles_are_cut_from_the_working_image_with_their_boxes(tmp_path):
    from lesiondet.detection.data import TileDataset
    from lesiondet.io.labels import LabelMap

    img, boxes = photograph(3000, lesions=((0.3, 0.3, 0.004), (0.6, 0.5, 0.004)))
    cv2.imwrite(str(tmp_path / "big.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    rec = VocRecord(tmp_path / "big.png", 3000, 2000, tuple(VocObject("MA", b) for b in boxes))
    t = resolve_tiling({"retina_px": 1200, "zoom": 1.3, "tile": 256, "full_fraction": 0.0, "pos_fraction": 1.0,
                        "tiles_per_image": 6})
    ds = TileDataset([rec], LabelMap(("MA",)), t)
    assert ds.size(0) == pytest.approx((1500, 1000), rel=0.03)  # a 2400-px retina read at 1200
    random.seed(0)
    for k in range(len(ds)):
        x, target = ds[k]
        assert tuple(x.shape) == (3, 256, 256)
        for b in target["boxes"].tolist():
            assert b[2] - b[0] == pytest.approx(6, abs=0.5)  # 12-px lesions at half scale
            patch = x[0, round(b[1]) + 1:round(b[3]) - 1, round(b[0]) + 1:round(b[2]) - 1]
            assert patch.numel() and patch.min() > 0.9


def test_working_tiling_slices_at_zoom_one_and_never_resizes_twice():
    t = working_tiling(resolve_tiling({"retina_px": 1500, "zoom": 1.3}))
    assert t["zoom"] == 1.0 and t["retina_px"] is None
    assert working_tiling(resolve_tiling({"zoom": 1.3}))["zoom"] == 1.3


@pytest.mark.parametrize("bad", [10, -5, "big", True, 20000])
def test_a_bad_retina_size_is_a_one_line_error(bad):
    with pytest.raises(LesiondetError, match="retina_px"):
        resolve_tiling({"retina_px": bad})
