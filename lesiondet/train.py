"""The training loop, in the spirit of torchvision's ``references/detection``.

SGD with warm-up and a cosine schedule, gradient clipping, AMP on CUDA, DDP
under ``torchrun``, validation mAP after every epoch, and atomic ``last.pt`` /
``best.pt`` in the run folder together with ``metrics.csv`` and ``curves.png``.
``last.pt`` holds everything needed to resume: optimizer, scheduler, scaler,
epoch, RNG states and the metric history.
"""
from __future__ import annotations

import math
import random
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from . import __version__
from .config import DEFAULT_TRAIN
from .data import TileDataset, augment_state, collate, seed_augment, set_augment_state, train_transforms
from .device import init_distributed
from .evaluate import coco_map
from .fileio import save_torch
from .images import read_rgb
from .infer import predict_records, predict_tiles, tile_windows
from .labels import LabelMap
from .model import CHECKPOINT_FORMAT, build_detector, resolve_arch
from .progress import progress
from .report import plot_curves, plot_pr_curves, write_metrics_csv
from .tiling import auto_zoom, objects_in, resolve_tiling, should_slice, val_windows
from .voc import VocRecord


def fitness(metrics: dict) -> float:
    """What 'best' means: validation mAP50 (IoU 0.5 suits boxes a few pixels wide)."""
    v = metrics.get("mAP50", float("nan"))
    return -1.0 if v is None or math.isnan(v) else float(v)


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _seed_worker(worker_id: int) -> None:
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)
    info = torch.utils.data.get_worker_info()
    if info is not None and getattr(info.dataset, "transforms", None) is not None:
        seed_augment(info.dataset.transforms, s)


class Schedule:
    """Linear warm-up, then cosine decay to 1% over whichever runs out first: iterations or time.

    With ``--time-limit`` the decay follows the clock (as Ultralytics' ``time=``
    does), so a run cut short by its budget still ends at a low learning rate.
    """

    def __init__(self, warmup: int, total: int) -> None:
        self.warmup, self.total = warmup, total
        self.time_progress = 0.0  # share of the time budget used; set by the loop

    def __call__(self, it: int) -> float:
        if it < self.warmup:
            return 0.001 + (1 - 0.001) * it / self.warmup
        progress = max((it - self.warmup) / max(1, self.total - self.warmup), self.time_progress)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress))) * 0.99 + 0.01


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
        for r in val_subset(records, max_images):
            tiled = tiling is not None and max_tiles > 0 and should_slice(r.width, r.height, tiling)
            (sliced if tiled else self.whole).append(r)
        sliced = val_subset(sliced, max_tiles)  # at least one tile per image, so no more images than tiles
        self.tiles: list[tuple[np.ndarray, VocRecord]] = []
        rng = random.Random(seed)
        per_image = max(1, max_tiles // max(1, len(sliced)))
        for r in sliced:
            img = read_rgb(r.image_path)
            for x0, y0, x1, y1 in val_windows(r.objects, tile_windows(img, tiling), per_image, rng):
                objs = objects_in(r.objects, (x0, y0, x1, y1), 0.5)
                crop = VocRecord(Path(f"{r.stem}@{x0}_{y0}{r.image_path.suffix}"), x1 - x0, y1 - y0, tuple(objs))
                self.tiles.append((np.ascontiguousarray(img[y0:y1, x0:x1]), crop))

    def describe(self) -> str:
        return " + ".join(s for s in (self.whole and f"{len(self.whole)} images",
                                      self.tiles and f"{len(self.tiles)} tiles of sliced images") if s) or "nothing"

    def evaluate(self, model: torch.nn.Module, classes: Sequence[str], device: torch.device, score: float,
                 tiling: Mapping[str, Any] | None) -> dict:
        preds = predict_records(model, self.whole, classes, device, score=score, tiling=tiling)
        if self.tiles:
            preds += predict_tiles(model, self.tiles, classes, device, score, tiling)
        return coco_map(self.whole + [rec for _, rec in self.tiles], preds, classes)


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


def train(train_records: Sequence[VocRecord], val_records: Sequence[VocRecord], label_map: LabelMap,
          cfg: dict[str, Any], out_dir: str | Path, device: torch.device, *, resume: str | Path | None = None,
          time_limit_min: float | None = None, log: Callable[[str], None] = print,
          annotated: dict[str, Sequence[str]] | None = None) -> dict:
    """Train a detector; returns a summary with the run folder, best fitness and epochs done.

    ``out_dir`` must exist (the CLI makes a fresh numbered one). With ``resume``,
    training continues from that ``last.pt`` with the state it saved.
    ``annotated`` maps a record ``source`` to the classes it labels, for
    training on datasets with different label sets (see ``data.class_mask``).
    ``cfg["tiling"]`` sets how images are cut into tiles (``tiling.DEFAULT_TILING``).
    """
    tcfg = {**DEFAULT_TRAIN, **cfg.get("train", {})}
    # Resolved once (zoom: auto becomes a number) and kept in the config, so a resumed run cuts the same tiles.
    tiling = cfg.setdefault("tiling_resolved", resolve_tiling_for(cfg, train_records))
    # Tiles and the whole-image view are both fed at the tile size; the transform must not resize them.
    arch = resolve_arch({**(cfg.get("model") or {}), "min_size": tiling["tile"], "max_size": tiling["tile"]})
    rank, world, device = init_distributed(device)
    main = rank == 0
    out_dir = Path(out_dir)
    _seed(int(tcfg["seed"]) + rank)

    classes = list(label_map.classes)
    model = build_detector(len(classes) + 1, arch, load_pretrained=resume is None).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=tcfg["lr"], momentum=tcfg["momentum"], weight_decay=tcfg["weight_decay"])

    augment = train_transforms(cfg.get("augment"))
    seed_augment(augment, int(tcfg["seed"]) + rank)
    ds = TileDataset(train_records, label_map, tiling, augment, tcfg["use_difficult"], annotated)
    val_fit = FitnessSet(val_records, tiling, int(tcfg["val_max_images"]), int(tcfg["val_max_tiles"]),
                         int(tcfg["seed"])) if main else None
    if main:
        log(f"per-epoch validation on {val_fit.describe()}")
    sampler = DistributedSampler(ds, world, rank, shuffle=True, seed=tcfg["seed"]) if world > 1 else None
    gen = torch.Generator().manual_seed(int(tcfg["seed"]))
    loader = DataLoader(ds, batch_size=tcfg["batch"], shuffle=sampler is None, sampler=sampler,
                        num_workers=tcfg["workers"], collate_fn=collate, worker_init_fn=_seed_worker,
                        generator=gen, persistent_workers=tcfg["workers"] > 0, drop_last=len(ds) > tcfg["batch"])
    epochs = int(tcfg["epochs"])
    total_iters = epochs * max(1, len(loader))
    schedule = Schedule(min(tcfg["warmup_iters"], total_iters // 2 or 1), total_iters)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    use_amp = bool(tcfg["amp"]) and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    start_epoch, best, history = 0, -math.inf, []
    if resume is not None:
        from .model import load_checkpoint

        ck = load_checkpoint(str(resume))
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        start_epoch, best, history = ck["epoch"] + 1, ck["best_fitness"], list(ck["history"])
        gen.set_state(ck["loader_generator"])
        _set_rng_state(ck["rng"])
        if "augment_rng" in ck:
            set_augment_state(augment, ck["augment_rng"])
        if main:
            log(f"resumed from {resume} at epoch {start_epoch + 1}/{epochs}")

    ddp_model = model
    if world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    meta = {"format": CHECKPOINT_FORMAT, "lesiondet_version": __version__, "classes": classes,
            "label_map": label_map.to_dict(), "arch": arch, "tiling": tiling, "config": cfg,
            "annotated": {k: list(v) for k, v in (annotated or {}).items()}}
    # A resumed run continues its clock: --time-limit covers the whole run, not each attempt.
    t_start = time.monotonic() - (history[-1]["time_s"] if history else 0.0)
    budget = None if time_limit_min is None else time_limit_min * 60.0
    stopped_early = False
    val_s = 0.0  # how long the last validation took: training stops early enough to fit one more
    epoch = start_epoch - 1
    for epoch in range(start_epoch, epochs):
        if budget is not None and history and _should_stop(time.monotonic() - t_start + val_s > budget, world,
                                                          device):
            epoch -= 1  # no room for another epoch and its validation
            stopped_early = True
            if main:
                log(f"time limit of {time_limit_min:g} min leaves no room for epoch {epoch + 2}; "
                    f"best.pt and last.pt are in {out_dir}")
            break
        if sampler is not None:
            sampler.set_epoch(epoch)
        ddp_model.train()
        sums: dict[str, float] = {}
        n = 0
        bar = progress(loader, desc=f"epoch {epoch + 1}/{epochs}", enabled=main)
        for images, targets in bar:
            images = [im.to(device, non_blocking=True) for im in images]
            targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                losses = ddp_model(images, targets)
                loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at epoch {epoch + 1}; "
                                         "lower train.lr in the config")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if tcfg["clip_grad"]:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(params, tcfg["clip_grad"])
            scaler.step(opt)
            scaler.update()
            if budget is not None:
                schedule.time_progress = (time.monotonic() - t_start) / budget
            sched.step()
            n += 1
            for k, v in {"loss": loss, **losses}.items():
                sums[k] = sums.get(k, 0.0) + v.item()
            bar.set_postfix(loss=f"{sums['loss'] / n:.3f}", lr=f"{opt.param_groups[0]['lr']:.4f}")
            if budget is not None and _should_stop(time.monotonic() - t_start + val_s > budget, world, device):
                stopped_early = True
                break
        bar.close()

        if main:
            t_val = time.monotonic()
            metrics = val_fit.evaluate(model, classes, device, tcfg["val_score"], tiling)
            val_s = time.monotonic() - t_val
            row = {"epoch": epoch + 1, "time_s": round(time.monotonic() - t_start, 1),
                   "lr": opt.param_groups[0]["lr"], **{k: v / max(1, n) for k, v in sums.items()},
                   "val_mAP": metrics["mAP"], "val_mAP50": metrics["mAP50"],
                   **{f"val_AP50_{c}": m["AP50"] for c, m in metrics["per_class"].items()}}
            history.append(row)
            fit = fitness(metrics)
            is_best = fit > best
            best = max(best, fit)
            state = {**meta, "model": model.state_dict(), "epoch": epoch, "metrics": metrics,
                     "best_fitness": best}
            if is_best:
                save_torch(out_dir / "best.pt", state)
                plot_pr_curves(out_dir / "pr_curves.png", metrics,
                               f"validation PR at IoU 0.5, epoch {epoch + 1} (best.pt): mAP50 {metrics['mAP50']:.3f}")
            save_torch(out_dir / "last.pt", {
                **state, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "scaler": scaler.state_dict(), "rng": _rng_state(), "loader_generator": gen.get_state(),
                "augment_rng": augment_state(augment),
                "history": history, "stopped_early": stopped_early})
            write_metrics_csv(out_dir / "metrics.csv", history)
            plot_curves(out_dir / "curves.png", history)
            log(f"epoch {epoch + 1}/{epochs}  loss {row.get('loss', float('nan')):.3f}  "
                f"val mAP {metrics['mAP']:.3f}  mAP50 {metrics['mAP50']:.3f}" + ("  *best*" if is_best else ""))
        if world > 1:
            torch.distributed.barrier()
        if stopped_early:
            if main:
                log(f"time limit of {time_limit_min:g} min reached after epoch {epoch + 1}; "
                    f"best.pt and last.pt are in {out_dir}")
            break
    return {"out_dir": str(out_dir), "best_fitness": best, "epochs_done": epoch + 1,
            "stopped_early": stopped_early, "history": history}


def _should_stop(local: bool, world: int, device: torch.device) -> bool:
    """Every rank stops together, or DDP would hang waiting for the one that stopped."""
    if world == 1:
        return local
    flag = torch.tensor([1.0 if local else 0.0], device=device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return bool(flag.item())
