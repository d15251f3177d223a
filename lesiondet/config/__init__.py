"""Training presets: YAML with ``model:``, ``train:`` and ``augment:`` sections over defaults."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping

from lesiondet.errors import LesiondetError

DEFAULT_TRAIN: dict[str, Any] = {
    "epochs": 20,
    "batch": 2,
    "lr": 0.01,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "warmup_iters": 100,
    "clip_grad": 10.0,
    "workers": 2,
    "amp": True,
    "use_difficult": False,
    "seed": 0,
    "patience": 0,  # stop after this many epochs without a better validation mAP50 (0: never)
    "val_score": 0.001,  # keep low-score detections for mAP and FROC; the curves need them
    "val_max_images": 50,  # per-epoch fitness on this many validation images (0: all)
    "val_max_tiles": 64,  # ... and on this many fixed tiles of the images that are sliced (0: whole images)
}


def merge(base: Mapping[str, Any], over: Mapping[str, Any] | None) -> dict[str, Any]:
    """Recursive dict update that returns a new dict."""
    out = copy.deepcopy(dict(base))
    for k, v in (over or {}).items():
        out[k] = merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def load_config(path: str | Path | None) -> dict[str, Any]:
    """``{"model", "train", "augment", "tiling"}`` sections with defaults filled in."""
    cfg: dict[str, Any] = {"model": {}, "train": dict(DEFAULT_TRAIN), "augment": {}, "tiling": {}}
    if path is None:
        return cfg
    from lesiondet.fileio import read_yaml

    p = Path(path)
    user = read_yaml(p, "config", "pass a YAML file such as configs/models/cpu-fast.yaml")
    unknown = set(user) - {"model", "train", "augment", "tiling", "labels"}
    if unknown:
        raise LesiondetError(p, f"unknown section(s) {sorted(unknown)}",
                             "use model:, train:, augment:, tiling:, labels:")
    from lesiondet.detection.slicing import resolve_tiling

    try:
        resolve_tiling(user.get("tiling"))
    except LesiondetError as e:
        raise LesiondetError(p, e.problem, e.fix) from None
    sized = {"min_size", "max_size"} & set(user.get("model") or {})
    if sized:
        raise LesiondetError(p, f"model.{sorted(sized)[0]} is set by the tiling now",
                             "remove it and set tiling.tile (the model input side) instead")
    bad = set(user.get("train") or {}) - set(DEFAULT_TRAIN)
    if bad:
        raise LesiondetError(p, f"unknown train option(s) {sorted(bad)}", f"valid: {', '.join(DEFAULT_TRAIN)}")
    return merge(cfg, user)
