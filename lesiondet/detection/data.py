"""Torch datasets over VOC records, with bbox-safe albumentations augmentation."""
from __future__ import annotations

import random
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping, Sequence

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from lesiondet.camera import camera_tile
from lesiondet.config import check_section, defaults
from lesiondet.detection.scale import retina_factor_of, scale_record, to_working, working_tiling
from lesiondet.detection.slicing import (
    big_enough,
    crop_objects,
    low_res_fov,
    sample_window,
    samples_per_image,
    should_slice,
    window_size,
)
from lesiondet.errors import ImageError
from lesiondet.images import read_rgb, shrink
from lesiondet.io.labels import LabelMap
from lesiondet.io.voc import VocObject, VocRecord

DEFAULT_AUGMENT: dict[str, Any] = defaults("augment")


def train_transforms(aug: Mapping[str, Any] | None = None) -> A.Compose:
    """Geometric and photometric augmentation that moves the boxes with the pixels.

    No arbitrary rotation: rotating a 3-px microaneurysm box inflates it more
    than the lesion moves.
    """
    a = check_section("augment", aug)
    return A.Compose(
        [
            A.HorizontalFlip(p=a["hflip"]),
            A.VerticalFlip(p=a["vflip"]),
            A.Affine(scale=tuple(a["scale"]), translate_percent=(-0.05, 0.05), p=0.5, border_mode=0),
            A.RandomBrightnessContrast(a["brightness_contrast"], a["brightness_contrast"], p=0.5),
            A.HueSaturationValue(5, 10, 10, p=a["hue_saturation"]),
            camera_tile(a["camera"]),
        ],
        bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"],
                                 min_visibility=a["min_visibility"], clip=True),
    )


def to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255.0)


def class_mask(annotated: Sequence[str] | None, label_map: LabelMap) -> torch.Tensor:
    """Which model outputs an image's labels speak for: background plus the classes its source annotated.

    When datasets with different label sets train together, an HEI-MED image
    (no optic-disc boxes) must not teach "no optic disc here"; the detector's
    classification loss ignores the outputs this mask leaves out.
    """
    if annotated is None:
        return torch.ones(label_map.num_classes, dtype=torch.bool)
    m = torch.zeros(label_map.num_classes, dtype=torch.bool)
    m[0] = True
    for c in annotated:
        if c in label_map.classes:
            m[label_map.index(c)] = True
    return m


class DetectionDataset(Dataset):
    """``(image, target)`` pairs as torchvision detection models take them.

    Boxes are 0-based ``(x0, y0, x1, y1)``; labels are 1-based indices into
    ``label_map``. Images without objects yield empty targets and train as
    background. ``difficult`` objects are dropped unless ``use_difficult``.
    ``annotated`` maps a record's ``source`` to the classes that source labels
    (see ``class_mask``); sources missing from it count as fully annotated.
    """

    def __init__(self, records: Sequence[VocRecord], label_map: LabelMap, transforms: A.Compose | None = None,
                 use_difficult: bool = False, annotated: Mapping[str, Sequence[str]] | None = None) -> None:
        self.records = list(records)
        self.label_map = label_map
        self.transforms = transforms
        self.use_difficult = use_difficult
        self.masks = {src: class_mask(cls, label_map) for src, cls in (annotated or {}).items()}
        self._all = class_mask(None, label_map)

    def __len__(self) -> int:
        return len(self.records)

    def objects(self, i: int) -> list[VocObject]:
        return [o for o in self.records[i].objects if self.use_difficult or not o.difficult]

    def image(self, i: int) -> np.ndarray:
        rec = self.records[i]
        img = read_rgb(rec.image_path)
        if img.shape[1] != rec.width or img.shape[0] != rec.height:
            raise ImageError(rec.image_path, f"image is {img.shape[1]}x{img.shape[0]} but {rec.xml_path} "
                             f"says {rec.width}x{rec.height}", "fix <size> in the XML or re-annotate the image")
        return img

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        objs = self.objects(i)
        boxes = np.array([o.box for o in objs], np.float32).reshape(-1, 4)
        labels = np.array([self.label_map.index(o.label) for o in objs], np.int64)
        return self.image(i), boxes, labels

    def target(self, i: int, img: np.ndarray, boxes: np.ndarray, labels: np.ndarray
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.transforms is not None:
            out = self.transforms(image=img, bboxes=boxes, labels=labels)
            img = out["image"]
            boxes = np.asarray(out["bboxes"], np.float32).reshape(-1, 4)
            labels = np.asarray(out["labels"], np.int64)
        target = {"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels),
                  "image_id": torch.tensor(i), "class_mask": self.masks.get(self.records[i].source, self._all)}
        return to_tensor(img), target

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.target(i, *self.load(i))


class TileDataset(DetectionDataset):
    """Training tiles cut from native-resolution images (see ``lesiondet.tiling``).

    One epoch holds ``samples_per_image`` samples per image. Each sample is the
    whole image shrunk to the tile (``full_fraction``, and always for images
    that fit in a tile), a tile centred on a lesion (``pos_fraction``), or a
    random tile inside the field of view. Decoded images are cached, so a
    4288x2848 photograph is decoded once per data-loader process, not per tile.
    """

    def __init__(self, records: Sequence[VocRecord], label_map: LabelMap, tiling: Mapping[str, Any],
                 transforms: A.Compose | None = None, use_difficult: bool = False,
                 annotated: Mapping[str, Sequence[str]] | None = None) -> None:
        super().__init__(records, label_map, transforms, use_difficult, annotated)
        # With a retina scale each photograph is resized once to its working size; tiles are cut there.
        self.factors = [retina_factor_of(r.image_path, tiling) for r in self.records] \
            if tiling.get("retina_px") else None
        self.tiling = working_tiling(tiling)
        self.win = window_size(self.tiling)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_bytes = 0
        self._fov: dict[int, tuple[np.ndarray, float]] = {}
        # Sample k of an epoch belongs to image index[k]: big photographs give more tiles than small ones.
        counts = [samples_per_image(*self.size(i), self.tiling) for i in range(len(self.records))]
        self.index = (balanced_index([r.source for r in self.records], counts)
                      if self.tiling.get("balance_sources") else [i for i, n in enumerate(counts) for _ in range(n)])

    def __len__(self) -> int:
        return len(self.index)

    def size(self, i: int) -> tuple[int, int]:
        """Width and height of image ``i`` as tiles are cut from it (its working size under a retina scale)."""
        r = self.records[i]
        if self.factors is None:
            return r.width, r.height
        return max(1, round(r.width * self.factors[i])), max(1, round(r.height * self.factors[i]))

    def objects(self, i: int) -> list[VocObject]:
        objs = super().objects(i)
        if self.factors is None:
            return objs
        r, (w, h) = self.records[i], self.size(i)
        return list(scale_record(r.with_objects(objs), w, h, w / r.width, h / r.height).objects)

    def image(self, i: int) -> np.ndarray:
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        img = super().image(i)
        if self.factors is not None:
            img = to_working(img, self.factors[i])[0]
        self._cache[i] = img
        self._cache_bytes += img.nbytes
        while self._cache_bytes > self.tiling["cache_mb"] * 2**20 and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cache_bytes -= old.nbytes
        return img

    def __getitem__(self, k: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        t, i = self.tiling, self.index[k]
        img, objs = self.image(i), self.objects(i)
        width, height = self.size(i)
        names = [o.label for o in objs]
        sliced = should_slice(width, height, t)
        if not sliced or random.random() < t["full_fraction"]:
            small, s = shrink(img, t["tile"])
            boxes = np.array([o.box for o in objs], np.float32).reshape(-1, 4) * s
            if sliced:  # lesions shrunk to a pixel or two are the tiles' job
                big = big_enough(boxes, t["full_min_px"])
                boxes, names = boxes[big], [n for n, b in zip(names, big) if b]
            return self.target(i, np.ascontiguousarray(small), boxes, self._indices(names))
        mode = "positive" if objs and random.random() < t["pos_fraction"] else "random"
        if mode == "random" and i not in self._fov:
            self._fov[i] = low_res_fov(img)
        window = sample_window(objs, width, height, self.win, mode, random, self._fov.get(i), t["fov_min"])
        boxes, names = crop_objects(objs, window, t["min_visibility"])
        x0, y0, x1, y1 = window
        return self.target(i, np.ascontiguousarray(img[y0:y1, x0:x1]), boxes, self._indices(names))

    def _indices(self, names: Sequence[str]) -> np.ndarray:
        return np.array([self.label_map.index(n) for n in names], np.int64)


def balanced_index(sources: Sequence[str], counts: Sequence[int], seed: int = 0) -> list[int]:
    """An epoch's image indices with the same number of samples from every source.

    Left to ``counts`` alone, the set with the biggest photographs takes the epoch: 39 IDRiD
    photographs slice into more tiles than 387 CODRAS ones. Each source gets an equal share of
    the same total, every image at least once; within a source, images keep their relative
    weights (a big photograph still gives more tiles), repeated or subsampled to the share.
    """
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(sources):
        groups.setdefault(s, []).append(i)
    share = sum(counts) // max(1, len(groups))
    rng = random.Random(seed)
    out: list[int] = []
    for members in groups.values():
        first = rng.sample(members, len(members))  # every image once ...
        rest = [i for i in members for _ in range(counts[i] - 1)]
        rng.shuffle(rest)  # ... then its further samples, in a seeded order
        pool = first + rest
        n = max(share, len(members))
        out += [pool[k % len(pool)] for k in range(n)]
    return out


def check_images(records: Sequence[VocRecord]) -> None:
    """Decode every image before training starts, so a bad file fails now, not in hour three."""
    from lesiondet.progress import progress

    for r in progress(records, desc="checking images", enabled=len(records) > 50):
        # A full decode: a truncated JPEG has a good header and would fail only inside the data loader.
        h, w = read_rgb(r.image_path).shape[:2]
        if (w, h) != (r.width, r.height):
            raise ImageError(r.image_path, f"image is {w}x{h} but {r.xml_path} says {r.width}x{r.height}",
                             "fix <size> in the XML or re-annotate the image")


def collate(batch):
    return tuple(zip(*batch))


def photograph_of(record: VocRecord) -> str:
    """The photograph a record is of: its image file (labelImg folders carry no patient ids, and two
    sets may both have a 0001.jpg)."""
    return str(Path(record.image_path).resolve())


def check_photographs_disjoint(train: Sequence[VocRecord], val: Sequence[VocRecord], where: str | Path) -> None:
    """A ``--val`` folder holding a photograph the training folders also hold is refused."""
    from lesiondet.io.splits import check_disjoint

    check_disjoint([photograph_of(r) for r in train], [photograph_of(r) for r in val], where, "annotations",
                   "photograph")


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
