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
    for text, org, c in captions(record, font, t, pad):
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, font, c, t, cv2.LINE_AA)
    counts = Counter(o.label for o in record.objects)
    counted = Counter(o.label for o in record.objects if o.counted is not False)
    y = int(20 * font / 0.5)
    for label, n in sorted(counts.items()):
        text = f"{label}: {n}" if counted[label] == n else f"{label}: {n} shown, {counted[label]} counted"
        cv2.putText(out, text, (8, y), cv2.FONT_HERSHEY_SIMPLEX, font * 1.2, colour(label), t + 1, cv2.LINE_AA)
        y += int(24 * font / 0.5)
    return out


def captions(record: VocRecord, font: float, t: int, pad: int) -> list[tuple[str, tuple[int, int], tuple]]:
    """The class-and-score captions drawn, with where: none overlaps another.

    Best score first, each above its box. A caption is left out where it would cross one already
    placed (a dense cluster of exudates would otherwise pile its scores into unreadable text), and for
    boxes drawn dashed (shown, not counted): the legend's "N shown, M counted" says what they are.
    Small lesions get none either: colour and the legend say it on a busy photograph.
    """
    placed: list[tuple[int, int, int, int]] = []
    out = []
    for o in sorted(record.objects, key=lambda o: -(o.score if o.score is not None else 2.0)):
        if o.label != "OD" and (o.counted is False or o.width < 60 * font):
            continue
        text = o.label if o.score is None else f"{o.label} {o.score:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font, t)
        x, y = int(round(o.box[0])), max(th + 2, int(round(o.box[1])) - pad - 2)
        rect = (x, y - th - 1, x + tw, y + base)
        if any(rect[0] < r[2] and r[0] < rect[2] and rect[1] < r[3] and r[1] < rect[3] for r in placed):
            continue
        placed.append(rect)
        out.append((text, (x, y), colour(o.label)))
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
