"""Fundus geometry: field-of-view mask, optic disc, fovea and quadrants."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from lesiondet.images import fov_mask  # noqa: F401 - the field of view is an image fact; kept importable here
from lesiondet.io.voc import VocObject


@dataclass(frozen=True)
class Landmarks:
    """Fovea position, disc diameter (px, or None) and where the fovea estimate came from."""

    fovea: tuple[float, float]
    disc_diameter: float | None
    source: str  # "optic_disc" or "image_centre"
    disc_side: str | None  # "left" / "right" of the fovea in the image, None when unknown


def locate_fovea(objects: Sequence[VocObject], width: int, height: int, fovea_dd: float = 2.5) -> Landmarks:
    """Fovea 2.5 disc diameters from the disc centre, horizontally towards the image centre.

    Uses the highest-scoring (or, for ground truth, the largest) OD box; falls back
    to the image centre when there is none.
    """
    discs = [o for o in objects if o.label == "OD"]
    if not discs:
        return Landmarks((width / 2, height / 2), None, "image_centre", None)
    od = max(discs, key=lambda o: (o.score if o.score is not None else 1.0, o.area))
    cx, cy = (od.box[0] + od.box[2]) / 2, (od.box[1] + od.box[3]) / 2
    dd = (od.width + od.height) / 2
    direction = 1.0 if cx < width / 2 else -1.0
    fx = float(np.clip(cx + direction * fovea_dd * dd, 0, width))
    return Landmarks((fx, cy), dd, "optic_disc", "left" if direction > 0 else "right")


ANATOMICAL = ("superior_temporal", "superior_nasal", "inferior_temporal", "inferior_nasal")
IMAGE_QUADRANTS = ("upper_left", "upper_right", "lower_left", "lower_right")


def quadrant_names(marks: Landmarks) -> tuple[str, ...]:
    """Anatomical names when the disc says which side is nasal; image names otherwise."""
    return ANATOMICAL if marks.disc_side else IMAGE_QUADRANTS


def quadrant_of(obj: VocObject, marks: Landmarks) -> str:
    """Quadrant holding the box centre, split by horizontal and vertical lines through the fovea.

    Superior is up (fundus photographs are shown upright); nasal is the disc's side.
    """
    x = (obj.box[0] + obj.box[2]) / 2
    y = (obj.box[1] + obj.box[3]) / 2
    upper = y < marks.fovea[1]
    left = x < marks.fovea[0]
    if marks.disc_side is None:
        return f"{'upper' if upper else 'lower'}_{'left' if left else 'right'}"
    nasal = left == (marks.disc_side == "left")
    return f"{'superior' if upper else 'inferior'}_{'nasal' if nasal else 'temporal'}"
