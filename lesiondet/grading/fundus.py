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
from lesiondet.images import fov_circle


def square_fov(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The field of view's disc centred in a black square whose side is its diameter (``images.fov_circle``),
    and a mask of the square's pixels that came from the photograph (a frame often clips the disc).

    A photograph cropped on every side is placed where its disc would be, so the retina fills the
    square at one scale whatever the crop."""
    cx, cy, d = fov_circle(img)
    side = max(1, int(round(d)))
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    h, w = img.shape[:2]
    sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(w, x0 + side), min(h, y0 + side)
    out = np.zeros((side, side, 3), np.uint8)
    inside = np.zeros((side, side), bool)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = img[sy0:sy1, sx0:sx1]
        inside[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = True
    return out, inside


#: Ben Graham works at a fixed scale: the field of view is brought to this side before the blur
#: (sigma = side / 100), then the result is shrunk to the network's size. At 1024 px this gives the
#: contrast of the shared APTOS copy, which its source preprocessed (centre std 12 vs 14 grey levels).
BG_WORK = 1024
#: A photograph with a field of view narrower than ``BG_WORK`` is enlarged, and its own pixels with it:
#: JPEG's 8-pixel blocks and aliasing, which the four-fold contrast of the recipe would turn into a
#: grid the network reads as lesions (a 400-px JPEG scored grade 4 on healthy eyes). They are smoothed
#: away first, before any contrast, by a Gaussian of ``SOURCE_BLUR`` × (enlargement - 1) working pixels: about
#: one source pixel at a 400-px field of view, next to nothing at the ~800 px the readout was fitted at,
#: whose photographs have no blocks to hide and lose detail to any blur.
SOURCE_BLUR = 1.5
#: The retinal scale of the grade: a field of view wider than this many pixels is first shrunk to it, so every
#: camera's photograph carries the same detail (the readout was fitted at about this size; the finer detail of
#: a 12-megapixel photograph is not something it learnt to read, and made such photographs look unfamiliar).
GRADE_FOV = 800
#: names the preprocessing above; cached features of another recipe are read again (``readout.cached_features``)
RECIPE = f"retina-{GRADE_FOV}/blur-{SOURCE_BLUR:g}x(enlarge-1)/bg-{BG_WORK}"


def ben_graham(img: np.ndarray, size: int, rim: float = 0.95) -> np.ndarray:
    """RGB uint8 photograph → ``size``×``size`` RGB uint8, local-average subtracted and circle-cropped."""
    sq, inside = square_fov(img)
    if sq.shape[0] > GRADE_FOV:
        sq = cv2.resize(sq, (GRADE_FOV, GRADE_FOV), interpolation=cv2.INTER_AREA)
    enlarge = BG_WORK / sq.shape[0]
    interp = cv2.INTER_AREA if enlarge < 1 else cv2.INTER_LINEAR
    sq = cv2.resize(sq, (BG_WORK, BG_WORK), interpolation=interp)
    if enlarge > 1 and SOURCE_BLUR > 0:
        sq = cv2.GaussianBlur(sq, (0, 0), SOURCE_BLUR * (enlarge - 1))
    inside = cv2.resize(inside.astype(np.uint8), (BG_WORK, BG_WORK), interpolation=cv2.INTER_NEAREST)
    out = cv2.addWeighted(sq, 4, cv2.GaussianBlur(sq, (0, 0), BG_WORK / 100), -4, 128)
    keep = np.zeros((BG_WORK, BG_WORK), np.uint8)
    cv2.circle(keep, (BG_WORK // 2, BG_WORK // 2), int(BG_WORK / 2 * rim), 1, -1)
    # the rim of the circle and any part of it the frame cut off are mid grey, as outside it
    keep &= cv2.erode(inside, np.ones((31, 31), np.uint8))
    out[keep == 0] = 128
    return cv2.resize(out, (size, size), interpolation=cv2.INTER_AREA)


#: Imageability is measured at one retinal scale: the photograph resized so its field of view is this many
#: pixels across, whatever the camera wrote. A sharp 400-px thumbnail and a sharp 12-megapixel photograph
#: then measure alike (measured at a fixed frame size, the thumbnail read as "too blurred").
QUALITY_FOV = 320


@dataclass(frozen=True)
class QualityLimits:
    """Thresholds below which a photograph is not graded. Set below every shared photograph, at its own size and
    at a 300-px field of view through JPEG (``benchmarks/quality_limits.py`` measures them)."""

    min_fov_fraction: float = 0.35  # share of the frame the field of view covers (shared photographs: >= 0.66)
    min_brightness: float = 18.0  # mean green inside the field of view, 0-255 (shared photographs: >= 24)
    # high-pass (sigma 1.5 px at a 320-px field of view) std of the green channel as % of its mean: vessels and
    # lesion edges. Shared photographs at any size and JPEG: >= 0.79; defocused by 1% of the field of view
    # (sigma 8 px on a 1024-px photograph): median 0.62-0.80 (benchmarks/results/quality_limits.json).
    min_sharpness: float = 0.75
    max_offset: float = 0.12  # field-of-view centre from the frame centre, share of the diagonal (shared: <= 0.05)
    min_contrast: float = 4.0  # std of the green channel inside the field of view (a blank frame has none)
    # colour inside the field of view: mean (max - min channel) over mean brightness. A colour fundus photograph
    # is red to orange (every third shared photograph: >= 0.38, the greenest HEI-MED ones); an OCT scan, a red-free
    # photograph or a grey copy has none, and the grading network, which reads colour, was not made for them.
    min_colour: float = 0.1


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
    """Field-of-view coverage, brightness, sharpness and centring of one RGB uint8 photograph, at the
    retinal scale (``QUALITY_FOV``); ``measures["fov_px"]`` is the field of view's own diameter."""
    lim = limits or QualityLimits()
    h, w = img.shape[:2]
    _, _, d = fov_circle(img)
    scale = QUALITY_FOV / max(d, 1.0)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    small = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=interp)
    mask = fov_mask(small)
    fov = float(mask.mean())
    green = small[..., 1].astype(np.float32)
    inside = green[mask] if mask.any() else green.ravel()
    # High-pass energy inside the field of view, away from its rim (the rim is a strong edge in any photograph).
    core = cv2.erode(mask.astype(np.uint8), np.ones((11, 11), np.uint8)).astype(bool)
    high = green - cv2.GaussianBlur(green, (0, 0), 1.5)
    brightness = float(inside.mean())
    sharp = float(high[core].std()) / max(brightness, 1.0) * 100 if core.sum() > 100 else 0.0
    px = (small[mask] if mask.any() else small.reshape(-1, 3)).astype(np.float32)
    colour = float((px.max(1) - px.min(1)).mean() / max(float(px.mean()), 1.0))
    ys, xs = np.nonzero(mask)
    sh, sw = small.shape[:2]
    offset = float(np.hypot(xs.mean() - sw / 2, ys.mean() - sh / 2) / np.hypot(sw, sh)) if len(xs) else 1.0
    m = {"fov_fraction": fov, "brightness": brightness, "contrast": float(inside.std()),
         "sharpness": sharp, "offset": offset, "colour": colour, "fov_px": float(d)}
    reasons = []
    if fov < lim.min_fov_fraction or m["contrast"] < lim.min_contrast:
        reasons.append("no retinal field of view found")
    elif colour < lim.min_colour:
        reasons.append(f"not a colour fundus photograph (colour {colour:.2f} < {lim.min_colour:g}: an OCT scan, a "
                       "red-free photograph or a grey copy)")
    if m["brightness"] < lim.min_brightness:
        reasons.append(f"too dark (mean green {m['brightness']:.0f} < {lim.min_brightness:g})")
    if sharp < lim.min_sharpness:
        reasons.append(f"too blurred (sharpness {sharp:.2f} < {lim.min_sharpness:g})")
    if offset > lim.max_offset:
        reasons.append(f"field of view off-centre ({offset:.2f} of the diagonal > {lim.max_offset:g})")
    return Quality(not reasons, reasons, m)
