"""Detector training: the task the engine runs (model, tiles, loss, per-epoch mAP).

The loop itself (schedule, AMP, DDP, checkpoints, resume) is ``lesiondet.engine``;
this module supplies the Faster R-CNN, the training tiles with their
augmentation, the loss torchvision computes, and validation mAP50 on a fixed
set of images and tiles.
"""
from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from lesiondet import __version__
from lesiondet.config import DEFAULT_TRAIN
from lesiondet.detection.data import TileDataset, collate, train_transforms
from lesiondet.detection.metrics import coco_map, merge_partial
from lesiondet.detection.model import CHECKPOINT_FORMAT, build_detector, load_start, resolve_arch
from lesiondet.detection.predict import predict_records, predict_tiles, tile_windows
from lesiondet.detection.scale import retina_factor_of, scale_record, to_working, working_tiling
from lesiondet.detection.slicing import auto_zoom, objects_in, resolve_tiling, should_slice, val_windows
from lesiondet.engine.rng import seed_augment, seed_everything
from lesiondet.engine.trainer import LoopConfig, Phase, Trainer
from lesiondet.images import read_rgb
from lesiondet.io.labels import LabelMap
from lesiondet.io.voc import VocRecord


def fitness(metrics: dict) -> float:
    """What 'best' means: validation mAP50 (IoU 0.5 suits boxes a few pixels wide)."""
    v = metrics.get("mAP50", float("nan"))
    return -1.0 if v is None or math.isnan(v) else float(v)


class FitnessSet:
    """The per-epoch validation set: fixed, so epochs are compared on equal terms.

    Images that fit in a tile are scored whole (``val_max_images`` of them, spread
    over the list). Images that inference would slice are scored on a fixed,
    seeded set of their inference tiles, ``val_max_tiles`` in all, most holding
    a lesion: three 12-megapixel IDRiD photographs are ~230 tiles, minutes per
    epoch on a CPU, while 64 tiles rank checkpoints as well in a fraction of it.
    ``val_max_tiles: 0`` scores sliced images whole, as ``lesiondet eval`` does.
    """

    def __init__(self, records: Sequence[VocRecord], tiling: Mapping[str, Any] | None, max_images: int,
                 max_tiles: int, seed: int = 0) -> None:
        self.whole: list[VocRecord] = []
        sliced: list[VocRecord] = []
        work = working_tiling(tiling) if tiling is not None else None
        factors: dict[Path, float | None] = {}
        for r in val_subset(records, max_images):
            f = factors[r.image_path] = retina_factor_of(r.image_path, tiling) if tiling is not None else None
            w, h = (r.width, r.height) if f is None else (round(r.width * f), round(r.height * f))
            tiled = tiling is not None and max_tiles > 0 and should_slice(w, h, work)
            (sliced if tiled else self.whole).append(r)
        sliced = val_subset(sliced, max_tiles)  # at least one tile per image, so no more images than tiles
        self.tiles: list[tuple[np.ndarray, VocRecord]] = []
        rng = random.Random(seed)
        per_image = max(1, max_tiles // max(1, len(sliced)))
        for r in sliced:
            img = read_rgb(r.image_path)
            if factors[r.image_path] is not None:  # tiles of the working image, as inference cuts them
                img, sx, sy = to_working(img, factors[r.image_path])
                r = scale_record(r, img.shape[1], img.shape[0], sx, sy)
            for x0, y0, x1, y1 in val_windows(r.objects, tile_windows(img, work), per_image, rng):
                objs = objects_in(r.objects, (x0, y0, x1, y1), 0.5)
                crop = VocRecord(Path(f"{r.stem}@{x0}_{y0}{r.image_path.suffix}"), x1 - x0, y1 - y0, tuple(objs))
                self.tiles.append((np.ascontiguousarray(img[y0:y1, x0:x1]), crop))

    def describe(self) -> str:
        return " + ".join(s for s in (self.whole and f"{len(self.whole)} images",
                                      self.tiles and f"{len(self.tiles)} tiles of sliced images") if s) or "nothing"

    def evaluate(self, model: torch.nn.Module, classes: Sequence[str], device: torch.device, score: float,
                 tiling: Mapping[str, Any] | None, partial: Mapping[str, Sequence[str]] | None = None) -> dict:
        preds = predict_records(model, self.whole, classes, device, score=score, tiling=tiling)
        if self.tiles:
            preds += predict_tiles(model, self.tiles, classes, device, score, tiling)
        gt = self.whole + [rec for _, rec in self.tiles]
        preds, names, _ = merge_partial(gt, preds, classes, partial or {})
        return coco_map(gt, preds, names)


def val_subset(records: Sequence[VocRecord], n: int) -> list[VocRecord]:
    """``n`` records spread evenly over ``records`` (all when ``n`` is 0): the per-epoch fitness set."""
    records = list(records)
    if n <= 0 or n >= len(records):
        return records
    return [records[round(i * (len(records) - 1) / (n - 1))] for i in range(n)] if n > 1 else records[:1]


def resolve_tiling_for(cfg: dict[str, Any], records: Sequence[VocRecord]) -> dict[str, Any]:
    """The run's tiling with ``zoom: auto`` turned into a number from the training boxes."""
    tiling = resolve_tiling(cfg.get("tiling"))
    if tiling["zoom"] == "auto":
        tiling["zoom"] = round(auto_zoom(records, tiling["zoom_target_px"], tiling["max_zoom"]), 3)
    return tiling


class DetectionTask:
    """The detector as the engine sees it: network, tiles, torchvision's losses, mAP50 on a fixed set."""

    def __init__(self, train_records: Sequence[VocRecord], val_records: Sequence[VocRecord], label_map: LabelMap,
                 cfg: dict[str, Any], annotated: Mapping[str, Sequence[str]] | None, fresh: bool,
                 main: bool = True, rank: int = 0, log: Callable[[str], None] = print) -> None:
        self.tcfg = {**DEFAULT_TRAIN, **cfg.get("train", {})}
        # Resolved once (zoom: auto becomes a number) and kept in the config, so a resumed run cuts the same tiles.
        self.tiling = cfg.setdefault("tiling_resolved", resolve_tiling_for(cfg, train_records))
        # Tiles and the whole-image view are both fed at the tile size.
        self.arch = resolve_arch(cfg.get("model"))
        self.classes = list(label_map.classes)
        self.partial = dict(label_map.partial)
        self.model = build_detector(len(self.classes) + 1, self.arch, load_pretrained=fresh,
                                    input_size=self.tiling["tile"], masked=True,
                                    members=label_map.member_matrix())
        start = cfg.get("start")
        if fresh and start:  # a resumed run has its own weights
            from lesiondet.engine.checkpoint import load_checkpoint

            kept = load_start(self.model, load_checkpoint(start), self.classes, str(start))
            if main:
                log(f"starting from the weights of {start} ({kept})")
        self.augment = train_transforms(cfg.get("augment"))
        seed_augment(self.augment, int(self.tcfg["seed"]) + rank)
        self.dataset = TileDataset(train_records, label_map, self.tiling, self.augment, self.tcfg["use_difficult"],
                                   annotated)
        self.val_fit = FitnessSet(val_records, self.tiling, int(self.tcfg["val_max_images"]),
                                  int(self.tcfg["val_max_tiles"]), int(self.tcfg["seed"])) if main else None
        if main:
            log(f"per-epoch validation on {self.val_fit.describe()}")
        self._meta = {"format": CHECKPOINT_FORMAT, "lesiondet_version": __version__, "classes": self.classes,
                      "label_map": label_map.to_dict(),
                      "arch": {**self.arch, "min_size": self.tiling["tile"], "max_size": self.tiling["tile"]},
                      "tiling": self.tiling, "config": cfg,
                      "annotated": {k: list(v) for k, v in (annotated or {}).items()}}

    def phases(self) -> list[Phase]:
        t = self.tcfg
        return [Phase("train", int(t["epochs"]), float(t["lr"]), None, "sgd", int(t["warmup_iters"]))]

    def train_dataset(self) -> TileDataset:
        return self.dataset

    def loss(self, model: torch.nn.Module, batch: Any, device: torch.device) -> dict[str, torch.Tensor]:
        images, targets = batch
        images = [im.to(device, non_blocking=True) for im in images]
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        return model(images, targets)

    def validate(self, model: torch.nn.Module, device: torch.device) -> dict[str, Any]:
        return self.val_fit.evaluate(model, self.classes, device, self.tcfg["val_score"], self.tiling, self.partial)

    def fitness(self, metrics: Mapping[str, Any]) -> float:
        return fitness(dict(metrics))

    def history_row(self, metrics: Mapping[str, Any]) -> dict[str, float]:
        return {"val_mAP": metrics["mAP"], "val_mAP50": metrics["mAP50"],
                **{f"val_AP50_{c}": m["AP50"] for c, m in metrics["per_class"].items()}}

    def meta(self) -> dict[str, Any]:
        return self._meta


def train(train_records: Sequence[VocRecord], val_records: Sequence[VocRecord], label_map: LabelMap,
          cfg: dict[str, Any], out_dir: str | Path, device: torch.device, *, resume: str | Path | None = None,
          time_limit_min: float | None = None, log: Callable[[str], None] = print,
          annotated: dict[str, Sequence[str]] | None = None, trust_legacy: bool = False,
          on_best: Callable[[Path, Mapping[str, Any], int], None] | None = None) -> dict:
    """Train a detector; returns a summary with the run folder, best fitness and epochs done.

    ``out_dir`` must exist (the CLI makes a fresh numbered one). With ``resume``,
    training continues from that ``last.pt`` with the state it saved.
    ``annotated`` maps a record ``source`` to the classes it labels, for
    training on datasets with different label sets (see ``data.class_mask``).
    ``cfg["tiling"]`` sets how images are cut into tiles (``slicing.DEFAULT_TILING``).
    ``on_best(run_dir, metrics, epoch)`` is called when an epoch is the best so far (the API draws
    ``pr_curves.png`` with it: detection returns data, reporting draws).
    """
    from lesiondet.device import init_distributed

    rank, _, _ = init_distributed(device)
    seed_everything(int({**DEFAULT_TRAIN, **cfg.get("train", {})}["seed"]) + rank)  # the network's initial weights
    task = DetectionTask(train_records, val_records, label_map, cfg, annotated, fresh=resume is None,
                         main=rank == 0, rank=rank, log=log)
    t = task.tcfg
    loop = LoopConfig(batch=int(t["batch"]), momentum=float(t["momentum"]), weight_decay=float(t["weight_decay"]),
                      clip_grad=float(t["clip_grad"] or 0), workers=int(t["workers"]), amp=bool(t["amp"]),
                      seed=int(t["seed"]), patience=int(t["patience"]), collate=collate, on_best=on_best,
                      augment=task.augment)
    return Trainer(task, loop, out_dir, device, time_limit_min=time_limit_min, log=log, config=cfg).fit(resume, trust_legacy)
