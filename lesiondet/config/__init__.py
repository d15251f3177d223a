"""One configuration schema: every default in ``defaults.yaml``, each key typed by its default.

A user file (``--config``, ``--grading``) lists only what differs from the
defaults. A key the defaults do not have, or a value of the wrong kind, is a
one-line error naming the key and the file. ``resolved`` gives the full
configuration a run folder records as ``config.yaml``.
"""
from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any, Mapping

from lesiondet.errors import LesiondetError

DEFAULTS_FILE = Path(__file__).with_name("defaults.yaml")
#: Sections of a detector training preset (configs/models/*.yaml).
DETECTOR_SECTIONS = ("model", "tiling", "train", "augment")


@functools.lru_cache(maxsize=1)
def _all_defaults() -> dict[str, dict[str, Any]]:
    import yaml

    return yaml.safe_load(DEFAULTS_FILE.read_text(encoding="utf-8"))


def defaults(section: str) -> dict[str, Any]:
    """A fresh copy of one section's defaults."""
    return copy.deepcopy(_all_defaults()[section])


def _kind_ok(default: Any, value: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if default == "auto":  # auto or a number (zoom, tiles_per_image) or a switch (slice): the section checks more
        return isinstance(value, (str, int, float, bool))
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, list):
        return isinstance(value, (list, tuple))
    return True


def _kind_name(default: Any) -> str:
    return {bool: "true or false", int: "a whole number", float: "a number", str: "a word",
            list: "a list"}.get(type(default), "a value")


def check_section(section: str, values: Mapping[str, Any] | None, source: str | Path | None = None
                  ) -> dict[str, Any]:
    """``values`` over the section's defaults; unknown keys and values of the wrong kind are errors."""
    out = defaults(section)
    values = dict(values or {})
    for key, value in values.items():
        if key not in out:
            raise LesiondetError(source, f"unknown {section} option '{key}'",
                                 f"valid {section} options: {', '.join(out)}")
        if not _kind_ok(out[key], value):
            raise LesiondetError(source, f"{section}.{key}: {value!r} is not {_kind_name(out[key])}",
                                 f"see the default in {DEFAULTS_FILE.name}: {section}.{key}: {out[key]!r}")
    out.update(values)
    return out


def read_user_file(path: str | Path, what: str, fix: str) -> dict[str, Any]:
    from lesiondet.fileio import read_yaml

    return read_yaml(Path(path), what, fix)


def merge(base: Mapping[str, Any], over: Mapping[str, Any] | None) -> dict[str, Any]:
    """Recursive dict update that returns a new dict."""
    out = copy.deepcopy(dict(base))
    for k, v in (over or {}).items():
        out[k] = merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


DEFAULT_TRAIN: dict[str, Any] = defaults("train")


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
        from lesiondet.detection.model import resolve_arch
        from lesiondet.detection.slicing import resolve_tiling

        try:  # the sections' own rules (choices, ranges), reported against the file
            resolve_tiling(cfg["tiling"])
            resolve_arch(cfg["model"])
        except LesiondetError as e:
            raise LesiondetError(path, e.problem, e.fix) from None
    return cfg


def load_section(section: str, path: str | Path | None, what: str, fix: str) -> dict[str, Any]:
    """One section from a file that holds it alone or under its name (``oct:``, ``grading:``)."""
    if path is None:
        return defaults(section)
    user = read_user_file(path, what, fix)
    return check_section(section, user.get(section, user) if isinstance(user.get(section), Mapping) else user, path)


def write_resolved(path: str | Path, cfg: Mapping[str, Any]) -> None:
    """The run's full configuration as YAML, written atomically."""
    import yaml

    from lesiondet.engine.checkpoint import to_plain
    from lesiondet.fileio import write_text

    def plain(x: Any) -> Any:
        if isinstance(x, Mapping):
            return {str(k): plain(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        return x

    write_text(path, "# the fully resolved configuration of this run (lesiondet/config/defaults.yaml + overrides)\n"
               + yaml.safe_dump(plain(to_plain(dict(cfg))), sort_keys=False, default_flow_style=None))
