"""The shipped default models: files in this folder, each checked against a SHA-256 written here.

``lesiondet detect img.jpg --grade``, ``oct predict``, ``oct predict --seg`` and
``oct segment predict`` run with these when no ``--weights`` is given.
Their training commands, data, held-out figures and intended use are in
``docs/models.md``. A file whose digest differs from the one below is refused:
a damaged or swapped model must not grade anyone's eyes silently.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lesiondet.errors import CheckpointError
from lesiondet.fileio import sha256

HERE = Path(__file__).resolve().parent

#: file name → SHA-256 of the shipped file.
SHIPPED: dict[str, str] = {
    "detector.pt": "47bfe9c661eadc00cda5c4e15bdf1736c44a88c64b0ac950fd9f5631d0a2e59c",
    "grader.pt": "aba4c7e16105f69f995d892c567e9ca2a6e91c48a5e1089a15c97233739a5e20",
    "oct.pt": "9137787d9e2bc8b4a10063439fae4be5c7d30f4ba12a0200a453dccc40d8ed79",
    "fluid.pt": "d84ff66c2dcfbcdaca1769a464099c3e70153f22a0d5cc462c2ba85b759140f5",
}

DETECTOR = "detector.pt"
GRADER = "grader.pt"
OCT = "oct.pt"  # OCT B-scan classifier (CNV / DME / DRUSEN / NORMAL)
FLUID = "fluid.pt"  # OCT fluid U-Net


def shipped(name: str) -> Path:
    """Path of a shipped model after its digest is checked."""
    p = HERE / name
    if name not in SHIPPED or not p.is_file():
        raise CheckpointError(p, "no shipped default model of this kind in this installation",
                              "pass --weights with a model you trained")
    digest = sha256(p)
    if digest != SHIPPED[name]:
        raise CheckpointError(p, f"SHA-256 {digest[:12]}... does not match the shipped model's "
                              f"{SHIPPED[name][:12]}...", "reinstall lesiondet, or pass --weights")
    return p


def default_detector() -> Path:
    return shipped(DETECTOR)


def default_grader() -> Path:
    return shipped(GRADER)


def default_oct() -> Path:
    return shipped(OCT)


def default_fluid() -> Path:
    return shipped(FLUID)


def _half(x: Any) -> Any:
    """Floating tensors in fp16, through nested dicts (the OCT linear head keeps its body under ``heads``)."""
    import torch

    if torch.is_tensor(x):
        return x.half() if x.is_floating_point() else x
    if isinstance(x, Mapping):
        return {k: _half(v) for k, v in x.items()}
    return x


def ship_checkpoint(src: str | Path, dst: str | Path, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Copy a run's ``best.pt`` for shipping: weights in fp16, training state dropped; returns size and digest."""
    from lesiondet.engine.checkpoint import TRAINING_STATE, load_checkpoint, save_checkpoint

    ck = load_checkpoint(src)
    keep = {k: v for k, v in ck.items() if k not in TRAINING_STATE}
    for key in ("model", "heads"):
        if key in keep:
            keep[key] = _half(keep[key])
    keep.update(extra or {})
    save_checkpoint(dst, keep)
    return {"path": str(dst), "bytes": Path(dst).stat().st_size, "sha256": sha256(dst)}
