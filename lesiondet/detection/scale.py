"""Retinal scale: a photograph is read at a size set by its field of view, not by its camera's pixels.

A 45-degree photograph shows about 12 mm of retina across its field of view, so a microaneurysm is
0.2-1% of the field-of-view diameter whatever the camera wrote (shared/DESIGN.md). With
``tiling.retina_px`` set, every photograph is resized once so that diameter is ``retina_px`` pixels
(the *working* image; ``factor_for`` says how far a small photograph is enlarged); slicing, the
network and the merge all run there, and the boxes are mapped back to the photograph's pixels at
the end. Without it (checkpoints written before it existed), the photograph is sliced at its
native pixels times ``zoom``, as before.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

import cv2
import numpy as np

from lesiondet.images import fov_diameter, read_thumbnail
from lesiondet.io.voc import VocRecord


def factor_for(diameter: float, tiling: Mapping[str, Any]) -> float:
    """Working pixels per photograph pixel for a field of view ``diameter`` px across.

    The retina is brought to ``retina_px``, enlarging it by at most ``zoom``: a photograph whose
    field of view is ``retina_px / zoom`` or wider is read at exactly ``retina_px`` (the same eye
    at any resolution gives the same working image); a smaller one is read at ``zoom``, as it was
    trained, rather than blown up into pixels it never had.
    """
    zoom = tiling.get("zoom")
    most = float(zoom) if isinstance(zoom, (int, float)) and not isinstance(zoom, bool) else float(tiling["max_zoom"])
    return min(float(tiling["retina_px"]) / max(diameter, 1.0), most)


def retina_factor(img: np.ndarray, tiling: Mapping[str, Any]) -> float | None:
    """``factor_for`` the field of view of ``img``, or None when ``tiling`` works at native scale."""
    return factor_for(fov_diameter(img), tiling) if tiling.get("retina_px") else None


def reads_below(diameter: float, tiling: Mapping[str, Any]) -> bool:
    """Whether a field of view ``diameter`` px across is read smaller than ``retina_px`` (enlarged by the
    most ``zoom`` allows, it falls short): a 1024-px screening photograph, not a 12-megapixel one."""
    return bool(tiling.get("retina_px")) and diameter * factor_for(diameter, tiling) < 0.95 * float(tiling["retina_px"])


def below_working_scale(img: np.ndarray, tiling: Mapping[str, Any]) -> bool:
    """``reads_below`` for ``img``'s field of view."""
    return bool(tiling.get("retina_px")) and reads_below(fov_diameter(img), tiling)


def retina_factor_of(path: str | Path, tiling: Mapping[str, Any]) -> float | None:
    """``retina_factor`` of an image file, measured on a cheap thumbnail (training sizes its epoch with it)."""
    if not tiling.get("retina_px"):
        return None
    small, s = read_thumbnail(path)
    return factor_for(fov_diameter(small) / s, tiling)


def working_tiling(tiling: Mapping[str, Any]) -> dict[str, Any]:
    """The tiling that slices a working image: zoom 1 and no further resizing, as the retina scale set its size."""
    return {**tiling, "zoom": 1.0, "retina_px": None} if tiling.get("retina_px") else dict(tiling)


def to_working(img: np.ndarray, factor: float) -> tuple[np.ndarray, float, float]:
    """``img`` resized by ``factor`` (area-averaged when shrinking); returns it and the exact x, y ratios.

    The ratios are the resized size over the original, so ``box / ratio`` maps a working box back
    exactly, whatever rounding the size took.
    """
    h, w = img.shape[:2]
    nw, nh = max(1, round(w * factor)), max(1, round(h * factor))
    if (nw, nh) == (w, h):
        return img, 1.0, 1.0
    interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    return cv2.resize(img, (nw, nh), interpolation=interp), nw / w, nh / h


def scale_boxes(boxes: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """``(N, 4)`` boxes multiplied by ``(sx, sy)``: photograph → working pixels, or back with ``1 / s``."""
    return np.asarray(boxes, np.float32).reshape(-1, 4) * np.array([sx, sy, sx, sy], np.float32)


def scale_record(record: VocRecord, width: int, height: int, sx: float, sy: float) -> VocRecord:
    """``record`` as it is on the working image of ``width`` x ``height`` (its boxes times ``sx, sy``)."""
    objs = tuple(replace(o, box=(o.box[0] * sx, o.box[1] * sy, o.box[2] * sx, o.box[3] * sy))
                 for o in record.objects)
    return replace(record, width=width, height=height, objects=objs)
