"""Checkpoints that load without running code.

``torch.load(weights_only=True)`` unpickles only tensors, numbers, strings,
lists, tuples and dicts, so a ``.pt`` passed between sites cannot run code on
the machine that opens it. Everything lesiondet stores is turned into those
types first (``to_plain``). Files from lesiondet 0.1 held NumPy arrays and
scikit-learn objects; they load only through ``trust_legacy=True``
(``--trust-legacy``), which unpickles with code execution and says so.
"""
from __future__ import annotations

import pickle
import sys
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from lesiondet.errors import CheckpointError
from lesiondet.fileio import save_torch

LEGACY_RISK = ("--trust-legacy unpickles the file with code execution: use it only for files you wrote "
               "yourself or got from someone you trust")


#: what ``last.pt`` holds to resume training and a deployable model file leaves out
TRAINING_STATE = ("optimizer", "scheduler", "scaler", "rng", "augment", "loader_generator")


def to_plain(obj: Any) -> Any:
    """``obj`` with NumPy values, paths and sets turned into types ``weights_only`` loading accepts."""
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, Mapping):
        return {(k if isinstance(k, (str, int)) else str(k)): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        out = [to_plain(v) for v in obj]
        return out if isinstance(obj, list) else tuple(out)
    if isinstance(obj, (set, frozenset)):
        return sorted(to_plain(v) for v in obj)
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> None:
    """Atomic ``torch.save`` of ``state`` made plain."""
    save_torch(path, to_plain(state))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", trust_legacy: bool = False) -> dict:
    """``torch.load(weights_only=True)`` with one-line errors for missing, corrupt and code-carrying files."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(p, "weights file not found", "pass --weights runs/NAME/best.pt")
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # torch says "Unsupported global" when the pickle names code to run; anything else is a damaged file
        if "Unsupported global" not in str(e) and "can still be loaded" not in str(e):
            raise CheckpointError(p, "cannot read the weights (UnpicklingError)",
                                  "the file is corrupt or truncated; use another checkpoint") from None
        if not trust_legacy:
            raise CheckpointError(p, "this file holds Python objects that would run code when loaded "
                                     "(a lesiondet 0.1 checkpoint, or a file not written by lesiondet)",
                                  "if you wrote it yourself with lesiondet 0.1, pass --trust-legacy "
                                  "(this runs the code inside it)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(p, f"cannot read the weights ({type(e).__name__})",
                              "the file is corrupt or truncated; use another checkpoint") from None
    print(f"lesiondet: warning: {p}: loaded with code execution (--trust-legacy); {LEGACY_RISK}", file=sys.stderr)
    try:
        return torch.load(p, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001 - anything a legacy pickle raises is the file's fault
        raise CheckpointError(p, f"cannot read the legacy file ({type(e).__name__})",
                              "use another checkpoint") from None


def load_kind(path: str | Path, formats: str | tuple[str, ...], what: str, fix: str,
              trust_legacy: bool = False) -> dict:
    """A checkpoint of one kind (its ``format``), or a one-line error: "not a lesiondet ``what`` checkpoint"."""
    ck = load_checkpoint(path, trust_legacy=trust_legacy)
    if not isinstance(ck, Mapping) or ck.get("format") not in ((formats,) if isinstance(formats, str) else formats):
        raise CheckpointError(path, f"not a lesiondet {what} checkpoint", fix)
    return ck


def load_weights(module: torch.nn.Module, state: Mapping[str, Any], path: str | Path, what: str) -> None:
    """``module.load_state_dict(state)`` in float32; a mismatch is a one-line error naming ``path``."""
    try:
        module.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except RuntimeError:
        raise CheckpointError(path, f"weights do not match {what}",
                              "retrain, or use the lesiondet version that wrote it") from None


def write_resolved(path: str | Path, cfg: Mapping[str, Any]) -> None:
    """The run's full configuration as YAML, written atomically."""
    import yaml

    from lesiondet.fileio import write_text

    def plain(x: Any) -> Any:
        if isinstance(x, Mapping):
            return {str(k): plain(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        return x

    write_text(path, "# the fully resolved configuration of this run (lesiondet/config/defaults.yaml + overrides)\n"
               + yaml.safe_dump(plain(to_plain(dict(cfg))), sort_keys=False, default_flow_style=None))
