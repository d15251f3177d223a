"""Torch datasets over VOC records, with bbox-safe albumentations augmentation."""
from __future__ import annotations

import random
from typing import Any, Mapping, Sequence

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import ImageError
from .images import read_rgb
from .labels import LabelMap
from .voc import VocRecord

DEFAULT_AUGMENT: dict[str, Any] = {
    "hflip": 0.5,
    "vflip": 0.5,  # fundus anatomy is near mirror-symmetric top/bottom
    "scale": [0.85, 1.15],
    "brightness_contrast": 0.2,
    "hue_saturation": 0.3,
    "min_visibility": 0.3,
}


def train_transforms(aug: Mapping[str, Any] | None = None) -> A.Compose:
    """Geometric and photometric augmentation that moves the boxes with the pixels.

    No arbitrary rotation: rotating a 3-px microaneurysm box inflates it more
    than the lesion moves.
    """
    a = {**DEFAULT_AUGMENT, **(aug or {})}
    return A.Compose(
        [
            A.HorizontalFlip(p=a["hflip"]),
            A.VerticalFlip(p=a["vflip"]),
            A.Affine(scale=tuple(a["scale"]), translate_percent=(-0.05, 0.05), p=0.5, border_mode=0),
            A.RandomBrightnessContrast(a["brightness_contrast"], a["brightness_contrast"], p=0.5),
            A.HueSaturationValue(5, 10, 10, p=a["hue_saturation"]),
        ],
        bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"],
                                 min_visibility=a["min_visibility"], clip=True),
    )


def to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255.0)


class DetectionDataset(Dataset):
    """``(image, target)`` pairs as torchvision detection models take them.

    Boxes are 0-based ``(x0, y0, x1, y1)``; labels are 1-based indices into
    ``label_map``. Images without objects yield empty targets and train as
    background. ``difficult`` objects are dropped unless ``use_difficult``.
    """

    def __init__(self, records: Sequence[VocRecord], label_map: LabelMap, transforms: A.Compose | None = None,
                 use_difficult: bool = False) -> None:
        self.records = list(records)
        self.label_map = label_map
        self.transforms = transforms
        self.use_difficult = use_difficult

    def __len__(self) -> int:
        return len(self.records)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rec = self.records[i]
        img = read_rgb(rec.image_path)
        if img.shape[1] != rec.width or img.shape[0] != rec.height:
            raise ImageError(rec.image_path, f"image is {img.shape[1]}x{img.shape[0]} but {rec.xml_path} "
                             f"says {rec.width}x{rec.height}", "fix <size> in the XML or re-annotate the image")
        objs = [o for o in rec.objects if self.use_difficult or not o.difficult]
        boxes = np.array([o.box for o in objs], np.float32).reshape(-1, 4)
        labels = np.array([self.label_map.index(o.label) for o in objs], np.int64)
        return img, boxes, labels

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        img, boxes, labels = self.load(i)
        if self.transforms is not None:
            out = self.transforms(image=img, bboxes=boxes, labels=labels)
            img = out["image"]
            boxes = np.asarray(out["bboxes"], np.float32).reshape(-1, 4)
            labels = np.asarray(out["labels"], np.int64)
        target = {"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels),
                  "image_id": torch.tensor(i)}
        return to_tensor(img), target


def collate(batch):
    return tuple(zip(*batch))


def split_records(records: Sequence[VocRecord], val_fraction: float, seed: int = 0
                  ) -> tuple[list[VocRecord], list[VocRecord]]:
    """Deterministic random split; at least one record on each side."""
    if not 0 < val_fraction < 1:
        raise ValueError("val_fraction must be between 0 and 1")
    idx = list(range(len(records)))
    random.Random(seed).shuffle(idx)
    n_val = min(len(idx) - 1, max(1, round(len(idx) * val_fraction)))
    val = sorted(idx[:n_val])
    train = sorted(idx[n_val:])
    return [records[i] for i in train], [records[i] for i in val]
