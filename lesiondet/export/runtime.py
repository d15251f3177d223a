"""Which runtime a checkpoint runs on: eager PyTorch, or onnxruntime from an ONNX copy made on first use.

On a CPU, onnxruntime runs the detector's per-tile network and the grading CNN in about half of
eager PyTorch's time (``benchmarks/bench_infer.py``; CHANGELOG.md's benchmark log, "onnxruntime"), with
the same detections and grades within the tolerance ``tests/export`` checks. So ``backend="auto"``
(what ``lesiondet detect`` uses) picks onnxruntime when the device is the CPU and onnxruntime is
installed, and PyTorch otherwise.

A ``.pt`` checkpoint is exported once, on first use, into the user cache: ``$LESIONDET_CACHE``, else
``$XDG_CACHE_HOME/lesiondet``, else ``~/.cache/lesiondet``, under ``onnx/<kind>-<sha256 prefix>.onnx``.
The name carries the checkpoint's digest, so a retrained or replaced checkpoint gets a fresh copy and a
stale one is never used. Writes are atomic, so a killed export leaves nothing half-written.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from lesiondet.errors import CheckpointError, LesiondetError

BACKENDS = ("auto", "torch", "onnx")


def cache_dir() -> Path:
    """The user cache lesiondet writes derived files to (see the module docstring)."""
    if os.environ.get("LESIONDET_CACHE"):
        return Path(os.environ["LESIONDET_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lesiondet"


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def choose_backend(backend: str, device: torch.device) -> str:
    """``"torch"`` or ``"onnx"`` for a ``.pt`` checkpoint on ``device``; ``auto`` never fails."""
    if backend not in BACKENDS:
        raise LesiondetError(None, f"unknown backend '{backend}'", f"use one of {', '.join(BACKENDS)}")
    if backend == "torch":
        return "torch"
    if device.type != "cpu":
        if backend == "onnx":
            raise LesiondetError(None, f"onnxruntime runs on the CPU here, not on {device}",
                                 "pass --device cpu, or --backend torch")
        return "torch"
    if not onnxruntime_available():
        if backend == "onnx":
            raise LesiondetError(None, "onnxruntime is not installed", "pip install onnxruntime, or --backend torch")
        return "torch"
    return "onnx"


def onnx_session(path: str | Path, threads: int | None, fix: str):
    """An onnxruntime CPU session for ``path`` (``threads``: intra-op threads, default all); a file it
    cannot read is a one-line ``CheckpointError`` with ``fix``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise CheckpointError(path, f"cannot read the ONNX file ({type(e).__name__})", fix) from None


def cached_onnx(weights: str | Path, kind: str, make: Callable[[Path], object]) -> Path:
    """The cached ONNX copy of ``weights`` (a ``kind`` of network); ``make(path)`` writes it when missing."""
    from lesiondet.fileio import sha256

    path = cache_dir() / "onnx" / f"{kind}-{sha256(weights)[:20]}.onnx"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        if sys.stderr.isatty():  # a note for people; scripts and logs keep to one line per error
            print(f"lesiondet: exporting {Path(weights).name} to ONNX once, into {path}", file=sys.stderr)
        make(path)
    return path


def load_or_fall_back(weights: str | Path, kind: str, make: Callable[[Path], object],
                      load: Callable[[Path], object], backend: str) -> object | None:
    """``load`` of the cached ONNX copy; under ``auto``, None (run PyTorch) when no copy can be made or loaded.

    A checkpoint that is itself broken raises its own one-line error, whatever the backend. A cached
    copy that does not load (damaged on disk) is made again once.
    """
    try:
        path = cached_onnx(weights, kind, make)
        try:
            return load(path)
        except CheckpointError:
            path.unlink(missing_ok=True)
            return load(cached_onnx(weights, kind, make))
    except LesiondetError as e:
        if e.path is not None and Path(e.path) == Path(weights):
            raise  # the checkpoint's own fault: PyTorch could not run it either
        problem = e.problem
    except Exception as e:  # noqa: BLE001 - an exporter or runtime that cannot take this network: run PyTorch
        problem = f"{type(e).__name__}: {e}"
    if backend == "onnx":
        raise LesiondetError(cache_dir(), f"cannot make or load the ONNX copy of {Path(weights).name} ({problem})",
                             "set LESIONDET_CACHE to a writable folder, or pass --backend torch") from None
    print(f"lesiondet: running {Path(weights).name} on PyTorch: no ONNX copy ({problem})", file=sys.stderr)
    return None
