"""What people look at: annotated images, curves and JSON."""
from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from .fileio import atomic_path
from .voc import VocRecord

#: RGB colour per class, chosen to stand out on an orange-red fundus.
COLOURS = {"MA": (0, 255, 255), "HE": (0, 90, 255), "EX": (255, 255, 0), "SE": (255, 255, 255),
           "OD": (0, 255, 0), "HE_MA": (255, 0, 255)}
FALLBACK = [(255, 128, 0), (128, 255, 0), (0, 128, 255), (255, 0, 128)]


def colour(label: str) -> tuple[int, int, int]:
    return COLOURS.get(label, FALLBACK[hash(label) % len(FALLBACK)])


def draw(img: np.ndarray, record: VocRecord, thickness: int | None = None) -> np.ndarray:
    """Boxes with class and score on a copy of an RGB image, plus a legend."""
    out = img.copy()
    h, w = out.shape[:2]
    t = thickness or max(1, round(max(h, w) / 800))
    pad = t + 1  # draw just outside the box so tiny lesions stay visible
    font = max(0.35, max(h, w) / 1600)
    for o in sorted(record.objects, key=lambda o: o.score or 0):
        x0, y0, x1, y1 = (int(round(v)) for v in o.box)
        c = colour(o.label)
        cv2.rectangle(out, (x0 - pad, y0 - pad), (x1 + pad - 1, y1 + pad - 1), c, t)
        text = o.label if o.score is None else f"{o.label} {o.score:.2f}"
        # Text only where it fits beside the box; colour and the legend say the rest on busy images.
        if o.label == "OD" or (o.width >= 60 * font and len(record.objects) <= 100):
            cv2.putText(out, text, (x0, max(10, y0 - pad - 2)), cv2.FONT_HERSHEY_SIMPLEX, font, c, t, cv2.LINE_AA)
    counts = Counter(o.label for o in record.objects)
    y = int(20 * font / 0.5)
    for label, n in sorted(counts.items()):
        cv2.putText(out, f"{label}: {n}", (8, y), cv2.FONT_HERSHEY_SIMPLEX, font * 1.2, colour(label), t + 1,
                    cv2.LINE_AA)
        y += int(24 * font / 0.5)
    return out


def write_png(path: str | Path, rgb: np.ndarray) -> Path:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
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
        "counts": dict(sorted(Counter(o.label for o in record.objects).items())),
        "detections": [{"label": o.label, "score": None if o.score is None else round(o.score, 4),
                        "box": [round(v, 1) for v in o.box]} for o in record.objects],
    }


def write_metrics_csv(path: str | Path, rows: Sequence[dict]) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            wr = csv.DictWriter(f, keys)
            wr.writeheader()
            wr.writerows(rows)


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path) -> Path:
    """Write ``fig`` as PNG atomically and free it."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    pyplot().close(fig)
    return Path(path)


def plot_curves(path: str | Path, rows: Sequence[dict]) -> Path:
    """Training loss and validation mAP per epoch, side by side."""
    plt = pyplot()
    ep = [r["epoch"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for k in ("loss", "loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"):
        if rows and k in rows[0]:
            a.plot(ep, [r[k] for r in rows], marker="o" if k == "loss" else None, label=k, lw=2 if k == "loss" else 1)
    a.set_xlabel("epoch"), a.set_ylabel("training loss"), a.legend(fontsize=7), a.grid(alpha=0.3)
    for k in [k for k in (rows[0] if rows else {}) if k.startswith("val_")]:
        b.plot(ep, [r[k] for r in rows], marker="o" if k in ("val_mAP", "val_mAP50") else None, label=k[4:],
               lw=2 if k in ("val_mAP", "val_mAP50") else 1)
    b.set_xlabel("epoch"), b.set_ylabel("validation AP"), b.set_ylim(0, 1), b.legend(fontsize=7), b.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_pr_curves(path: str | Path, result: dict, title: str = "") -> Path:
    """Precision-recall at IoU 0.5 per class (``coco_map``'s ``pr50``), AP50 in the legend."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 5))
    recall = np.linspace(0, 1, 101)
    for c, prec in (result.get("pr50") or {}).items():
        p = np.array(prec, dtype=float)
        reached = p > 0  # COCO fills recall levels never reached with 0 (-1 when a class has no ground truth)
        ap = result["per_class"][c]["AP50"]
        ax.plot(recall[reached], p[reached], color=np.array(colour(c)) / 255 * 0.85, lw=2,
                label=f"{c}  AP50 {ap:.3f}  (n={result['per_class'][c]['n_gt']})")
    ax.set_xlabel("recall"), ax.set_ylabel("precision"), ax.set_xlim(0, 1), ax.set_ylim(0, 1.02)
    ax.set_title(title or f"PR curves at IoU 0.5 (mAP50 {result.get('mAP50', float('nan')):.3f})", fontsize=9)
    ax.legend(fontsize=8, loc="lower left"), ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_froc(path: str | Path, result: dict) -> Path:
    """FROC per class: sensitivity against false positives per image (log scale), as ROC reports it."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 5))
    for c, row in (result.get("froc") or {}).items():
        rates = [k for k in row if k != "mean"]
        sens = [row[k] for k in rates]
        if all(v != v for v in sens):  # nan: no ground truth of this class
            continue
        ax.plot([float(r) for r in rates], sens, marker="o", color=np.array(colour(c)) / 255 * 0.85, lw=2,
                label=f"{c}  mean {row['mean']:.3f}")
    ax.set_xscale("log", base=2), ax.set_xlabel("false positives per image"), ax.set_ylabel("sensitivity")
    ax.set_ylim(0, 1.02), ax.set_title("FROC (hit: centre inside the lesion box or IoU >= 0.2)", fontsize=9)
    ax.legend(fontsize=8, loc="upper left"), ax.grid(alpha=0.3, which="both")
    return save_figure(fig, path)


def plot_confusion_matrix(path: str | Path, cm: np.ndarray, names: Sequence[str], title: str,
                          xlabel: str = "predicted", ylabel: str = "reference") -> Path:
    """A confusion matrix as PNG, counts written in the cells; written atomically."""
    k = len(names)
    fig, ax = pyplot().subplots(figsize=(1.2 + 0.9 * k, 1.0 + 0.85 * k))
    ax.imshow(cm, cmap="Blues")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center",
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xticks(range(k), names), ax.set_yticks(range(k), names)
    ax.set_xlabel(xlabel), ax.set_ylabel(ylabel), ax.set_title(title, fontsize=9)
    return save_figure(fig, path)
