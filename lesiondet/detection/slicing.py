"""Slicing large fundus photographs into tiles, after SAHI's slicing functions.

Lesions are a few pixels wide in photographs thousands of pixels across, so the
detector works on tiles cut from the native-resolution image:

* training crops tiles centred on lesions (class-balanced), random tiles inside
  the field of view for background, and a share of whole, downscaled images so
  the large objects (optic disc, big haemorrhages) are learnt at full extent;
* inference slices the image into overlapping tiles, adds one downscaled
  whole-image pass, and merges the passes per class (NMS or weighted box fusion).

A *window* is ``(x0, y0, x1, y1)`` in integer source pixels. ``zoom`` z means a
window of ``tile / z`` source pixels is fed to the model as ``tile`` pixels, so
z > 1 enlarges lesions that would otherwise be smaller than the smallest anchor.
"""
from __future__ import annotations

import math
import random
from dataclasses import replace
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from lesiondet.config import check_section, defaults
from lesiondet.errors import LesiondetError
from lesiondet.io.voc import VocObject, VocRecord

DEFAULT_TILING: dict[str, Any] = defaults("tiling")


def resolve_tiling(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """``DEFAULT_TILING`` updated with ``cfg``; unknown keys and bad values are errors."""
    out = check_section("tiling", cfg)  # unknown keys and values of the wrong kind
    if not (isinstance(out["tile"], int) and out["tile"] >= 64):
        raise LesiondetError(None, f"tiling.tile={out['tile']!r}", "use a whole number of pixels >= 64")
    if not 0 <= float(out["overlap"]) < 0.9:
        raise LesiondetError(None, f"tiling.overlap={out['overlap']!r}", "use a share between 0 and 0.9")
    if out["zoom"] != "auto" and not (isinstance(out["zoom"], (int, float)) and 0 < out["zoom"] <= 16):
        raise LesiondetError(None, f"tiling.zoom={out['zoom']!r}", "use auto or a number between 0 and 16")
    rp = out["retina_px"]
    if rp is not None and not (isinstance(rp, (int, float)) and not isinstance(rp, bool)
                               and (rp == 0 or 64 <= rp <= 16384)):
        raise LesiondetError(None, f"tiling.retina_px={rp!r}",
                             "use null or 0 (native pixels) or a field-of-view diameter from 64 to 16384 px")
    tpi = out["tiles_per_image"]
    if tpi != "auto" and not (isinstance(tpi, int) and tpi >= 1):
        raise LesiondetError(None, f"tiling.tiles_per_image={tpi!r}", "use auto or a whole number >= 1")
    if not 0 <= float(out["nested_ios"]) <= 1:
        raise LesiondetError(None, f"tiling.nested_ios={out['nested_ios']!r}", "use a share between 0 and 1 (0: off)")
    if not (isinstance(out["merge_pad"], (int, float)) and 0 <= out["merge_pad"] <= 64):
        raise LesiondetError(None, f"tiling.merge_pad={out['merge_pad']!r}",
                             "use a number of pixels from 0 to 64 (0: off)")
    if out["merge"] not in ("nms", "wbf"):
        raise LesiondetError(None, f"tiling.merge={out['merge']!r}", "use nms or wbf")
    if out["slice"] not in ("auto", True, False):
        raise LesiondetError(None, f"tiling.slice={out['slice']!r}", "use auto, true or false")
    if not isinstance(out["tta"], bool):
        raise LesiondetError(None, f"tiling.tta={out['tta']!r}", "use true or false")
    return out


def auto_zoom(records: Iterable[VocRecord], target_px: float = 8.0, max_zoom: float = 4.0) -> float:
    """Zoom that brings the 10th-percentile lesion (shorter box side) to ``target_px``.

    Never below 1: downscaling would trade away the lesions this tool exists to find.
    The optic disc is left out; it is never the smallest thing in the image.
    """
    sides = [min(o.width, o.height) for r in records for o in r.objects if o.label != "OD"]
    if not sides:
        return 1.0
    p10 = float(np.percentile(sides, 10))
    return float(min(max_zoom, max(1.0, target_px / max(p10, 1e-3))))


def window_size(tiling: Mapping[str, Any]) -> int:
    """Source pixels covered by one tile side."""
    return max(16, int(round(tiling["tile"] / float(tiling["zoom"]))))


def samples_per_image(width: int, height: int, tiling: Mapping[str, Any]) -> int:
    """Training samples an image gives per epoch: fixed, or (auto) half the tiles that cover it."""
    if tiling["tiles_per_image"] != "auto":
        return int(tiling["tiles_per_image"])
    if not should_slice(width, height, tiling):
        return 1
    return max(1, round(0.5 * width * height / window_size(tiling) ** 2))


def should_slice(width: int, height: int, tiling: Mapping[str, Any]) -> bool:
    if tiling["slice"] == "auto":
        return max(width, height) > 1.25 * window_size(tiling)
    return bool(tiling["slice"])


def _starts(length: int, win: int, overlap: float) -> list[int]:
    """Evenly spread window starts covering ``[0, length)`` with at least ``overlap`` share."""
    if length <= win:
        return [0]
    step = win * (1.0 - overlap)
    n = math.ceil((length - win) / step) + 1
    return [round(i * (length - win) / (n - 1)) for i in range(n)]


def slice_windows(width: int, height: int, win: int, overlap: float) -> list[tuple[int, int, int, int]]:
    """Overlapping ``win``-pixel windows covering the image; every window lies inside it.

    Windows are spread evenly rather than stepped from the origin, so the last
    one is not a thin strip (SAHI shifts it back to the border; same idea).
    """
    xs, ys = _starts(width, win, overlap), _starts(height, win, overlap)
    return [(x, y, min(x + win, width), min(y + win, height)) for y in ys for x in xs]


def big_enough(boxes: np.ndarray, min_px: float) -> np.ndarray:
    """Boxes whose longer side reaches ``min_px``: what the shrunk whole-image view can still show."""
    return np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) >= min_px


def low_res_fov(img: np.ndarray, max_side: int = 256) -> tuple[np.ndarray, float]:
    """Field-of-view mask at ``max_side`` pixels and the factor from source to mask pixels."""
    from lesiondet.images import fov_mask, shrink

    small, s = shrink(img, max_side)
    return fov_mask(small), s


def fov_share(mask: np.ndarray, scale: float, window: Sequence[int]) -> float:
    x0, y0, x1, y1 = (int(v * scale) for v in window)
    sub = mask[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)]
    return float(sub.mean()) if sub.size else 0.0


def objects_in(objects: Sequence[VocObject], window: Sequence[int], min_visibility: float) -> list[VocObject]:
    """``objects`` in window coordinates, clipped; a cut box is kept if ``min_visibility`` of it is inside.

    ``min_visibility=1`` keeps only the objects lying wholly inside the window.
    """
    x0, y0, x1, y1 = window
    out = []
    for o in objects:
        bx0, by0, bx1, by1 = o.box
        cx0, cy0, cx1, cy1 = max(bx0, x0), max(by0, y0), min(bx1, x1), min(by1, y1)
        if cx1 <= cx0 or cy1 <= cy0:
            continue
        if (cx1 - cx0) * (cy1 - cy0) < min_visibility * max(o.area, 1e-6):
            continue
        out.append(replace(o, box=(cx0 - x0, cy0 - y0, cx1 - x0, cy1 - y0)))
    return out


def crop_objects(objects: Sequence[VocObject], window: Sequence[int], min_visibility: float
                 ) -> tuple[np.ndarray, list[str]]:
    """``objects_in`` as the arrays a training target needs: boxes and labels."""
    kept = objects_in(objects, window, min_visibility)
    return np.array([o.box for o in kept], np.float32).reshape(-1, 4), [o.label for o in kept]


def sample_window(objects: Sequence[VocObject], width: int, height: int, win: int, mode: str,
                  rng: random.Random, fov: tuple[np.ndarray, float] | None = None, fov_min: float = 0.05,
                  ) -> tuple[int, int, int, int]:
    """One training window: ``mode`` is ``"positive"`` (contains a lesion) or ``"random"``.

    Positive windows pick a class uniformly among the image's classes, then one
    of its boxes, then a random offset that keeps the box inside when it fits:
    rare classes (microaneurysms beside hundreds of exudates) still get tiles.
    """
    ww, wh = min(win, width), min(win, height)

    def start(b0: float, b1: float, extent: int, size: int) -> int:
        """Window start keeping ``[b0, b1]`` inside when it fits, else centred on it; within the image."""
        lo, hi = (b1 - size, b0) if b1 - b0 <= size else ((b0 + b1 - size) / 2,) * 2
        lo, hi = max(0.0, lo), min(float(extent - size), hi)
        return int(rng.uniform(lo, hi)) if hi > lo else int(min(max(0.0, (lo + hi) / 2), extent - size))

    if mode == "positive" and objects:
        c = rng.choice(sorted({o.label for o in objects}))
        bx0, by0, bx1, by1 = rng.choice([o for o in objects if o.label == c]).box
        x, y = start(bx0, bx1, width, ww), start(by0, by1, height, wh)
        return x, y, x + ww, y + wh
    best = None
    for _ in range(10):
        x, y = rng.randint(0, width - ww), rng.randint(0, height - wh)
        w = (x, y, x + ww, y + wh)
        share = 1.0 if fov is None else fov_share(fov[0], fov[1], w)
        if share >= fov_min:
            return w
        if best is None or share > best[0]:
            best = (share, w)
    return best[1]


def val_windows(objects: Sequence[VocObject], windows: Sequence[tuple[int, int, int, int]], k: int,
                rng: random.Random, pos_share: float = 0.75) -> list[tuple[int, int, int, int]]:
    """``k`` of the inference ``windows`` for per-epoch validation: mostly ones holding a lesion.

    A fixed, seeded choice, so every epoch is scored on the same tiles. Lesions
    are where the metric is decided; the rest are background tiles that catch
    false positives.
    """
    pos = [w for w in windows if objects_in(objects, w, 1.0)]
    neg = [w for w in windows if not objects_in(objects, w, 1.0)]
    n_pos = min(len(pos), max(k - len(neg), round(k * pos_share)))
    chosen = rng.sample(pos, n_pos) + rng.sample(neg, min(len(neg), k - n_pos))
    return sorted(chosen, key=lambda w: (w[1], w[0]))
