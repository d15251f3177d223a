"""Export the per-tile detector network to ONNX or TorchScript, and run an exported ONNX file.

The detector's exporter, beside its model, as the grader's lives in ``grading/cnn.py``;
``lesiondet.export`` is the runtime both use.

Only the network is exported (MONAI's cut): it takes one RGB image in [0, 1]
at model scale, ``(3, H, W)`` with any H and W, and returns its boxes, scores
and labels after torchvision's own per-class NMS, down to score 0.001. Slicing
into tiles, scaling, flips and the merge across tiles stay in Python
(``lesiondet.detection.predict``), so an exported file runs through exactly
the same pipeline as the checkpoint it came from. The checkpoint's classes,
label map and tiling travel inside the file as metadata.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from lesiondet.detection.model import CHECKPOINT_FORMAT, detector_from_checkpoint
from lesiondet.engine.checkpoint import load_checkpoint
from lesiondet.errors import CheckpointError, LesiondetError
from lesiondet.export.runtime import onnx_session
from lesiondet.fileio import atomic_path

META_KEY = "lesiondet"
FORMATS = ("onnx", "torchscript")
EXPORT_SCORE = 0.001  # NMS is greedy by score, so any higher --score cut later gives the same boxes


class TileNetwork(torch.nn.Module):
    """The detector on one image at model scale → ``(boxes, scores, labels)``: the exported graph."""

    def __init__(self, detector: torch.nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if torch.jit.is_scripting():  # scripted torchvision detectors return (losses, detections)
            out = self.detector([image])[1][0]
        else:
            out = self.detector([image])[0]
        return out["boxes"], out["scores"], out["labels"]


def export_metadata(ckpt: dict[str, Any]) -> dict[str, Any]:
    """What the Python side needs to slice, merge and name the classes of an exported network."""
    return {"format": CHECKPOINT_FORMAT, "classes": list(ckpt["classes"]), "label_map": ckpt["label_map"],
            "tiling": ckpt.get("tiling"), "arch": ckpt["arch"], "config": ckpt.get("config", {}),
            "operating_point": ckpt.get("operating_point"), "display_point": ckpt.get("display_point")}


def default_out(weights: str | Path, fmt: str) -> Path:
    return Path(weights).with_suffix(".onnx" if fmt == "onnx" else ".torchscript")


def export(weights: str | Path, fmt: str = "onnx", out: str | Path | None = None, *,
           trust_legacy: bool = False, opset: int = 17) -> Path:
    """Write the per-tile network of a detector checkpoint as ONNX or TorchScript; returns the file."""
    if fmt not in FORMATS:
        raise LesiondetError(None, f"unknown export format '{fmt}'", f"use one of {', '.join(FORMATS)}")
    ckpt = load_checkpoint(weights, trust_legacy=trust_legacy)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(weights, "only detector checkpoints can be exported",
                              "pass best.pt from 'lesiondet train'")
    detector, _ = detector_from_checkpoint(ckpt, str(weights), input_size=None, score_thresh=EXPORT_SCORE)
    net = TileNetwork(detector.eval()).eval()
    out = Path(out) if out is not None else default_out(weights, fmt)
    meta = json.dumps(export_metadata(ckpt), default=str)
    example = torch.rand(3, 256, 256)
    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on torchvision's shape arithmetic
        if fmt == "onnx":
            _onnx(net, example, tmp, opset, meta)
        else:
            scripted = torch.jit.script(net)
            torch.jit.save(scripted, str(tmp), _extra_files={f"{META_KEY}.json": meta})
    return out


def _onnx(net: torch.nn.Module, example: torch.Tensor, path: Path, opset: int, meta: str) -> None:
    import onnx

    # The TorchScript-based exporter: torchvision's detection models are tested with it.
    torch.onnx.export(net, (example,), str(path), dynamo=False, opset_version=opset, input_names=["image"],
                      output_names=["boxes", "scores", "labels"],
                      dynamic_axes={"image": {1: "height", 2: "width"}, "boxes": {0: "n"}, "scores": {0: "n"},
                                    "labels": {0: "n"}})
    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = META_KEY, meta
    onnx.save(model, str(path))


class OnnxDetector:
    """An exported network run by onnxruntime on the CPU, called like the torchvision detector.

    ``detector(images)`` takes a list of ``(3, H, W)`` tensors at model scale and
    returns one ``{"boxes", "scores", "labels"}`` dict per image, so slicing and
    merging treat it exactly as they treat the PyTorch network.
    """

    def __init__(self, path: str | Path, score: float = EXPORT_SCORE, threads: int | None = None) -> None:
        p = Path(path)
        if not p.is_file():
            raise CheckpointError(p, "ONNX file not found", "export one with 'lesiondet export --weights best.pt'")
        self.session = onnx_session(p, threads, "export it again with 'lesiondet export'")
        raw = self.session.get_modelmeta().custom_metadata_map.get(META_KEY)
        self.meta = json.loads(raw) if raw else None
        if not self.meta or self.meta.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(p, "not an ONNX file exported by lesiondet (no lesiondet metadata)",
                                  "export it with 'lesiondet export --weights best.pt --format onnx'")
        self.score = float(score)

    def eval(self) -> "OnnxDetector":
        return self

    def to(self, device: Any) -> "OnnxDetector":
        return self

    def __call__(self, images: Sequence[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        outs = []
        for im in images:
            boxes, scores, labels = self.session.run(None, {"image": np.ascontiguousarray(im.cpu().numpy())})
            keep = scores >= self.score
            outs.append({"boxes": torch.from_numpy(boxes[keep]), "scores": torch.from_numpy(scores[keep]),
                         "labels": torch.from_numpy(labels[keep].astype(np.int64))})
        return outs
