"""What people look at: annotated images, curves and JSON."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from lesiondet.fileio import atomic_path
from lesiondet.io.voc import VocRecord

#: RGB colour per class, chosen to stand out on an orange-red fundus.
COLOURS = {"MA": (0, 255, 255), "HE": (0, 90, 255), "EX": (255, 255, 0), "SE": (255, 255, 255),
           "OD": (0, 255, 0), "HE_MA": (255, 0, 255)}
FALLBACK = [(255, 128, 0), (128, 255, 0), (0, 128, 255), (255, 0, 128)]


def colour(label: str) -> tuple[int, int, int]:
    return COLOURS.get(label, FALLBACK[hash(label) % len(FALLBACK)])


def draw(img: np.ndarray, record: VocRecord, thickness: int | None = None) -> np.ndarray:
    """Boxes with class and score on a copy of an RGB image, plus a legend.

    Boxes the grading rules counted are drawn solid; boxes shown for the reader but below the
    rules' threshold (``counted=False``) are drawn dashed, so the two are told apart at a glance.
    The legend gives both numbers per class.
    """
    out = img.copy()
    h, w = out.shape[:2]
    t = thickness or max(1, round(max(h, w) / 800))
    pad = t + 1  # draw just outside the box so tiny lesions stay visible
    font = max(0.35, max(h, w) / 1600)
    for o in sorted(record.objects, key=lambda o: o.score or 0):
        x0, y0, x1, y1 = (int(round(v)) for v in o.box)
        c = colour(o.label)
        if o.counted is False:
            _dashed_rect(out, (x0 - pad, y0 - pad), (x1 + pad - 1, y1 + pad - 1), c, t)
        else:
            cv2.rectangle(out, (x0 - pad, y0 - pad), (x1 + pad - 1, y1 + pad - 1), c, t)
        text = o.label if o.score is None else f"{o.label} {o.score:.2f}"
        # Text only where it fits beside the box; colour and the legend say the rest on busy images.
        if o.label == "OD" or (o.width >= 60 * font and len(record.objects) <= 100):
            cv2.putText(out, text, (x0, max(10, y0 - pad - 2)), cv2.FONT_HERSHEY_SIMPLEX, font, c, t, cv2.LINE_AA)
    counts = Counter(o.label for o in record.objects)
    counted = Counter(o.label for o in record.objects if o.counted is not False)
    y = int(20 * font / 0.5)
    for label, n in sorted(counts.items()):
        text = f"{label}: {n}" if counted[label] == n else f"{label}: {n} shown, {counted[label]} counted"
        cv2.putText(out, text, (8, y), cv2.FONT_HERSHEY_SIMPLEX, font * 1.2, colour(label), t + 1, cv2.LINE_AA)
        y += int(24 * font / 0.5)
    return out


def _dashed_rect(img: np.ndarray, p0: tuple[int, int], p1: tuple[int, int], c, t: int) -> None:
    """A rectangle outline of dashes (a box shown for the reader that the rules did not count)."""
    (x0, y0), (x1, y1) = p0, p1
    dash = max(2, 2 * t)
    for a in range(x0, x1 + 1, 2 * dash):
        cv2.line(img, (a, y0), (min(a + dash - 1, x1), y0), c, t)
        cv2.line(img, (a, y1), (min(a + dash - 1, x1), y1), c, t)
    for a in range(y0, y1 + 1, 2 * dash):
        cv2.line(img, (x0, a), (x0, min(a + dash - 1, y1)), c, t)
        cv2.line(img, (x1, a), (x1, min(a + dash - 1, y1)), c, t)


def write_png(path: str | Path, rgb: np.ndarray) -> Path:
    """An RGB (or single-channel) uint8 array as PNG, written atomically."""
    ok, buf = cv2.imencode(".png", rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())
    return Path(path)


def detections_json(record: VocRecord) -> dict:
    """The per-image JSON document ``lesiondet detect`` writes (boxes 0-based x0,y0,x1,y1)."""
    return {
        "image": str(record.image_path),
        "width": record.width,
        "height": record.height,
        # what the grading rules read; "shown" adds the boxes drawn for the reader below the rules' thresholds
        "counts": dict(sorted(Counter(o.label for o in record.objects if o.counted is not False).items())),
        "shown": dict(sorted(Counter(o.label for o in record.objects if o.shown is not False).items())),
        "detections": [{"label": o.label, "score": None if o.score is None else round(o.score, 4),
                        "box": [round(v, 1) for v in o.box],
                        **{k: getattr(o, k) for k in ("counted", "shown") if getattr(o, k) is not None}}
                       for o in record.objects],
    }
