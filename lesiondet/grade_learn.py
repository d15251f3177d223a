"""Optional learned grader: an ordinal model on lesion features, and its evaluation.

Ordinal logistic regression in the Frank & Hall form: one binary classifier
per threshold ``P(grade > k)``, combined into per-grade probabilities. It keeps
the order of the grades, which a plain multiclass model ignores, and stays
sensible on the few hundred graded images a lab typically has.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import LesiondetError
from .grade import Grade, GradingConfig, grade
from .voc import VocRecord

FEATURES = ("log_MA", "log_HE", "log_EX", "log_SE", "area_HE", "area_EX", "area_SE",
            "he_q_min", "he_q_2", "he_q_3", "he_q_max", "dme")


def features(g: Grade, merged_as_he: Sequence[str] = ("HE_MA",)) -> np.ndarray:
    """Counts, area fractions and sorted per-quadrant haemorrhage counts (orientation-free)."""
    c = g.counts
    he = c.get("HE", 0) + sum(c.get(m, 0) for m in merged_as_he)
    quads = [0] * 4
    for cls in ("HE",) + tuple(merged_as_he):
        for i, n in enumerate(g.counts_by_quadrant.get(cls, {}).values()):
            quads[i] += n
    af = g.area_fraction
    he_area = af.get("HE", 0.0) + sum(af.get(m, 0.0) for m in merged_as_he)
    return np.array([np.log1p(c.get("MA", 0)), np.log1p(he), np.log1p(c.get("EX", 0)), np.log1p(c.get("SE", 0)),
                     1e3 * he_area, 1e3 * af.get("EX", 0.0), 1e3 * af.get("SE", 0.0),
                     *np.log1p(sorted(quads)), float(g.dme_suspect)], np.float64)


class OrdinalGrader:
    """``fit(X, y)`` / ``predict_proba(X)`` / ``predict(X)`` over ordered integer grades."""

    def __init__(self, C: float = 1.0) -> None:
        self.C = C

    def fit(self, X: np.ndarray, y: Sequence[int]) -> "OrdinalGrader":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        y = np.asarray(y, int)
        self.grades_ = np.unique(y)
        if len(self.grades_) < 2:
            raise LesiondetError(None, "the labels hold a single grade", "fit on images of at least two grades")
        self.models_ = []
        for k in self.grades_[:-1]:
            m = make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=1000))
            self.models_.append(m.fit(X, (y > k).astype(int)))
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        gt = np.stack([m.predict_proba(X)[:, 1] for m in self.models_], 1)  # P(y > k)
        gt = np.minimum.accumulate(gt, axis=1)  # keep the cumulative probabilities monotone
        upper = np.concatenate([np.ones((len(X), 1)), gt], 1)
        lower = np.concatenate([gt, np.zeros((len(X), 1))], 1)
        return np.clip(upper - lower, 0, 1)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.grades_[self.predict_proba(X).argmax(1)]


def quadratic_weighted_kappa(y_true: Sequence[int], y_pred: Sequence[int], n_grades: int = 5) -> float:
    """Cohen's kappa with quadratic weights (1 = perfect agreement, 0 = chance)."""
    a, b = np.asarray(y_true, int), np.asarray(y_pred, int)
    labels = np.union1d(a, b)
    idx = {v: i for i, v in enumerate(labels)}
    k = len(labels)
    if k == 1:
        return 1.0
    o = np.zeros((k, k))
    for t, p in zip(a, b):
        o[idx[t], idx[p]] += 1
    w = np.array([[(labels[i] - labels[j]) ** 2 for j in range(k)] for i in range(k)], float)
    e = np.outer(o.sum(1), o.sum(0)) / o.sum()
    return float(1 - (w * o).sum() / (w * e).sum())


def read_labels_csv(path: str | Path) -> dict[str, int]:
    """``image,grade`` rows → {image stem: grade}."""
    p = Path(path)
    if not p.is_file():
        raise LesiondetError(p, "labels CSV not found", "pass a CSV with columns image,grade")
    out: dict[str, int] = {}
    with open(p, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"image", "grade"} <= set(reader.fieldnames):
            raise LesiondetError(p, "expected a header 'image,grade'", "add the header row")
        for i, row in enumerate(reader, start=2):
            try:
                g = int(row["grade"])
            except (TypeError, ValueError):
                raise LesiondetError(p, f"line {i}: grade '{row['grade']}' is not a whole number",
                                     "use ICDR grades 0-4") from None
            if not 0 <= g <= 4:
                raise LesiondetError(p, f"line {i}: grade {g} is outside 0-4", "use ICDR grades 0-4")
            out[Path(row["image"]).stem] = g
    if not out:
        raise LesiondetError(p, "no rows", "add image,grade rows")
    return out


def grade_agreement(reference: Sequence[VocRecord], predicted: Sequence[VocRecord], score: float = 0.3,
                    config: GradingConfig | None = None) -> dict:
    """How often grading the detections gives the grade that grading the ground-truth boxes gives.

    Detections below ``score`` (``lesiondet detect``'s default threshold) are left
    out, as detect leaves them out. Records are matched by file stem. Returns ``{"reference", "predicted"`` (grade lists),
    ``"accuracy", "qwk", "confusion"`` (5x5, rows = reference)``}``.
    """
    from sklearn.metrics import confusion_matrix

    by_stem = {r.stem: r for r in predicted}
    ref, pred = [], []
    for r in reference:
        p = by_stem.get(r.stem, r.with_objects([]))
        p = p.with_objects(o for o in p.objects if o.score is None or o.score >= score)
        ref.append(grade(r, config=config).grade)
        pred.append(grade(p, image_size=(r.width, r.height), config=config).grade)
    acc = float(np.mean(np.equal(ref, pred))) if ref else float("nan")
    return {"reference": ref, "predicted": pred, "accuracy": acc, "qwk": quadratic_weighted_kappa(ref, pred),
            "confusion": confusion_matrix(ref, pred, labels=list(range(5))).tolist()}


def plot_confusion(path: str | Path, y_true: Sequence[int], y_pred: Sequence[int], title: str) -> Path:
    from sklearn.metrics import confusion_matrix

    from .report import plot_confusion_matrix

    cm = confusion_matrix(y_true, y_pred, labels=list(range(5)))
    return plot_confusion_matrix(path, cm, [str(g) for g in range(5)], title, "predicted grade", "reference grade")
