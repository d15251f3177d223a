"""What people look at: annotated images, curves and JSON."""
from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lesiondet.fileio import atomic_path
from lesiondet.reporting.draw import colour


def write_metrics_csv(path: str | Path, rows: Sequence[dict]) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
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
    """Losses (training and validation) and validation scores per epoch, side by side, for any model."""
    plt = pyplot()
    ep = [r["epoch"] for r in rows]
    keys = [k for k in (rows[0] if rows else {}) if isinstance(rows[0][k], (int, float)) and k not in ("epoch", "time_s", "lr")]
    losses = [k for k in keys if "loss" in k]
    scores = [k for k in keys if k not in losses]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for k in losses:
        main = k in ("loss", "val_loss")
        a.plot(ep, [r[k] for r in rows], marker="o" if main else None, label=k, lw=2 if main else 1)
    a.set_xlabel("epoch"), a.set_ylabel("loss"), a.legend(fontsize=7), a.grid(alpha=0.3)
    for k in scores:
        main = k in ("val_mAP", "val_mAP50", "val_acc")
        b.plot(ep, [r[k] for r in rows], marker="o" if main else None, label=k.removeprefix("val_"), lw=2 if main else 1)
    b.set_xlabel("epoch"), b.set_ylabel("validation score"), b.set_ylim(0, 1), b.legend(fontsize=7), b.grid(alpha=0.3)
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


def plot_embedding(path: str | Path, features: np.ndarray, labels: Sequence[int], title: str,
                   legend: str = "grade", seed: int = 0) -> Path:
    """A 2-D t-SNE of feature vectors (scikit-learn), one colour per label; written atomically."""
    from sklearn.manifold import TSNE

    x = np.asarray(features, np.float64)
    fig, ax = pyplot().subplots(figsize=(5.5, 5))
    if len(x) >= 5:
        xy = TSNE(n_components=2, perplexity=float(min(30, max(2, (len(x) - 1) // 3))), init="pca",
                  random_state=seed).fit_transform(x)
        labels = np.asarray(labels)
        cmap = pyplot().get_cmap("viridis", max(int(labels.max()) + 1, 2))
        for g in np.unique(labels):
            m = labels == g
            ax.scatter(xy[m, 0], xy[m, 1], s=14, color=cmap(int(g)), label=f"{legend} {g} (n={m.sum()})")
        ax.legend(fontsize=7, loc="best")
    else:
        ax.text(0.5, 0.5, "too few images for t-SNE", ha="center", va="center")
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def plot_best_pr(out_dir: Path, metrics: Mapping[str, Any], epoch: int) -> None:
    """``pr_curves.png`` in a training run folder, for the best epoch so far (a ``Trainer`` ``on_best`` hook)."""
    plot_pr_curves(Path(out_dir) / "pr_curves.png", dict(metrics),
                   f"validation PR at IoU 0.5, epoch {epoch + 1} (best.pt): mAP50 {metrics['mAP50']:.3f}")
