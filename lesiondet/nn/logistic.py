"""A fitted scikit-learn ``StandardScaler`` + ``LogisticRegression`` as plain numbers, and back.

Model files must load without running code (no pickle), so the linear heads
(OCT's logistic regression on frozen features, the learned ordinal grader)
are stored as their arrays and applied here with NumPy, giving the same
probabilities as scikit-learn's ``predict_proba``.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np


class PlainLogistic:
    """``predict_proba`` of a standardised logistic regression from its arrays."""

    def __init__(self, mean: Any, scale: Any, coef: Any, intercept: Any, classes: Any) -> None:
        self.mean = np.asarray(mean, np.float64)
        self.scale = np.asarray(scale, np.float64)
        self.coef = np.asarray(coef, np.float64).reshape(-1, len(self.mean))
        self.intercept = np.asarray(intercept, np.float64).reshape(-1)
        self.classes_ = np.asarray(classes, np.int64)

    @classmethod
    def from_sklearn(cls, pipeline: Any) -> "PlainLogistic":
        scaler, lr = pipeline[0], pipeline[-1]
        scale = scaler.scale_ if scaler.scale_ is not None else np.ones_like(scaler.mean_)
        return cls(scaler.mean_, scale, lr.coef_, lr.intercept_, lr.classes_)

    def to_dict(self) -> dict[str, list]:
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist(), "coef": self.coef.tolist(),
                "intercept": self.intercept.tolist(), "classes": self.classes_.tolist()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PlainLogistic":
        return cls(d["mean"], d["scale"], d["coef"], d["intercept"], d["classes"])

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        z = (np.asarray(X, np.float64) - self.mean) / self.scale @ self.coef.T + self.intercept
        if self.coef.shape[0] == 1:  # binary: scikit-learn keeps one row, the positive class
            p = 1.0 / (1.0 + np.exp(-z[:, 0]))
            return np.stack([1 - p, p], 1)
        z = z - z.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)
