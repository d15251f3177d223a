"""Other cameras: the field of view measured however a photograph was cropped, and the changes a camera or a
telemedicine link makes, rendered repeatably."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from lesiondet.camera import RENDERINGS, CameraShift, crop_square, jpeg, render, shrink_to_fov, squash_fov
from lesiondet.images import fov_circle


def retina(width: int = 1024, diameter: float = 0.8, seed: int = 0) -> np.ndarray:
    """A 3:2 photograph with a textured disc ``diameter`` x width across, cut top and bottom as cameras do."""
    rng = np.random.default_rng(seed)
    h = width * 2 // 3
    img = np.zeros((h, width, 3), np.uint8)
    r = round(diameter * width / 2)
    cv2.circle(img, (width // 2, h // 2), r, (150, 70, 40), -1)
    noise = cv2.GaussianBlur(rng.normal(0, 20, (h, width)).astype(np.float32), (0, 0), 2)
    inside = img[..., 0] > 0
    img[inside] = np.clip(img[inside].astype(np.float32) + noise[inside, None], 0, 255).astype(np.uint8)
    return img


def test_a_disc_cut_top_and_bottom_measures_its_width():
    cx, cy, d = fov_circle(retina())
    assert d == pytest.approx(0.8 * 1024, rel=0.02)
    assert (cx, cy) == pytest.approx((512, 341), abs=6)


def test_a_square_cut_from_the_middle_still_measures_the_whole_disc():
    """The square loses the disc's left and right, so its extent is the square's side; the rim left in the
    corners says how wide the disc was."""
    img = retina()
    square = crop_square(img)
    assert square.shape[:2] == (682, 682)
    assert fov_circle(square)[2] == pytest.approx(0.8 * 1024, rel=0.03)
    small = cv2.resize(square, (400, 400), interpolation=cv2.INTER_AREA)
    assert fov_circle(small)[2] == pytest.approx(0.8 * 1024 * 400 / 682, rel=0.03)


def test_a_frame_filled_to_the_edges_counts_as_all_field_of_view():
    img = np.full((300, 400, 3), 120, np.uint8)
    assert fov_circle(img) == pytest.approx((200, 150, 400))


def test_shrinking_to_a_field_of_view_never_enlarges():
    img = retina(1024)
    assert fov_circle(shrink_to_fov(img, 400))[2] == pytest.approx(400, rel=0.03)
    assert shrink_to_fov(img, 5000) is img


def test_jpeg_at_low_quality_changes_the_pixels_and_keeps_the_size():
    img = retina(512)
    out = jpeg(img, 30)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert 0 < np.abs(out.astype(int) - img.astype(int)).mean() < 10


def test_squash_stretches_the_field_of_views_box_to_a_square():
    out = squash_fov(retina(1024))
    assert out.shape[0] == out.shape[1] == pytest.approx(0.8 * 1024, abs=8)


@pytest.mark.parametrize("name", sorted(RENDERINGS))
def test_every_named_rendering_is_repeatable(name):
    img = retina(1024)
    a, b = render(img, name), render(img, name)
    assert np.array_equal(a, b)
    if "side" in RENDERINGS[name]:
        assert a.shape[:2] == (RENDERINGS[name]["side"],) * 2
    if "fov" in RENDERINGS[name]:
        assert fov_circle(a)[2] == pytest.approx(RENDERINGS[name]["fov"], rel=0.04)


def test_a_camera_shift_is_set_by_its_random_generator():
    img = retina(768)
    shift = CameraShift()
    a = shift(img, np.random.default_rng(3))
    assert np.array_equal(a, shift(img, np.random.default_rng(3)))
    others = [shift(img, np.random.default_rng(s)) for s in range(6)]
    assert len({o.shape for o in others}) > 1, "field of view and crop vary between draws"
    assert all(o.dtype == np.uint8 and o.ndim == 3 for o in others)
