"""Calibrated class probabilities and the "uncertain" answer for the OCT classifier.

The linear heads' averaged probabilities are over- or under-confident by a
single factor more than anything else, so one temperature, fitted on
out-of-fold predictions, corrects them (Guo et al. 2017). A scan whose top
calibrated probability is below a stored cut is answered "uncertain": the cut
is the lowest that keeps the confident answers at a target accuracy in
cross-validation, and the coverage it gives is stored beside it.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

TEMPERATURES = np.exp(np.linspace(np.log(0.2), np.log(5.0), 121))


def with_temperature(proba: np.ndarray, t: float) -> np.ndarray:
    """``softmax(log p / t)``: t > 1 softens over-confident probabilities, t < 1 sharpens them."""
    z = np.log(np.clip(np.asarray(proba, np.float64), 1e-12, 1.0)) / float(t)
    z -= z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def nll(proba: np.ndarray, y: Sequence[int]) -> float:
    y = np.asarray(y)
    return float(-np.mean(np.log(np.clip(proba[np.arange(len(y)), y], 1e-12, 1.0))))


def fit_temperature(proba: np.ndarray, y: Sequence[int]) -> float:
    """The temperature (on a log grid, 0.2 to 5) with the lowest negative log-likelihood."""
    return float(min(TEMPERATURES, key=lambda t: nll(with_temperature(proba, t), y)))


def expected_calibration_error(proba: np.ndarray, y: Sequence[int], bins: int = 10) -> float:
    """Top-class ECE: the confidence-weighted gap between confidence and accuracy, over equal-width bins."""
    conf, right = proba.max(1), (proba.argmax(1) == np.asarray(y))
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    return float(sum(abs(conf[idx == b].mean() - right[idx == b].mean()) * (idx == b).mean()
                     for b in range(bins) if (idx == b).any()))


def uncertain_cut(proba: np.ndarray, y: Sequence[int], target_accuracy: float = 0.95) -> dict[str, float]:
    """The lowest top-probability cut at which the answers at or above it are ``target_accuracy`` right.

    Returns ``{"threshold", "coverage", "accuracy", "target_accuracy"}``; when no cut reaches the
    target, the one with the best accuracy covering at least half of the scans.
    """
    conf, right = proba.max(1), (proba.argmax(1) == np.asarray(y))
    best = None
    for t in np.unique(conf):
        keep = conf >= t
        acc, cov = float(right[keep].mean()), float(keep.mean())
        if acc >= target_accuracy:
            return {"threshold": float(t), "coverage": cov, "accuracy": acc, "target_accuracy": target_accuracy}
        if cov >= 0.5 and (best is None or acc > best["accuracy"]):
            best = {"threshold": float(t), "coverage": cov, "accuracy": acc, "target_accuracy": target_accuracy}
    return best or {"threshold": 0.0, "coverage": 1.0, "accuracy": float(right.mean()),
                    "target_accuracy": target_accuracy}
