"""The detector's training preset (configs/models/*.yaml): four sections of the one schema, checked
against the sections' own rules (choices, ranges) and reported against the file."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from lesiondet.config import check_section, read_user_file
from lesiondet.detection.model import resolve_arch
from lesiondet.detection.slicing import resolve_tiling
from lesiondet.errors import LesiondetError

#: Sections of a detector training preset.
DETECTOR_SECTIONS = ("model", "tiling", "train", "augment")


def load_config(path: str | Path | None) -> dict[str, Any]:
    """A detector preset: ``{"model", "tiling", "train", "augment"}``, each over its defaults."""
    user: dict[str, Any] = {}
    if path is not None:
        user = read_user_file(path, "config", "pass a YAML file such as configs/models/cpu-fast.yaml")
        unknown = set(user) - set(DETECTOR_SECTIONS)
        if unknown:
            key = sorted(unknown)[0]
            fix = ("pass the label map on the command line: --labels FILE" if key == "labels"
                   else f"use the sections {', '.join(DETECTOR_SECTIONS)}")
            raise LesiondetError(path, f"unknown section '{key}'", fix)
    cfg = {s: check_section(s, user.get(s), path) for s in DETECTOR_SECTIONS}
    if path is not None:
        try:  # the sections' own rules (choices, ranges), reported against the file
            resolve_tiling(cfg["tiling"])
            resolve_arch(cfg["model"])
        except LesiondetError as e:
            raise LesiondetError(path, e.problem, e.fix) from None
    return cfg
