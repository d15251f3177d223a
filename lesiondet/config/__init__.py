"""One configuration schema: every default in ``defaults.yaml``, each key typed by its default.

A user file (``--config``, ``--grading``) lists only what differs from the
defaults. A key the defaults do not have, or a value of the wrong kind, is a
one-line error naming the key and the file. A task adds its own rules on top
(the detector's presets: ``detection.preset``); the full configuration a run
folder records as ``config.yaml`` is written by ``engine.checkpoint.write_resolved``.
"""
from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any, Mapping

from lesiondet.errors import LesiondetError

DEFAULTS_FILE = Path(__file__).with_name("defaults.yaml")


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


def load_section(section: str, path: str | Path | None, what: str, fix: str) -> dict[str, Any]:
    """One section from a file that holds it alone or under its name (``oct:``, ``grading:``)."""
    if path is None:
        return defaults(section)
    user = read_user_file(path, what, fix)
    return check_section(section, user.get(section, user) if isinstance(user.get(section), Mapping) else user, path)
