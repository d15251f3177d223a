"""Slicing: windows, training tiles, sliced inference coordinates, merging across tiles."""
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lesiondet.detection.merging import drop_cut_boxes, merge_detections, suppress_nested, weighted_box_fusion
from lesiondet.detection.predict import merge_passes, predict_tiles, sliced_predict
from lesiondet.detection.slicing import (
    auto_zoom,
    crop_objects,
    resolve_tiling,
    sample_window,
    samples_per_image,
    should_slice,
    slice_windows,
    val_windows,
    window_size,
)
from lesiondet.errors import LesiondetError
from lesiondet.io.voc import VocObject, VocRecord


@pytest.mark.parametrize("w,h,win,overlap", [(4288, 2848, 512, 0.2), (1024, 1024, 512, 0.2), (700, 300, 512, 0.5),
                                             (512, 512, 512, 0.2), (100, 80, 512, 0.2)])
def test_windows_cover_the_image_stay_inside_and_overlap_at_least_as_asked(w, h, win, overlap):
    wins = slice_windows(w, h, win, overlap)
    cover = np.zeros((h, w), bool)
    for x0, y0, x1, y1 in wins:
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        assert x1 - x0 == min(win, w) and y1 - y0 == min(win, h)
        cover[y0:y1, x0:x1] = True
    assert cover.all()
    xs = sorted({x0 for x0, *_ in wins})
    for a, b in zip(xs, xs[1:]):
        assert (a + win) - b >= overlap * win - 1


def test_positive_training_window_contains_the_chosen_lesion():
    rng = random.Random(0)
    objs = [VocObject("MA", (1000.0, 700.0, 1012.0, 712.0)), VocObject("EX", (3000.0, 2000.0, 3030.0, 2020.0))]
    seen = set()
    for _ in range(50):
        x0, y0, x1, y1 = sample_window(objs, 4288, 2848, 512, "positive", rng)
        assert x1 - x0 == 512 and y1 - y0 == 512 and 0 <= x0 and x1 <= 4288 and y1 <= 2848
        inside = [o.label for o in objs if x0 <= o.box[0] and o.box[2] <= x1 and y0 <= o.box[1] and o.box[3] <= y1]
        assert inside
        seen |= set(inside)
    assert seen == {"MA", "EX"}  # class-balanced: the lone MA is not drowned by others


def test_random_training_windows_avoid_the_black_border():
    mask = np.zeros((100, 100), bool)
    mask[30:70, 30:70] = True  # field of view in the middle, at 1/10 scale
    rng = random.Random(1)
    for _ in range(20):
        w = sample_window([], 1000, 1000, 200, "random", rng, (mask, 0.1), fov_min=0.05)
        x0, y0, x1, y1 = (v // 10 for v in w)
        assert mask[y0:y1, x0:x1].mean() >= 0.05


def test_cut_boxes_are_kept_only_when_enough_is_visible():
    objs = [VocObject("HE", (90.0, 10.0, 110.0, 30.0)), VocObject("HE", (95.0, 40.0, 135.0, 60.0))]
    boxes, labels = crop_objects(objs, (0, 0, 100, 100), min_visibility=0.3)
    assert labels == ["HE"] and boxes.tolist() == [[90.0, 10.0, 100.0, 30.0]]


def test_auto_zoom_brings_small_lesions_to_the_target_and_never_shrinks():
    tiny = [VocRecord(None, 1024, 1024, tuple(VocObject("EX", (0.0, 0.0, 4.0, 4.0)) for _ in range(10)))]
    big = [VocRecord(None, 1024, 1024, (VocObject("HE", (0.0, 0.0, 40.0, 40.0)),))]
    assert auto_zoom(tiny, 8) == pytest.approx(2.0)
    assert auto_zoom(big, 8) == 1.0
    assert auto_zoom([], 8) == 1.0


def test_bad_tiling_options_are_one_line_errors():
    for bad in ({"tile": 10}, {"overlap": 0.95}, {"merge": "vote"}, {"tyle": 512}, {"tiles_per_image": 0},
                {"tta": "yes"}, {"merge_pad": -1}, {"merge_pad": "wide"}):
        with pytest.raises(LesiondetError):
            resolve_tiling(bad)


def test_big_images_are_sliced_and_give_more_training_tiles_than_small_ones():
    t = resolve_tiling({"tile": 512, "zoom": 1})
    assert should_slice(4288, 2848, t) and not should_slice(600, 600, t)
    assert samples_per_image(600, 600, t) == 1
    assert samples_per_image(4288, 2848, t) > samples_per_image(1024, 1024, t) > 1
    assert window_size({**t, "zoom": 2}) == 256


def test_nms_merge_keeps_one_box_per_lesion_seen_by_two_tiles():
    boxes = torch.tensor([[10.0, 10, 20, 20], [10.5, 10, 20.5, 20], [50, 50, 60, 60]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    labels = torch.tensor([1, 1, 1])
    b, s, lab = merge_detections(boxes, scores, labels, "nms", 0.5)
    assert len(b) == 2 and s.tolist() == pytest.approx([0.9, 0.7])
    # Different classes at the same place are not merged.
    b, _, _ = merge_detections(boxes, scores, torch.tensor([1, 2, 1]), "nms", 0.5)
    assert len(b) == 3


def test_padded_merge_keeps_one_box_for_a_tiny_lesion_seen_a_pixel_off_but_two_for_neighbours():
    # one 5-px exudate seen 2 px apart by two passes (IoU 0.43), and a second one 12 px away
    boxes = torch.tensor([[10.0, 10, 15, 15], [12.0, 10, 17, 15], [27.0, 10, 32, 15]])
    scores, labels = torch.tensor([0.9, 0.8, 0.7]), torch.tensor([3, 3, 3])
    assert len(merge_detections(boxes, scores, labels, "nms", 0.5)[0]) == 3  # plain IoU: a duplicate survives
    for method in ("nms", "wbf"):
        b, s, _ = merge_detections(boxes, scores, labels, method, 0.5, pad=4.0)
        assert len(b) == 2 and s[1].item() == pytest.approx(0.7)
    b, _, _ = merge_detections(boxes, scores, labels, "nms", 0.5, pad=4.0)
    assert b.tolist() == [[10.0, 10, 15, 15], [27.0, 10, 32, 15]]  # boxes come back as found, not grown
    # Large boxes 2 px apart were one lesion anyway; 4 px of padding does not join two 40-px ones 8 px apart.
    big = torch.tensor([[0.0, 0, 40, 40], [48.0, 0, 88, 40]])
    assert len(merge_detections(big, scores[:2], labels[:2], "nms", 0.5, pad=4.0)[0]) == 2


def test_merge_pad_is_given_in_model_pixels_and_applied_at_the_tiles_zoom():
    boxes = torch.tensor([[10.0, 10, 15, 15], [12.0, 10, 17, 15]])
    scores, labels = torch.tensor([0.9, 0.8]), torch.tensor([3, 3])
    t = resolve_tiling({"zoom": 2.0, "merge_pad": 8.0})  # 4 px of the photograph
    assert len(merge_passes(boxes, scores, labels, t)["boxes"]) == 1
    assert len(merge_passes(boxes, scores, labels, {**t, "merge_pad": 0.0})["boxes"]) == 2
    assert resolve_tiling(None)["merge_pad"] > 0  # on by default


def test_merge_caps_detections_per_class_so_a_common_class_cannot_crowd_out_a_rare_one():
    ex = torch.tensor([[float(10 * i), 0, 10 * i + 8, 8] for i in range(20)])
    ma = torch.tensor([[0.0, 50, 6, 56]])
    boxes, scores = torch.cat([ex, ma]), torch.cat([torch.linspace(0.9, 0.5, 20), torch.tensor([0.01])])
    labels = torch.tensor([3] * 20 + [1])
    b, s, lab = merge_detections(boxes, scores, labels, "nms", 0.5, max_det=5)
    assert lab.tolist().count(3) == 5 and lab.tolist().count(1) == 1
    assert s.tolist() == sorted(s.tolist(), reverse=True)


def test_boxes_inside_a_better_box_of_their_class_are_dropped_but_never_the_box_around_them():
    # a cluster box, two parts inside it, a part of another class, and a neighbour that only touches it
    boxes = torch.tensor([[0.0, 0, 100, 100], [10, 10, 30, 30], [50, 50, 70, 70], [10, 10, 30, 30],
                          [95, 0, 140, 40]])
    scores = torch.tensor([0.9, 0.8, 0.95, 0.7, 0.6])
    labels = torch.tensor([3, 3, 3, 1, 3])
    keep = suppress_nested(boxes, scores, labels, 0.8)
    # part 2 outscores the cluster and stays, and so does the cluster; part 1 scores lower and goes
    assert keep.tolist() == [2, 0, 3, 4]
    b, s, lab = merge_detections(boxes, scores, labels, "nms", 0.5, nested_ios=0.8)
    assert len(b) == 4 and s.tolist() == sorted(s.tolist(), reverse=True)
    assert len(merge_detections(boxes, scores, labels, "nms", 0.5, nested_ios=0.0)[0]) == 5


def test_validation_windows_are_fixed_and_mostly_hold_a_lesion():
    windows = slice_windows(4000, 3000, 500, 0.2)
    objs = [VocObject("MA", (x, y, x + 12, y + 12)) for x, y in [(100, 100), (2000, 1500), (3600, 2700)]]
    pick = val_windows(objs, windows, 8, random.Random(0))
    assert pick == val_windows(objs, windows, 8, random.Random(0)) and len(pick) == 8
    holding = [w for w in pick if any(w[0] <= o.box[0] and o.box[2] <= w[2] and w[1] <= o.box[1]
                                      and o.box[3] <= w[3] for o in objs)]
    # every window that holds a lesion is taken (fewer than 75% of 8 exist), the rest is background
    assert len(holding) == len([w for w in windows if any(w[0] <= o.box[0] and o.box[2] <= w[2] and w[1] <= o.box[1]
                                                          and o.box[3] <= w[3] for o in objs)])
    assert len(val_windows([], windows, 8, random.Random(0))) == 8
    assert len(val_windows(objs, windows[:3], 8, random.Random(0))) == 3


def test_weighted_box_fusion_averages_coordinates_by_score():
    boxes = torch.tensor([[10.0, 10, 20, 20], [12.0, 10, 22, 20]])
    b, s, lab = weighted_box_fusion(boxes, torch.tensor([0.75, 0.25]), torch.tensor([3, 3]), 0.5)
    assert len(b) == 1 and lab.tolist() == [3]
    assert b[0].tolist() == pytest.approx([10.5, 10, 20.5, 20])
    assert s.item() == pytest.approx(0.5)


def test_boxes_touching_an_inner_tile_edge_are_pieces():
    boxes = torch.tensor([[0.0, 10, 10, 20], [200, 200, 210, 210], [505, 5, 512, 15]])
    keep = drop_cut_boxes(boxes, (512, 0, 1024, 512), 2048, 1024)  # left edge inside the image
    assert keep.tolist() == [False, True, False]
    keep = drop_cut_boxes(boxes, (0, 0, 512, 512), 512, 512)  # the window is the image
    assert keep.tolist() == [True, True, True]


class BrightSpotModel:
    """Stands in for a detector: one box around the pixels brighter than 0.9 in each input."""

    def __init__(self):
        self.transform = SimpleNamespace(min_size=(512,), max_size=512)
        self.roi_heads = SimpleNamespace(score_thresh=0.01)
        self.calls = []

    def eval(self):
        return self

    def __call__(self, images):
        outs = []
        for im in images:
            self.calls.append(tuple(im.shape[1:]))
            ys, xs = torch.nonzero(im[0] > 0.9, as_tuple=True)
            if len(xs) == 0:
                outs.append({"boxes": torch.zeros(0, 4), "scores": torch.zeros(0),
                             "labels": torch.zeros(0, dtype=torch.int64)})
            else:
                box = torch.tensor([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=torch.float32)
                outs.append({"boxes": box, "scores": torch.tensor([0.9]), "labels": torch.tensor([1])})
        return outs


def test_sliced_inference_returns_boxes_in_image_coordinates_once():
    img = np.full((1200, 1800, 3), 100, np.uint8)
    img[700:712, 1300:1312] = 255  # a 12-px lesion
    model = BrightSpotModel()
    t = resolve_tiling({"tile": 512, "zoom": 1, "fov_min": 0.0})
    out = sliced_predict(model, img, t, torch.device("cpu"))
    assert len(model.calls) == len(slice_windows(1800, 1200, 512, 0.2)) + 1  # tiles + whole-image pass
    assert out["boxes"].tolist() == [[1300.0, 700.0, 1312.0, 712.0]]


def test_whole_image_pass_finds_large_objects_at_source_scale():
    img = np.full((1200, 1800, 3), 100, np.uint8)
    img[100:700, 300:900] = 255  # a 600-px object, bigger than any tile
    t = resolve_tiling({"tile": 512, "zoom": 1, "fov_min": 0.0})
    out = sliced_predict(BrightSpotModel(), img, t, torch.device("cpu"))
    big = [b for b in out["boxes"].tolist() if b[2] - b[0] > 500]
    assert len(big) == 1 and big[0] == pytest.approx([300, 100, 900, 700], abs=4)
    assert len(out["boxes"]) == 1  # pieces from the tiles were dropped


class LeftHalfModel(BrightSpotModel):
    """Sees bright spots only in the left half of its input: not mirror-symmetric, as real detectors are not."""

    def __call__(self, images):
        blind = []
        for im in images:
            im = im.clone()
            im[:, :, im.shape[-1] // 2:] = 0
            blind.append(im)
        return super().__call__(blind)


@pytest.mark.parametrize("sliced", [True, False])
def test_flip_tta_finds_what_only_the_mirror_image_shows_at_the_right_place(sliced):
    img = np.full((1000, 1000, 3), 100, np.uint8)
    img[300:310, 800:812] = 255  # right half: the plain pass cannot see it
    t = {"tile": 512, "zoom": 1, "fov_min": 0.0, "full_pass": False, "slice": sliced}
    assert len(sliced_predict(LeftHalfModel(), img, resolve_tiling(t), torch.device("cpu"))["boxes"]) == 0
    model = LeftHalfModel()
    out = sliced_predict(model, img, resolve_tiling({**t, "tta": True}), torch.device("cpu"))
    assert out["boxes"].tolist() == [[800.0, 300.0, 812.0, 310.0]]
    assert len(model.calls) == 2 * (len(slice_windows(1000, 1000, 512, 0.2)) if sliced else 1)


def test_flip_tta_merges_the_two_views_of_a_lesion_into_one_box():
    img = np.full((1200, 1800, 3), 100, np.uint8)
    img[700:712, 1300:1312] = 255
    t = resolve_tiling({"tile": 512, "zoom": 1, "fov_min": 0.0, "tta": True})
    out = sliced_predict(BrightSpotModel(), img, t, torch.device("cpu"))
    assert out["boxes"].tolist() == [[1300.0, 700.0, 1312.0, 712.0]]


def test_per_epoch_validation_tiles_honour_flip_tta_with_one_box_per_lesion():
    tile = np.full((512, 512, 3), 100, np.uint8)
    tile[300:310, 400:412] = 255  # right half
    tiles = [(tile, VocRecord(Path("t.png"), 512, 512, ()))]
    t = resolve_tiling({"tile": 512, "tta": True})
    cpu = torch.device("cpu")
    # only the mirror view shows it to a left-half detector; a symmetric one sees it twice, kept once
    for model in (LeftHalfModel(), BrightSpotModel()):
        out = predict_tiles(model, tiles, ["MA"], cpu, 0.01, t)
        assert [o.box for o in out[0].objects] == [(400.0, 300.0, 412.0, 310.0)]


def test_zoom_feeds_smaller_windows_and_maps_back():
    img = np.full((1000, 1000, 3), 100, np.uint8)
    img[400:405, 600:605] = 255
    model = BrightSpotModel()
    t = resolve_tiling({"tile": 512, "zoom": 2, "fov_min": 0.0, "full_pass": False})
    out = sliced_predict(model, img, t, torch.device("cpu"))
    assert all(c == (256, 256) for c in model.calls)
    assert out["boxes"].tolist() == [[600.0, 400.0, 605.0, 405.0]]


def test_training_tiles_carry_boxes_in_tile_coordinates(tmp_path):
    import cv2

    from lesiondet.detection.data import TileDataset
    from lesiondet.io.labels import LabelMap

    img = np.full((1000, 1500, 3), 90, np.uint8)
    objs = []
    for i, (x, y) in enumerate([(100, 100), (700, 500), (1400, 900), (1200, 150)]):
        img[y:y + 10, x:x + 10] = 255
        objs.append(VocObject("MA" if i % 2 else "EX", (float(x), float(y), x + 10.0, y + 10.0)))
    cv2.imwrite(str(tmp_path / "big.png"), img)
    rec = VocRecord(tmp_path / "big.png", 1500, 1000, tuple(objs))
    t = resolve_tiling({"tile": 256, "zoom": 1, "full_fraction": 0.0, "pos_fraction": 1.0, "tiles_per_image": 12})
    ds = TileDataset([rec], LabelMap(("MA", "EX")), t)
    random.seed(0)
    assert len(ds) == 12
    for k in range(len(ds)):
        x, target = ds[k]
        assert tuple(x.shape) == (3, 256, 256)
        assert len(target["boxes"]) >= 1  # positive tiles always hold a lesion
        for b in target["boxes"].round().int().tolist():
            patch = x[0, b[1]:b[3], b[0]:b[2]]
            assert patch.numel() and patch.min() > 0.95  # the box sits on the white square


def test_whole_image_samples_are_shrunk_to_the_tile_with_their_boxes(tmp_path):
    import cv2

    from lesiondet.detection.data import TileDataset
    from lesiondet.io.labels import LabelMap

    img = np.full((1000, 1500, 3), 90, np.uint8)
    img[300:600, 600:900] = 255
    cv2.imwrite(str(tmp_path / "big.png"), img)
    rec = VocRecord(tmp_path / "big.png", 1500, 1000, (VocObject("OD", (600.0, 300.0, 900.0, 600.0)),))
    t = resolve_tiling({"tile": 300, "zoom": 1, "full_fraction": 1.0, "tiles_per_image": 1})
    x, target = TileDataset([rec], LabelMap(("OD",)), t)[0]
    assert tuple(x.shape) == (3, 200, 300)
    assert target["boxes"].tolist() == [pytest.approx([120.0, 60.0, 180.0, 120.0])]


def test_per_epoch_validation_scores_small_images_whole_and_large_ones_on_fixed_tiles(tmp_path):
    import cv2

    from lesiondet.detection.train import FitnessSet

    big = np.full((1000, 1500, 3), 90, np.uint8)
    small = np.full((240, 300, 3), 90, np.uint8)
    spots = [(300, 300), (1100, 700)]
    for x, y in spots:
        big[y:y + 10, x:x + 10] = 255
    small[100:110, 200:210] = 255
    cv2.imwrite(str(tmp_path / "big.png"), big)
    cv2.imwrite(str(tmp_path / "small.png"), small)
    recs = [VocRecord(tmp_path / "big.png", 1500, 1000, tuple(VocObject("MA", (x, y, x + 10.0, y + 10.0))
                                                             for x, y in spots)),
            VocRecord(tmp_path / "small.png", 300, 240, (VocObject("MA", (200.0, 100, 210, 110)),))]
    t = resolve_tiling({"tile": 256, "zoom": 1, "fov_min": 0.0, "full_pass": False})
    fs = FitnessSet(recs, t, max_images=50, max_tiles=6)
    assert [r.stem for r in fs.whole] == ["small"]
    assert len(fs.tiles) == 6 and fs.describe() == "1 images + 6 tiles of sliced images"
    for crop, rec in fs.tiles:
        assert crop.shape == (256, 256, 3) and (rec.width, rec.height) == (256, 256)
        for o in rec.objects:  # boxes are in tile coordinates, on the white square
            x0, y0, x1, y1 = map(round, o.box)
            assert crop[y0:y1, x0:x1].min() == 255
    assert sum(bool(rec.objects) for _, rec in fs.tiles) >= 2
    m = fs.evaluate(BrightSpotModel(), ["MA"], torch.device("cpu"), 0.001, t)
    assert m["per_class"]["MA"]["AP50"] > 0.9 and m["n_images"] == 7
    # val_max_tiles 0: sliced images are scored whole, as 'lesiondet eval' does
    assert len(FitnessSet(recs, t, 50, 0).whole) == 2
