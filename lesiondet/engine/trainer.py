"""One training loop for every model, in the spirit of torchvision's ``references/detection``.

A task (``lesiondet.engine.Task``) supplies its network, training data, loss and
validation metric; the loop owns the rest: phases (e.g. head first, then
everything), SGD or AdamW, linear warm-up and a cosine decay that follows the
clock under ``--time-limit``, gradient clipping, AMP on CUDA, DDP under
``torchrun``, early stopping, atomic ``best.pt``/``last.pt``, ``metrics.csv``,
``curves.png`` and an exact ``--resume`` (optimizer, scheduler, scaler, every
random stream and the augmentation stream).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from lesiondet.device import init_distributed
from lesiondet.engine.checkpoint import load_checkpoint, save_checkpoint
from lesiondet.engine.rng import (
    augment_state,
    rng_state,
    seed_augment,
    seed_everything,
    set_augment_state,
    set_rng_state,
)
from lesiondet.progress import progress
from lesiondet.reporting.plots import plot_curves, write_metrics_csv


@dataclass(frozen=True)
class Phase:
    """A stretch of training with its own optimizer: which parameters learn, how fast, for how long."""

    name: str
    epochs: int
    lr: float
    trainable: Callable[[torch.nn.Module], None] | None = None  # sets requires_grad before the optimizer is built
    optimizer: str = "sgd"  # sgd | adamw
    warmup_iters: int = 0


def head_then_all(cfg: Mapping[str, Any]) -> list[Phase]:
    """Transfer learning in two phases for a model with a ``body``: its head alone (body frozen) at
    ``lr_head`` for ``head_epochs``, then everything at ``lr_finetune`` for ``epochs`` (AdamW)."""
    def body(train: bool) -> Callable[[torch.nn.Module], None]:
        def set_(model: torch.nn.Module) -> None:
            for q in model.body.parameters():
                q.requires_grad_(train)
        return set_
    return [Phase("head", int(cfg["head_epochs"]), float(cfg["lr_head"]), body(False), "adamw"),
            Phase("all", int(cfg["epochs"]), float(cfg["lr_finetune"]), body(True), "adamw")]


def resample_to(min_steps: int, batch: int) -> Callable[[Dataset, torch.Generator], Sampler]:
    """A sampler factory for ``LoopConfig.sampler``: a few dozen images make one or two steps an epoch,
    so draw (with replacement) at least ``min_steps`` batches, and every image at least once otherwise."""
    def make(ds: Dataset, gen: torch.Generator) -> Sampler:
        n_draw = max(len(ds), min_steps * batch)
        return torch.utils.data.RandomSampler(ds, replacement=n_draw > len(ds), num_samples=n_draw, generator=gen)
    return make


class Task(Protocol):
    """What a model brings to the loop."""

    model: torch.nn.Module

    def phases(self) -> Sequence[Phase]: ...
    def train_dataset(self) -> Dataset: ...
    def loss(self, model: torch.nn.Module, batch: Any, device: torch.device) -> dict[str, torch.Tensor]: ...
    def validate(self, model: torch.nn.Module, device: torch.device) -> dict[str, Any]: ...
    def fitness(self, metrics: Mapping[str, Any]) -> float: ...  # higher is better
    def history_row(self, metrics: Mapping[str, Any]) -> dict[str, float]: ...
    def meta(self) -> dict[str, Any]: ...  # stored in every checkpoint beside the weights


@dataclass
class LoopConfig:
    """The loop's own settings (the ``train:`` section fills them)."""

    batch: int = 2
    momentum: float = 0.9
    weight_decay: float = 1e-4
    clip_grad: float = 0.0
    workers: int = 0
    amp: bool = True
    cpu_bf16: bool = False  # bfloat16 autocast on a CPU that has it natively (AVX512-BF16/AMX): ~1.5x per step
    seed: int = 0
    patience: int = 0  # epochs without a better fitness before stopping (0: never)
    collate: Callable | None = None
    sampler: Callable[[Dataset, torch.Generator], Sampler] | None = None  # e.g. resampling a small set
    on_best: Callable[[Path, Mapping[str, Any], int], None] | None = None
    augment: Any = None  # an albumentations Compose whose random stream the checkpoint carries


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


def _seed_worker(worker_id: int) -> None:
    import random

    import numpy as np

    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)
    info = torch.utils.data.get_worker_info()
    if info is not None and getattr(info.dataset, "transforms", None) is not None:
        seed_augment(info.dataset.transforms, s)


class Trainer:
    """Runs a ``Task`` to the end of its phases, its epochs, its time budget or its patience."""

    def __init__(self, task: Task, cfg: LoopConfig, out_dir: str | Path, device: torch.device, *,
                 time_limit_min: float | None = None, log: Callable[[str], None] = print,
                 config: Mapping[str, Any] | None = None) -> None:
        self.task, self.cfg, self.out_dir, self.log = task, cfg, Path(out_dir), log
        self.config = config  # the run's resolved configuration, recorded as config.yaml
        self.rank, self.world, self.device = init_distributed(device)
        self.main = self.rank == 0
        self.budget = None if time_limit_min is None else time_limit_min * 60.0
        self.time_limit_min = time_limit_min
        self.use_amp = bool(cfg.amp) and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        # bf16 needs no loss scaling; without native support it would be emulated, and slower than fp32
        self.use_bf16 = (bool(cfg.cpu_bf16) and self.device.type == "cpu"
                         and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()))
        self.autocast_dtype = torch.float16 if self.use_amp else torch.bfloat16
        self.gen = torch.Generator().manual_seed(int(cfg.seed))
        self.phases = list(task.phases())
        self.model = task.model.to(self.device)
        self.history: list[dict] = []
        self.best = -math.inf
        self.bad_epochs = 0
        self.val_s = 0.0  # how long the last validation took: training stops early enough to fit one more
        self.stopped_early = False

    # ----------------------------------------------------------------- set-up
    def _loader(self) -> tuple[DataLoader, Sampler | None]:
        ds, c = self.task.train_dataset(), self.cfg
        dist_sampler = DistributedSampler(ds, self.world, self.rank, shuffle=True, seed=c.seed) \
            if self.world > 1 else None
        sampler = dist_sampler or (c.sampler(ds, self.gen) if c.sampler else None)
        n = len(sampler) if sampler is not None else len(ds)
        loader = DataLoader(ds, batch_size=c.batch, shuffle=sampler is None, sampler=sampler,
                            num_workers=c.workers, collate_fn=c.collate, worker_init_fn=_seed_worker,
                            generator=self.gen, persistent_workers=c.workers > 0, drop_last=n > c.batch)
        return loader, dist_sampler

    def _optimizer(self, phase: Phase, n_iters: int):
        if phase.trainable is not None:
            phase.trainable(self.model)
        params = [p for p in self.model.parameters() if p.requires_grad]
        if phase.optimizer == "adamw":
            opt = torch.optim.AdamW(params, lr=phase.lr, weight_decay=self.cfg.weight_decay)
        else:
            opt = torch.optim.SGD(params, lr=phase.lr, momentum=self.cfg.momentum,
                                  weight_decay=self.cfg.weight_decay)
        total = phase.epochs * max(1, n_iters)
        schedule = Schedule(min(phase.warmup_iters, total // 2 or 1) if phase.warmup_iters else 0, total)
        return params, opt, schedule, torch.optim.lr_scheduler.LambdaLR(opt, schedule)

    def _restore(self, ck: Mapping[str, Any], opt, sched) -> None:
        self.model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        self.scaler.load_state_dict(ck["scaler"])
        self.best = ck["best_fitness"]
        self.bad_epochs = int(ck.get("bad_epochs", 0))
        self.gen.set_state(ck["loader_generator"])
        set_rng_state(ck["rng"])
        if self.cfg.augment is not None and "augment_rng" in ck:
            set_augment_state(self.cfg.augment, ck["augment_rng"])

    # ----------------------------------------------------------------- the loop
    def fit(self, resume: str | Path | None = None, trust_legacy: bool = False) -> dict[str, Any]:
        """Train; returns ``{"out_dir", "best_fitness", "epochs_done", "stopped_early", "history"}``."""
        seed_everything(int(self.cfg.seed) + self.rank)
        if self.main and self.config is not None:
            from lesiondet.engine.checkpoint import write_resolved

            write_resolved(self.out_dir / "config.yaml", self.config)
        loader, dist_sampler = self._loader()
        start_phase, start_epoch, ck = 0, 0, None
        if resume is not None:
            ck = load_checkpoint(resume, trust_legacy=trust_legacy)
            start_phase, start_epoch = int(ck.get("phase", 0)), int(ck["epoch"]) + 1
            self.history = list(ck["history"])
            if self.main:
                self.log(f"resumed from {resume} at epoch {start_epoch + 1}")
        # A resumed run continues its clock: --time-limit covers the whole run, not each attempt.
        self.t_start = time.monotonic() - (self.history[-1]["time_s"] if self.history else 0.0)
        ddp = self._wrap()
        epoch = start_epoch - 1
        for pi in range(start_phase, len(self.phases)):
            phase = self.phases[pi]
            params, opt, schedule, sched = self._optimizer(phase, len(loader))
            if pi == start_phase and ck is not None:
                self._restore(ck, opt, sched)  # the phase's optimizer must exist before its state is loaded
            else:
                self.bad_epochs = 0
            offset = sum(p.epochs for p in self.phases[:pi])
            first = start_epoch if pi == start_phase else offset
            for epoch in range(max(first, offset), offset + phase.epochs):
                if self._out_of_time() and self.history:
                    epoch -= 1
                    self._mark_stopped()
                    if self.main:
                        self.log(f"time limit of {self.time_limit_min:g} min leaves no room for epoch {epoch + 2}")
                    break
                if dist_sampler is not None:
                    dist_sampler.set_epoch(epoch)
                sums, n = self._train_epoch(ddp, loader, params, opt, schedule, sched, epoch, phase)
                stop = self._end_epoch(epoch, pi, phase, sums, n, opt, sched)
                if self.world > 1:
                    torch.distributed.barrier()
                if stop:
                    break
            if self.stopped_early:
                break
        if self.stopped_early and self.main and self.budget is not None:
            self.log(f"time limit of {self.time_limit_min:g} min reached; best.pt and last.pt are in {self.out_dir}")
        return {"out_dir": str(self.out_dir), "best_fitness": self.best, "epochs_done": epoch + 1,
                "stopped_early": self.stopped_early, "history": self.history}

    def _wrap(self) -> torch.nn.Module:
        if self.world == 1:
            return self.model
        return torch.nn.parallel.DistributedDataParallel(
            self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def _out_of_time(self) -> bool:
        """Every rank stops together, or DDP would hang waiting for the one that stopped."""
        local = self.budget is not None and time.monotonic() - self.t_start + self.val_s > self.budget
        if self.world == 1:
            return local
        flag = torch.tensor([1.0 if local else 0.0], device=self.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    def _train_epoch(self, ddp, loader, params, opt, schedule, sched, epoch: int, phase: Phase):
        ddp.train()
        sums: dict[str, float] = {}
        n = 0
        total = sum(p.epochs for p in self.phases)
        bar = progress(loader, desc=f"epoch {epoch + 1}/{total}", enabled=self.main)
        for batch in bar:
            with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.use_amp or self.use_bf16):
                losses = self.task.loss(ddp, batch, self.device)
                loss = losses["loss"] if "loss" in losses else sum(losses.values())
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at epoch {epoch + 1}; lower the learning rate "
                                         "in the config")
            opt.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.cfg.clip_grad:
                self.scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(params, self.cfg.clip_grad)
            self.scaler.step(opt)
            self.scaler.update()
            if self.budget is not None:
                schedule.time_progress = (time.monotonic() - self.t_start) / self.budget
            sched.step()
            n += 1
            for k, v in {"loss": loss, **{k: v for k, v in losses.items() if k != "loss"}}.items():
                sums[k] = sums.get(k, 0.0) + v.item()
            bar.set_postfix(loss=f"{sums['loss'] / n:.3f}", lr=f"{opt.param_groups[0]['lr']:.2g}")
            if self.budget is not None and self._out_of_time():
                self.stopped_early = True
                break
        bar.close()
        return sums, n

    def _end_epoch(self, epoch: int, pi: int, phase: Phase, sums, n, opt, sched) -> bool:
        """Validate, record, save; True when training should stop (time, or patience spent)."""
        metrics = None
        if self.main:
            t_val = time.monotonic()
            metrics = self.task.validate(self.model, self.device)
            self.val_s = time.monotonic() - t_val
        # no room for another epoch and its validation: say so in this epoch's last.pt
        if self.budget is not None and not self.stopped_early and self._out_of_time():
            self.stopped_early = True
        stop_for_patience = self._record(epoch, pi, phase, sums, n, opt, sched, metrics) if self.main else False
        if self.world > 1:
            flag = torch.tensor([1.0 if stop_for_patience else 0.0], device=self.device)
            torch.distributed.broadcast(flag, 0)
            stop_for_patience = bool(flag.item())
        return self.stopped_early or stop_for_patience

    def _record(self, epoch: int, pi: int, phase: Phase, sums, n, opt, sched, metrics) -> bool:
        """History row, best fitness, checkpoints and the log line; True when patience is spent."""
        row = {"epoch": epoch + 1, "phase": phase.name, "time_s": round(time.monotonic() - self.t_start, 1),
               "lr": opt.param_groups[0]["lr"], **{k: v / max(1, n) for k, v in sums.items()},
               **self.task.history_row(metrics)}
        self.history.append(row)
        fit = self.task.fitness(metrics)
        is_best = fit > self.best + 1e-12
        self.bad_epochs = 0 if is_best else self.bad_epochs + 1
        self.best = max(self.best, fit)
        self._save(epoch, pi, metrics, is_best, opt, sched)
        self.log(f"epoch {epoch + 1} ({phase.name})  " + "  ".join(
            f"{k} {v:.3f}" for k, v in row.items() if k not in ("epoch", "phase", "time_s", "lr")
            and isinstance(v, float) and not k.startswith(("loss_", "val_AP50_")))
            + ("  *best*" if is_best else ""))
        spent = bool(self.cfg.patience) and self.bad_epochs >= self.cfg.patience
        if spent and pi == len(self.phases) - 1:
            self.log(f"early stop: validation has not improved for {self.bad_epochs} epochs")
        return spent

    def _mark_stopped(self) -> None:
        """The clock ran out between epochs: the last.pt already written says so too."""
        self.stopped_early = True
        last = self.out_dir / "last.pt"
        if self.main and last.is_file():
            state = load_checkpoint(last)
            if not state.get("stopped_early"):
                save_checkpoint(last, {**state, "stopped_early": True})

    def _save(self, epoch: int, pi: int, metrics: Mapping[str, Any], is_best: bool, opt, sched) -> None:
        state = {**self.task.meta(), "model": self.model.state_dict(), "epoch": epoch, "phase": pi,
                 "metrics": metrics, "best_fitness": self.best}
        if is_best:
            save_checkpoint(self.out_dir / "best.pt", state)
            if self.cfg.on_best is not None:
                self.cfg.on_best(self.out_dir, metrics, epoch)
        save_checkpoint(self.out_dir / "last.pt", {
            **state, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "scaler": self.scaler.state_dict(), "rng": rng_state(), "loader_generator": self.gen.get_state(),
            "bad_epochs": self.bad_epochs,
            **({"augment_rng": augment_state(self.cfg.augment)} if self.cfg.augment is not None else {}),
            "history": self.history, "stopped_early": self.stopped_early})
        write_metrics_csv(self.out_dir / "metrics.csv", self.history)
        plot_curves(self.out_dir / "curves.png", self.history)
