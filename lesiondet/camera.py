"""What another camera, or the link a photograph came through, does to a fundus photograph.

Users' photographs come from cameras and resolutions the shared sets lack: a smaller field of
view in pixels, JPEG at a telemedicine link's quality, a crop to a square or to the field of
view's box (often squashed to a square, as the shared APTOS copy is), another white balance,
gamma, focus and illumination. The same functions make such photographs for three uses:

* training views (``CameraShift``): a model fitted on them learns what stays put under them;
* the resolution checks in the tests and benchmarks (``render``: one named, repeatable change);
* nothing at inference: a photograph is read as it is, at the retinal scale.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from lesiondet.images import fov_circle, fov_mask


def shrink_to_fov(img: np.ndarray, diameter: float) -> np.ndarray:
    """``img`` area-averaged so its field of view is ``diameter`` px across; never enlarged."""
    d = fov_circle(img)[2]
    f = diameter / d
    if f >= 1:
        return img
    h, w = img.shape[:2]
    return cv2.resize(img, (max(8, round(w * f)), max(8, round(h * f))), interpolation=cv2.INTER_AREA)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """``img`` through a JPEG encoder at ``quality`` (1-100) and back."""
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(img[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].copy()


def crop_square(img: np.ndarray) -> np.ndarray:
    """The centre square of ``img`` (a wide photograph loses the disc's left and right)."""
    h, w = img.shape[:2]
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    return img[y0:y0 + s, x0:x0 + s]


def squash_fov(img: np.ndarray) -> np.ndarray:
    """The field of view's bounding box stretched to a square (how several public copies were made)."""
    mask = fov_mask(img)
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return img
    box = img[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    s = max(box.shape[:2])
    return cv2.resize(box, (s, s), interpolation=cv2.INTER_AREA)


#: the named, repeatable changes the resolution checks use (``render``)
RENDERINGS: dict[str, dict[str, Any]] = {
    "native": {},
    "fov400": {"fov": 400},                                   # the same camera at a 400-px field of view
    "fov400_q70": {"fov": 400, "quality": 70},                # ... sent through a telemedicine link
    "square400_q75": {"crop": "square", "side": 400, "quality": 75},  # a square thumbnail of 400 x 400
    "squash400_q90": {"crop": "squash", "side": 400, "quality": 90},  # the box stretched to 400 x 400
    "fov300_q50": {"fov": 300, "quality": 50},               # the worst the grader is trained for
}


def render(img: np.ndarray, name: str | Mapping[str, Any]) -> np.ndarray:
    """One named change of ``RENDERINGS`` (or its settings): crop, then size, then JPEG, in that order."""
    spec = RENDERINGS[name] if isinstance(name, str) else name
    out = img
    if spec.get("crop") == "square":
        out = crop_square(out)
    elif spec.get("crop") == "squash":
        out = squash_fov(out)
    if "side" in spec:
        s = int(spec["side"])
        interp = cv2.INTER_AREA if max(out.shape[:2]) > s else cv2.INTER_LINEAR
        out = cv2.resize(out, (s, s), interpolation=interp)
    if "fov" in spec:
        out = shrink_to_fov(out, float(spec["fov"]))
    if "quality" in spec:
        out = jpeg(out, int(spec["quality"]))
    return out


def camera_colour() -> list[Any]:
    """Another camera's colour (albumentations, pixel-level: boxes and masks stay put): white balance,
    gamma, brightness, contrast and saturation, uneven illumination, sensor noise."""
    import albumentations as A

    return [
        A.PlanckianJitter(p=0.5),
        A.RandomGamma((70, 145), p=0.7),
        A.ColorJitter(brightness=(0.75, 1.25), contrast=(0.75, 1.25), saturation=(0.7, 1.3), hue=(-0.03, 0.03),
                      p=0.8),
        A.Illumination(mode="gaussian", intensity_range=(0.05, 0.2), p=0.4),
        A.ISONoise(p=0.15),
    ]


def camera_tile(p: float) -> Any:
    """With chance ``p``, a detector training tile as another camera would have taken it.

    ``camera_colour``, then vignetting, a slight defocus, fewer sensor pixels (down and up again)
    and JPEG. All pixel-level, so boxes stay put. The defocus and the resolution loss are mild: at
    the working scale a microaneurysm is 4-10 px across, and a tile blurred past that teaches
    "no lesion here" where one is marked.
    """
    import albumentations as A

    return A.Sequential([
        *camera_colour(),
        A.Illumination(mode="corner", intensity_range=(0.05, 0.2), effect_type="darken", p=0.3),
        A.GaussianBlur(blur_limit=0, sigma_limit=(0.3, 1.0), p=0.25),
        A.Downscale(scale_range=(0.6, 0.9), p=0.25),
        A.ImageCompression(quality_range=(50, 95), p=0.5),
    ], p=p)


@dataclass(frozen=True)
class CameraShift:
    """A random other camera: colour, gamma, illumination, focus and noise (albumentations), then a crop, a
    smaller field of view and JPEG, each with the chances and ranges below. ``__call__(img, rng)``."""

    fov_range: tuple[float, float] = (250.0, 800.0)  # field-of-view diameters, drawn log-uniformly
    p_fov: float = 0.85
    quality_range: tuple[int, int] = (35, 95)
    p_jpeg: float = 0.8
    p_square: float = 0.2  # centre square crop
    p_squash: float = 0.2  # box stretched to a square
    p_colour: float = 0.8  # white balance, gamma, brightness and contrast, uneven illumination
    p_blur: float = 0.25  # slight defocus, before the size change (in the camera)

    def colour(self) -> Any:
        import albumentations as A

        return A.Compose(camera_colour())

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = img
        if rng.random() < self.p_colour:
            tf = self.colour()
            tf.set_random_seed(int(rng.integers(2**31)))
            out = tf(image=out)["image"]
        if rng.random() < self.p_blur:
            out = cv2.GaussianBlur(out, (0, 0), float(rng.uniform(0.5, 2.0)) * max(out.shape[:2]) / 1024)
        u = rng.random()
        if u < self.p_square:
            out = crop_square(out)
        elif u < self.p_square + self.p_squash:
            out = squash_fov(out)
        if rng.random() < self.p_fov:
            lo, hi = np.log(self.fov_range)
            out = shrink_to_fov(out, float(np.exp(rng.uniform(lo, hi))))
        if rng.random() < self.p_jpeg:
            out = jpeg(out, int(rng.integers(self.quality_range[0], self.quality_range[1] + 1)))
        return np.ascontiguousarray(out)
