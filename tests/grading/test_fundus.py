"""Ben Graham preprocessing and the imageability check."""
import cv2
import numpy as np
import pytest

from lesiondet.grading.fundus import assess_quality, ben_graham


def fundus(size=(640, 480), tint=(1.0, 1.0, 1.0), seed=0) -> np.ndarray:
    """A bright textured disc on black, as a fundus camera frames the retina."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = np.zeros((h, w, 3), np.float32)
    noise = cv2.GaussianBlur(rng.normal(0, 40, (h, w)).astype(np.float32), (0, 0), 1.5)
    vessels = np.zeros((h, w), np.float32)
    for _ in range(12):
        p = rng.integers(0, [w, h], (2, 2))
        cv2.line(vessels, tuple(map(int, p[0])), tuple(map(int, p[1])), 60, 2)
    for c, (level, t) in enumerate(zip((170, 90, 40), tint)):
        base[..., c] = (level + noise - vessels) * t
    mask = np.zeros((h, w), np.uint8)
    cv2.circle(mask, (w // 2, h // 2), int(h * 0.48), 1, -1)
    return np.clip(base * mask[..., None], 0, 255).astype(np.uint8)


def test_ben_graham_gives_a_square_grey_rimmed_picture_of_the_requested_size():
    out = ben_graham(fundus(), 128)
    assert out.shape == (128, 128, 3) and out.dtype == np.uint8
    assert (out[0, 0] == 128).all() and (out[-1, -1] == 128).all()  # outside the circle: mid grey


def test_ben_graham_removes_a_camera_colour_cast():
    plain, tinted = ben_graham(fundus(), 128), ben_graham(fundus(tint=(0.8, 1.1, 1.0)), 128)
    raw_gap = np.abs(cv2.resize(fundus(), (128, 128)).astype(int) - cv2.resize(fundus(tint=(0.8, 1.1, 1.0)),
                                                                             (128, 128))).mean()
    assert np.abs(plain.astype(int) - tinted.astype(int)).mean() < raw_gap / 2


def test_a_clear_centred_photograph_is_gradable():
    q = assess_quality(fundus())
    assert q.gradable, q.reasons


@pytest.mark.parametrize("spoil, reason", [
    (lambda im: (im * 0.08).astype(np.uint8), "too dark"),
    (lambda im: cv2.GaussianBlur(im, (0, 0), 6), "too blurred"),
    (lambda im: np.zeros_like(im), "no retinal field of view"),
    (lambda im: cv2.warpAffine(im, np.float32([[1, 0, 230], [0, 1, 150]]), im.shape[1::-1]), "off-centre"),
])
def test_a_spoiled_photograph_is_ungradable_and_says_why(spoil, reason):
    q = assess_quality(spoil(fundus()))
    assert not q.gradable
    assert any(reason in r for r in q.reasons), q.reasons


def test_every_shared_graded_photograph_sampled_is_gradable(shared_data):
    from lesiondet.images import read_rgb

    paths = sorted((shared_data / "grading" / "srahim" / "images").glob("*.jpg"))[::15]
    bad = {p.name: assess_quality(read_rgb(p)).reasons for p in paths}
    assert not {k: v for k, v in bad.items() if v}
