"""Whole-photograph preprocessing for the grading CNN, and whether a photograph can be graded at all.

``ben_graham`` is the Kaggle 2015 winner's recipe (seed 002): crop to the field of
view, scale it to a fixed size, subtract a local average colour
(``4·img − 4·blur(img) + 128``) so every camera's tint and vignetting fall away,
and grey out a thin rim where the field of view ends. The same function runs at
training and at inference.

``assess_quality`` is what a screening service reports as imageability (IDx-DR
grades only "imageable" exams): a photograph too dark, too blurred, with no field
of view, or with the field of view cut off is reported as ungradable instead of
being graded.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from lesiondet.grading.anatomy import fov_mask


def fov_box(img: np.ndarray) -> tuple[int, int, int, int]:
    """Bounding box (x0, y0, x1, y1) of the illuminated field of view; the whole image if none is found."""
    mask = fov_mask(img)
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return 0, 0, img.shape[1], img.shape[0]
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def square_fov(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The field of view centred in a black square whose side is its larger extent (nothing is cut),
    and a mask of the square's pixels that came from the photograph (a frame often clips the circle)."""
    x0, y0, x1, y1 = fov_box(img)
    crop = img[y0:y1, x0:x1]
    h, w = crop.shape[:2]
    side = max(h, w)
    out = np.zeros((side, side, 3), np.uint8)
    inside = np.zeros((side, side), bool)
    oy, ox = (side - h) // 2, (side - w) // 2
    out[oy:oy + h, ox:ox + w] = crop
    inside[oy:oy + h, ox:ox + w] = True
    return out, inside


#: Ben Graham works at a fixed scale: the field of view is brought to this side before the blur
#: (sigma = side / 100), then the result is shrunk to the network's size. At 1024 px this gives the
#: contrast of the shared APTOS copy, which its source preprocessed (centre std 12 vs 14 grey levels).
BG_WORK = 1024


def ben_graham(img: np.ndarray, size: int, rim: float = 0.95) -> np.ndarray:
    """RGB uint8 photograph → ``size``×``size`` RGB uint8, local-average subtracted and circle-cropped."""
    sq, inside = square_fov(img)
    interp = cv2.INTER_AREA if sq.shape[0] > BG_WORK else cv2.INTER_LINEAR
    sq = cv2.resize(sq, (BG_WORK, BG_WORK), interpolation=interp)
    inside = cv2.resize(inside.astype(np.uint8), (BG_WORK, BG_WORK), interpolation=cv2.INTER_NEAREST)
    out = cv2.addWeighted(sq, 4, cv2.GaussianBlur(sq, (0, 0), BG_WORK / 100), -4, 128)
    keep = np.zeros((BG_WORK, BG_WORK), np.uint8)
    cv2.circle(keep, (BG_WORK // 2, BG_WORK // 2), int(BG_WORK / 2 * rim), 1, -1)
    # the rim of the circle and any part of it the frame cut off are mid grey, as outside it
    keep &= cv2.erode(inside, np.ones((31, 31), np.uint8))
    out[keep == 0] = 128
    return cv2.resize(out, (size, size), interpolation=cv2.INTER_AREA)


@dataclass(frozen=True)
class QualityLimits:
    """Thresholds below which a photograph is not graded. Set well below every shared graded photograph."""

    min_fov_fraction: float = 0.35  # share of the frame the field of view covers (shared photographs: >= 0.66)
    min_brightness: float = 18.0  # mean green inside the field of view, 0-255 (shared photographs: >= 24)
    # high-pass (sigma 2 px at 512 px) std of the green channel as % of its mean: fine vessels and lesion edges.
    # Shared photographs: >= 1.55; a Gaussian blur of sigma 5 px at 1024 px brings them to 0.9-1.6.
    min_sharpness: float = 1.2
    max_offset: float = 0.12  # field-of-view centre from the frame centre, share of the diagonal (shared: <= 0.05)
    min_contrast: float = 4.0  # std of the green channel inside the field of view (a blank frame has none)


@dataclass
class Quality:
    """Measured imageability; ``gradable`` is False with the reasons when any limit is crossed."""

    gradable: bool
    reasons: list[str] = field(default_factory=list)
    measures: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"gradable": self.gradable, "reasons": list(self.reasons),
                "measures": {k: round(v, 3) for k, v in self.measures.items()}}


def assess_quality(img: np.ndarray, limits: QualityLimits | None = None) -> Quality:
    """Field-of-view coverage, brightness, sharpness and centring of one RGB uint8 photograph."""
    lim = limits or QualityLimits()
    h, w = img.shape[:2]
    scale = 512 / max(h, w)
    small = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    mask = fov_mask(small)
    fov = float(mask.mean())
    green = small[..., 1].astype(np.float32)
    inside = green[mask] if mask.any() else green.ravel()
    # High-pass energy inside the field of view, away from its rim (the rim is a strong edge in any photograph).
    core = cv2.erode(mask.astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool)
    high = green - cv2.GaussianBlur(green, (0, 0), 2.0)
    brightness = float(inside.mean())
    sharp = float(high[core].std()) / max(brightness, 1.0) * 100 if core.sum() > 100 else 0.0
    ys, xs = np.nonzero(mask)
    sh, sw = small.shape[:2]
    offset = float(np.hypot(xs.mean() - sw / 2, ys.mean() - sh / 2) / np.hypot(sw, sh)) if len(xs) else 1.0
    m = {"fov_fraction": fov, "brightness": brightness, "contrast": float(inside.std()),
         "sharpness": sharp, "offset": offset}
    reasons = []
    if fov < lim.min_fov_fraction or m["contrast"] < lim.min_contrast:
        reasons.append("no retinal field of view found")
    if m["brightness"] < lim.min_brightness:
        reasons.append(f"too dark (mean green {m['brightness']:.0f} < {lim.min_brightness:g})")
    if sharp < lim.min_sharpness:
        reasons.append(f"too blurred (sharpness {sharp:.2f} < {lim.min_sharpness:g})")
    if offset > lim.max_offset:
        reasons.append(f"field of view off-centre ({offset:.2f} of the diagonal > {lim.max_offset:g})")
    return Quality(not reasons, reasons, m)
