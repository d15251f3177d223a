"""Splits by patient (or subject): one person's images never sit on both sides.

Two eyes of one patient, or the B-scans of one eye, look alike; a split by image
would score a model on near-copies of its training data. Every task splits here.
"""
from __future__ import annotations

from collections.abc import Hashable, Sequence
from pathlib import Path

import numpy as np

from lesiondet.errors import LesiondetError


def _check_groups(groups: Sequence[str], items: str, unit: str) -> None:
    if len(set(groups)) < 2:
        raise LesiondetError(None, f"all {items} belong to one {unit}; cannot split by {unit}",
                             f"pass --val with {items} of other {unit}s")


def _stratifiable(labels: Sequence[Hashable] | None, n_splits: int) -> bool:
    if labels is None:
        return False
    counts = np.bincount(np.unique(np.asarray(labels), return_inverse=True)[1])
    return bool(counts.min() >= n_splits)


def group_split(groups: Sequence[str], labels: Sequence[Hashable] | None = None, val_fraction: float = 0.2,
                seed: int = 0, items: str = "images", unit: str = "patient") -> tuple[np.ndarray, np.ndarray]:
    """Training and validation indices, every group on one side; labels balanced when each has enough groups."""
    from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold

    _check_groups(groups, items, unit)
    z = np.zeros(len(groups))
    n_splits = max(2, min(round(1 / val_fraction), len(set(groups))))
    if _stratifiable(labels, n_splits):
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        return next(splitter.split(z, labels, groups))
    return next(GroupShuffleSplit(n_splits=1, test_size=val_fraction, random_state=seed).split(z, groups=groups))


def group_folds(groups: Sequence[str], labels: Sequence[Hashable] | None = None, k: int = 5, seed: int = 0,
                items: str = "images", unit: str = "patient") -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` cross-validation folds (fewer with fewer groups), every group in one fold."""
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    _check_groups(groups, items, unit)
    k = min(k, len(set(groups)))
    z = np.zeros(len(groups))
    if _stratifiable(labels, k):
        return list(StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(z, labels, groups))
    return list(GroupKFold(k).split(z, groups=groups))


def check_disjoint(train_groups: Sequence[str], val_groups: Sequence[str], where: str | Path,
                   items: str = "images", unit: str = "patient") -> None:
    """A ``--val`` set that shares a person with the training data is refused."""
    both = sorted(set(train_groups) & set(val_groups))
    if both:
        raise LesiondetError(where, f"{unit} {both[0]} has {items} in both training and validation data "
                             f"({len(both)} {unit}(s) in all)", f"split by {unit}: keep each {unit} on one side")
