"""Optional learned grader: an ordinal model on lesion features, and its evaluation.

Ordinal logistic regression in the Frank & Hall form: one binary classifier
per threshold ``P(grade > k)``, combined into per-grade probabilities. It keeps
the order of the grades, which a plain multiclass model ignores, and stays
sensible on the few hundred graded images a lab typically has.
"""
from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from lesiondet.errors import LesiondetError
from lesiondet.grading.rules import Grade, GradingConfig, grade
from lesiondet.io.voc import VocObject, VocRecord
from lesiondet.nn.logistic import PlainLogistic

GRADER_FORMAT = "lesiondet-grader/2"  # 1: lesiondet 0.1, a pickle
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


def read_lesion_features(folder: str | Path, images: Sequence[str | Path],
                         merged_as_he: Sequence[str] = ("HE_MA",)) -> np.ndarray:
    """``features`` of each image's rule grade, read from ``lesiondet detect --grade`` JSONs
    (``FOLDER/<image stem>.json``), one row per image in order."""
    import json

    folder = Path(folder)
    fix = f"run 'lesiondet detect IMAGES --grade --grader none --out {folder}' on every photograph first"
    if not folder.is_dir():
        raise LesiondetError(folder, "lesion folder not found", fix)
    rows = []
    for img in images:
        f = folder / f"{Path(img).stem}.json"
        if not f.is_file():
            raise LesiondetError(f, f"no detections for {Path(img).name}", fix)
        try:
            rows.append(features(Grade.from_dict(json.loads(f.read_text(encoding="utf-8"))["grade"]), merged_as_he))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise LesiondetError(f, "not a 'lesiondet detect --grade' result (no usable 'grade' object)",
                                 fix) from None
    return np.stack(rows) if rows else np.zeros((0, len(FEATURES)))


class OrdinalGrader:
    """``fit(X, y)`` / ``predict_proba(X)`` / ``predict(X)`` over ordered integer grades."""

    def __init__(self, C: float = 1.0, feature_names: Sequence[str] = FEATURES) -> None:
        self.C = C
        self.feature_names = tuple(feature_names)

    def fit(self, X: np.ndarray, y: Sequence[int]) -> OrdinalGrader:
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
            self.models_.append(PlainLogistic.from_sklearn(m.fit(X, (y > k).astype(int))))
        return self

    def to_dict(self) -> dict:
        """Plain numbers only: the file can be read without running code (JSON)."""
        return {"format": GRADER_FORMAT, "features": list(self.feature_names), "C": self.C,
                "grades": self.grades_.tolist(), "thresholds": [m.to_dict() for m in self.models_]}

    @classmethod
    def from_dict(cls, d: dict, path: str | Path = "grader",
                  feature_names: Sequence[str] = FEATURES) -> OrdinalGrader:
        if (not isinstance(d, dict) or d.get("format") != GRADER_FORMAT
                or list(d.get("features", [])) != list(feature_names)):
            raise LesiondetError(path, "not a lesiondet grader model of this version",
                                 "fit one with 'lesiondet grade --fit LABELS.csv --model FILE'")
        g = cls(float(d["C"]), feature_names)
        g.grades_ = np.asarray(d["grades"], int)
        g.models_ = [PlainLogistic.from_dict(m) for m in d["thresholds"]]
        return g

    def save(self, path: str | Path) -> Path:
        from lesiondet.fileio import write_json

        write_json(path, self.to_dict())
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, trust_legacy: bool = False) -> OrdinalGrader:
        """A grader saved by ``save`` (JSON); a lesiondet 0.1 pickle only with ``trust_legacy``."""
        import json

        p = Path(path)
        if not p.is_file():
            raise LesiondetError(p, "grader model not found", "fit one with --fit LABELS.csv --model FILE")
        data = p.read_bytes()
        try:
            return cls.from_dict(json.loads(data.decode("utf-8")), p)
        except (UnicodeDecodeError, json.JSONDecodeError):
            pass
        if not trust_legacy:
            raise LesiondetError(p, "not a JSON grader model; a pickled one would run code when loaded",
                                 "refit it with --fit, or, if you wrote it yourself with lesiondet 0.1, "
                                 "pass --trust-legacy (this runs the code inside it)")
        return cls._legacy(p, data)

    @classmethod
    def _legacy(cls, p: Path, data: bytes) -> OrdinalGrader:
        import pickle
        import sys

        from lesiondet.engine.checkpoint import LEGACY_RISK

        print(f"lesiondet: warning: {p}: unpickled with code execution (--trust-legacy); {LEGACY_RISK}",
              file=sys.stderr)
        try:
            saved = pickle.loads(data)
            old = saved["model"]
            g = cls(old.C)
            g.grades_ = np.asarray(old.grades_, int)
            g.models_ = [m if isinstance(m, PlainLogistic) else PlainLogistic.from_sklearn(m) for m in old.models_]
            return g
        except Exception:  # noqa: BLE001 - whatever the pickle holds, it is not a grader
            raise LesiondetError(p, "not a lesiondet grader model", "fit one with --fit LABELS.csv") from None

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


def grade_agreement(reference: Sequence[VocRecord], predicted: Sequence[VocRecord],
                    score: float | Callable[[Sequence[VocObject]], list[VocObject]] = 0.3,
                    config: GradingConfig | None = None) -> dict:
    """How often grading the detections gives the grade that grading the ground-truth boxes gives.

    Detections below ``score`` are left out, as detect leaves them out; ``score`` may instead be the
    function that keeps what detect reports (``OperatingPoint.keep``: per-class thresholds).
    Records are matched by file stem. Returns ``{"reference", "predicted"`` (grade lists),
    ``"accuracy", "qwk", "confusion"`` (5x5, rows = reference)``}``.
    """
    keep = score if callable(score) else (lambda objs: [o for o in objs if o.score is None or o.score >= score])
    from sklearn.metrics import confusion_matrix

    by_stem = {r.stem: r for r in predicted}
    ref, pred = [], []
    for r in reference:
        p = by_stem.get(r.stem, r.with_objects([]))
        p = p.with_objects(keep(p.objects))
        ref.append(grade(r, config=config).grade)
        pred.append(grade(p, image_size=(r.width, r.height), config=config).grade)
    acc = float(np.mean(np.equal(ref, pred))) if ref else float("nan")
    return {"reference": ref, "predicted": pred, "accuracy": acc, "qwk": quadratic_weighted_kappa(ref, pred),
            "confusion": confusion_matrix(ref, pred, labels=list(range(5))).tolist()}


def plot_confusion(path: str | Path, y_true: Sequence[int], y_pred: Sequence[int], title: str) -> Path:
    from sklearn.metrics import confusion_matrix

    from lesiondet.reporting.plots import plot_confusion_matrix

    cm = confusion_matrix(y_true, y_pred, labels=list(range(5)))
    return plot_confusion_matrix(path, cm, [str(g) for g in range(5)], title, "predicted grade", "reference grade")
