"""``Predictor``: a trained checkpoint turned into detections for image files or arrays."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from .data import to_tensor
from .device import resolve_device
from .images import read_rgb
from .model import detector_from_checkpoint, load_checkpoint
from .voc import VocObject, VocRecord


def detections_from_output(out: dict, classes: Sequence[str], score: float) -> list[VocObject]:
    """Torchvision's output dict → ``VocObject`` list above ``score``, best first."""
    keep = out["scores"] >= score
    boxes = out["boxes"][keep].detach().cpu().tolist()
    scores = out["scores"][keep].detach().cpu().tolist()
    labels = out["labels"][keep].detach().cpu().tolist()
    return [VocObject(classes[lab - 1], tuple(b), False, s) for b, s, lab in zip(boxes, scores, labels)]


@torch.inference_mode()
def predict_records(model: torch.nn.Module, records: Iterable[VocRecord], classes: Sequence[str],
                    device: torch.device, score: float = 0.01, batch: int = 2) -> list[VocRecord]:
    """Run ``model`` on each record's image; returns the records with predicted objects."""
    model.eval()
    out: list[VocRecord] = []
    records = list(records)
    for i in range(0, len(records), batch):
        chunk = records[i:i + batch]
        imgs = [to_tensor(read_rgb(r.image_path)).to(device) for r in chunk]
        for r, o in zip(chunk, model(imgs)):
            out.append(r.with_objects(detections_from_output(o, classes, score)))
    return out


class Predictor:
    """Load a checkpoint once, then detect lesions in images.

    >>> p = Predictor("runs/train/best.pt")           # doctest: +SKIP
    >>> rec = p.predict("fundus.jpg")                 # doctest: +SKIP
    >>> [(o.label, o.score) for o in rec.objects]     # doctest: +SKIP
    """

    def __init__(self, weights: str | Path, device: str = "auto", score: float = 0.3) -> None:
        self.weights = Path(weights)
        self.device = resolve_device(device)
        ckpt = load_checkpoint(str(self.weights))
        self.model, self.classes = detector_from_checkpoint(ckpt, str(self.weights))
        self.model.to(self.device).eval()
        self.score = score
        self.config = ckpt.get("config", {})

    @torch.inference_mode()
    def predict_array(self, img: np.ndarray, image_path: str | Path = "image") -> VocRecord:
        out = self.model([to_tensor(img).to(self.device)])[0]
        h, w = img.shape[:2]
        return VocRecord(Path(image_path), w, h, tuple(detections_from_output(out, self.classes, self.score)))

    def predict(self, path: str | Path) -> VocRecord:
        return self.predict_array(read_rgb(path), path)
