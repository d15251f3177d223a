"""Agreement with graders: QWK, accuracy, confusion, and referable / maculopathy sensitivity and specificity.

Confidence intervals resample patients, not photographs: a patient's two eyes
are alike, and resampling them apart would make the intervals too narrow.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lesiondet.grading.learned import quadratic_weighted_kappa


def _binary(truth: np.ndarray, called: np.ndarray, score: np.ndarray | None) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    pos, neg = truth.sum(), (~truth).sum()
    out = {"sensitivity": float((called & truth).sum() / pos) if pos else None,
           "specificity": float((~called & ~truth).sum() / neg) if neg else None,
           "n_positive": int(pos), "n_negative": int(neg)}
    if score is not None:
        out["auc"] = float(roc_auc_score(truth, score)) if pos and neg else None
    return out


def _bootstrap(groups: np.ndarray, fn, n: int = 1000, seed: int = 0) -> dict[str, list[float]]:
    """Percentile 95% intervals of each value ``fn(idx)`` returns, resampling whole groups."""
    rng = np.random.default_rng(seed)
    uniq, inv = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inv == g) for g in range(len(uniq))]
    draws: dict[str, list[float]] = {}
    for _ in range(n):
        idx = np.concatenate([members[g] for g in rng.integers(0, len(uniq), len(uniq))])
        for k, v in fn(idx).items():
            if v is not None and np.isfinite(v):
                draws.setdefault(k, []).append(v)
    return {k: [round(float(np.percentile(v, 2.5)), 4), round(float(np.percentile(v, 97.5)), 4)]
            for k, v in draws.items()}


def grading_metrics(grades: Sequence[int], predicted: Sequence[int], *, referable_true: Sequence[bool],
                    referable_called: Sequence[bool], referable_score: Sequence[float] | None = None,
                    maculopathy_true: Sequence[int | None] | None = None,
                    maculopathy_score: Sequence[float] | None = None, maculopathy_threshold: float = 0.5,
                    patients: Sequence[str] | None = None, n_boot: int = 1000) -> dict[str, Any]:
    """The ``grader eval --json`` document (grades 0-4; referable = grade >= 2 or maculopathy)."""
    from sklearn.metrics import confusion_matrix

    y, p = np.asarray(grades, int), np.asarray(predicted, int)
    rt, rc = np.asarray(referable_true, bool), np.asarray(referable_called, bool)
    rs = None if referable_score is None else np.asarray(referable_score, float)
    out: dict[str, Any] = {"qwk": quadratic_weighted_kappa(y, p), "accuracy": float(np.mean(y == p)),
                           "confusion": confusion_matrix(y, p, labels=list(range(5))).tolist(), "n": len(y),
                           "referable": _binary(rt, rc, rs)}
    groups = np.asarray(patients if patients is not None else np.arange(len(y)).astype(str))

    def one(idx: np.ndarray) -> dict[str, float | None]:
        b = _binary(rt[idx], rc[idx], None if rs is None else rs[idx])
        return {"sensitivity": b["sensitivity"], "specificity": b["specificity"], "auc": b.get("auc"),
                "qwk": quadratic_weighted_kappa(y[idx], p[idx])}

    if n_boot:
        ci = _bootstrap(groups, one, n_boot)
        out["referable"]["ci95"] = {k: ci[k] for k in ("sensitivity", "specificity", "auc") if k in ci}
        out["qwk_ci95"] = ci.get("qwk")
    if maculopathy_true is not None:
        known = np.array([m is not None for m in maculopathy_true])
        if known.any():
            mt = np.array([bool(m) for m in maculopathy_true])[known]
            ms = None if maculopathy_score is None else np.asarray(maculopathy_score, float)[known]
            called = ms >= maculopathy_threshold if ms is not None else np.zeros(len(mt), bool)
            out["maculopathy"] = _binary(mt, called, ms)
    return out
