"""Image-level DR grading CNN: the whole photograph in, an ICDR grade, referability and maculopathy out.

The recipe of seed 002 and the APTOS 2019 leaders, on the offline ImageNet
EfficientNet-Lite0 backbone:

* Ben Graham preprocessing with a circle crop (``grading.fundus.ben_graham``),
  the same at training and at inference; data the source already processed
  (the shared APTOS copy) is only resized (``preprocessed=True``).
* One pooled feature vector, four heads: a regression of the grade, a 5-way
  classification (optionally focal), an ordinal head (``P(grade > k)``, k = 0..3)
  and a maculopathy head, trained together. Their three grade estimates are
  averaged into one continuous score.
* The four cut points that turn the score into a grade are tuned on the
  validation patients for quadratic-weighted kappa; the referable threshold is
  tuned there for a target sensitivity. Both travel in the checkpoint.
* Predictions average the photograph and its horizontal and vertical mirrors.

Training runs on the shared engine (head first with the backbone frozen, then
everything), split by patient.
"""
from __future__ import annotations

import csv
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lesiondet.config import defaults
from lesiondet.engine.trainer import Phase, head_then_all, resample_to
from lesiondet.errors import CheckpointError, LesiondetError
from lesiondet.grading.fundus import ben_graham
from lesiondet.grading.readout import N_GRADES, apply_cuts, tune_cuts, tune_referable
from lesiondet.images import read_rgb

CNN_FORMAT = "lesiondet-grader-cnn/1"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DEFAULT_GRADER: dict[str, Any] = defaults("grader")
#: Referable DR: moderate NPDR or worse, or maculopathy (the definition of the IDx-DR trial and UK screening).
REFERABLE_GRADE = 2


# --------------------------------------------------------------------------- data
@dataclass(frozen=True)
class GradedImage:
    path: Path
    grade: int | None  # None: not graded (prediction only)
    maculopathy: int | None = None  # None: not recorded
    patient: str = ""

    @property
    def referable(self) -> bool | None:
        if self.grade is None:
            return None
        return self.grade >= REFERABLE_GRADE or self.maculopathy == 1


def _int_cell(src: Path, line: int, column: str, value: str, allowed: range, required: bool) -> int | None:
    value = (value or "").strip()
    if not value:
        if required:
            raise LesiondetError(src, f"line {line}: no {column}", f"give every row a {column}")
        return None
    try:
        v = int(float(value))
    except ValueError:
        raise LesiondetError(src, f"line {line}: {column} '{value}' is not a whole number",
                             f"use {allowed.start}-{allowed.stop - 1}") from None
    if v not in allowed:
        raise LesiondetError(src, f"line {line}: {column} {v} is outside {allowed.start}-{allowed.stop - 1}",
                             f"use {allowed.start}-{allowed.stop - 1}")
    return v


def read_grading_csv(path: str | Path) -> list[GradedImage]:
    """Rows ``image,dr_grade[,maculopathy][,patient]`` (``grade`` is accepted for ``dr_grade``).

    Image paths are relative to the CSV. Without a ``patient`` column each image is its own patient.
    """
    src = Path(path)
    if not src.is_file():
        raise LesiondetError(src, "grading CSV not found",
                             "pass a CSV with columns image,dr_grade[,maculopathy,patient]")
    try:
        with open(src, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            cols = [c.strip().lower() for c in (reader.fieldnames or [])]
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as e:
        raise LesiondetError(src, f"not a readable CSV ({e})", "save it as UTF-8 CSV") from None
    reader.fieldnames = cols
    grade_col = "dr_grade" if "dr_grade" in cols else "grade" if "grade" in cols else None
    if "image" not in cols or grade_col is None:
        raise LesiondetError(src, f"expected columns image,dr_grade; found {','.join(cols) or 'none'}",
                             "add the header row image,dr_grade[,maculopathy,patient]")
    items = []
    for line, raw in enumerate(rows, start=2):
        row = {str(k).strip().lower(): (v or "") for k, v in raw.items() if k is not None}
        if not row.get("image", "").strip():
            continue
        p = Path(row["image"].strip())
        p = p if p.is_absolute() else src.parent / p
        if not p.is_file():
            raise LesiondetError(p, f"image not found (line {line} of {src.name})", f"fix the path in {src}")
        grade = _int_cell(src, line, grade_col, row.get(grade_col, ""), range(N_GRADES), True)
        mac = _int_cell(src, line, "maculopathy", row.get("maculopathy", ""), range(2), False)
        items.append(GradedImage(p, grade, mac, row.get("patient", "").strip() or p.stem))
    if not items:
        raise LesiondetError(src, "the CSV lists no images", "add image,dr_grade rows")
    return items


def patient_split(items: Sequence[GradedImage], val_fraction: float = 0.2, seed: int = 0
                  ) -> tuple[list[GradedImage], list[GradedImage]]:
    """Every patient's photographs on one side, grades balanced as far as the groups allow."""
    from lesiondet.io.splits import group_split

    tr, va = group_split([i.patient for i in items], [i.grade for i in items], val_fraction, seed, "photographs")
    return [items[i] for i in tr], [items[i] for i in va]


def check_disjoint(train: Sequence[GradedImage], val: Sequence[GradedImage], where: str | Path) -> None:
    from lesiondet.io.splits import check_disjoint as disjoint

    disjoint([i.patient for i in train], [i.patient for i in val], where, "photographs")


def write_split_csv(path: str | Path, items: Sequence[GradedImage]) -> None:
    """The photographs of one side of a split, as a CSV ``grader eval --data`` reads (absolute paths)."""
    import io

    from lesiondet.fileio import write_text

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image", "dr_grade", "maculopathy", "patient"])
    for i in items:
        w.writerow([str(Path(i.path).resolve()), "" if i.grade is None else i.grade,
                    "" if i.maculopathy is None else i.maculopathy, i.patient])
    write_text(path, buf.getvalue())


def to_input(img: np.ndarray, size: int, preprocessed: bool) -> np.ndarray:
    """The network's view of one RGB uint8 photograph: ``size``×``size``, Ben Graham-processed unless it was."""
    if preprocessed:
        return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return ben_graham(img, size)


def load_input(path: str | Path, size: int, preprocessed: bool) -> np.ndarray:
    return to_input(read_rgb(path), size, preprocessed)


def transforms(train: bool) -> A.Compose:
    """Fundus photographs have no preferred orientation: flips and any rotation; mild brightness/contrast."""
    norm = A.Normalize(mean=MEAN, std=STD)
    if not train:
        return A.Compose([norm])
    return A.Compose([
        A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5),
        A.Affine(rotate=(-180, 180), scale=(0.95, 1.1), border_mode=cv2.BORDER_CONSTANT, fill=128, p=0.9),
        A.RandomBrightnessContrast(0.1, 0.1, p=0.5),
        norm,
    ])


class GradingDataset(Dataset):
    """Preprocessed photographs (kept in memory after the first read) with grade and maculopathy (-1: unknown)."""

    def __init__(self, items: Sequence[GradedImage], size: int, preprocessed: bool, tf: A.Compose,
                 decoded: Mapping[Path, np.ndarray] | None = None) -> None:
        self.items, self.size, self.preprocessed, self.transforms = list(items), size, preprocessed, tf
        # photographs the caller already preprocessed at this size (to check them) are not decoded again
        self._cache = {i: decoded[it.path] for i, it in enumerate(self.items) if decoded and it.path in decoded}

    def __len__(self) -> int:
        return len(self.items)

    def image(self, i: int) -> np.ndarray:
        if i not in self._cache:
            self._cache[i] = load_input(self.items[i].path, self.size, self.preprocessed)
        return self._cache[i]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        it = self.items[i]
        x = self.transforms(image=self.image(i))["image"]
        mac = -1 if it.maculopathy is None else it.maculopathy
        return torch.from_numpy(x).permute(2, 0, 1).float(), -1 if it.grade is None else it.grade, mac


# --------------------------------------------------------------------------- model
class GraderNet(nn.Module):
    """Lite0 → pooled features → one linear layer giving all heads: [regression | 5 classes | 4 ordinal | macula]."""

    N_OUT = 1 + N_GRADES + (N_GRADES - 1) + 1

    def __init__(self, pretrained: str = "imagenet") -> None:
        super().__init__()
        from lesiondet.nn.backbones import efficientnet_lite0

        if pretrained not in ("imagenet", "none"):
            raise LesiondetError(None, f"unknown grader backbone weights '{pretrained}'", "use imagenet or none")
        net = efficientnet_lite0(pretrained == "imagenet")
        net.reset_classifier(0)
        self.body, self.dim = net, net.num_features
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(self.dim, self.N_OUT)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


def decode(out: np.ndarray) -> dict[str, np.ndarray]:
    """Raw head outputs ``[n, 11]`` → the continuous grade score, grade probabilities and maculopathy probability.

    The grade probabilities average the classification head and the ordinal head's implied distribution.
    """
    out = np.asarray(out, np.float64)
    reg = out[:, 0]
    logits = out[:, 1:1 + N_GRADES]
    p_cls = np.exp(logits - logits.max(1, keepdims=True))
    p_cls /= p_cls.sum(1, keepdims=True)
    gt = 1 / (1 + np.exp(-out[:, 1 + N_GRADES:N_GRADES * 2]))  # P(grade > k)
    gt = np.minimum.accumulate(gt, axis=1)
    p_ord = np.clip(np.concatenate([np.ones((len(out), 1)), gt], 1) - np.concatenate([gt, np.zeros((len(out), 1))], 1),
                    0, 1)
    grades = np.arange(N_GRADES)
    score = (np.clip(reg, 0, N_GRADES - 1) + p_cls @ grades + gt.sum(1)) / 3
    probs = (p_cls + p_ord) / 2
    p_mac = 1 / (1 + np.exp(-out[:, -1]))
    p_ge2 = probs[:, REFERABLE_GRADE:].sum(1)
    return {"score": score, "probabilities": probs, "p_maculopathy": p_mac,
            "p_referable": 1 - (1 - p_ge2) * (1 - p_mac)}


def multitask_loss(out: torch.Tensor, grade: torch.Tensor, mac: torch.Tensor, focal_gamma: float = 0.0
                   ) -> dict[str, torch.Tensor]:
    """Smooth-L1 regression + (focal) cross-entropy + ordinal BCE + maculopathy BCE where it is known."""
    f = nn.functional
    out = out.float()
    y = grade.float()
    reg = f.smooth_l1_loss(out[:, 0], y)
    ce = f.cross_entropy(out[:, 1:1 + N_GRADES], grade, reduction="none")
    if focal_gamma > 0:
        pt = torch.exp(-ce)
        ce = (1 - pt) ** focal_gamma * ce
    ks = torch.arange(N_GRADES - 1, device=out.device).float()
    ordinal = f.binary_cross_entropy_with_logits(out[:, 1 + N_GRADES:N_GRADES * 2], (y[:, None] > ks).float())
    known = mac >= 0
    macula = (f.binary_cross_entropy_with_logits(out[known, -1], mac[known].float()) if known.any()
              else out.sum() * 0)
    total = reg + ce.mean() + ordinal + 0.5 * macula
    return {"loss": total, "reg": reg.detach(), "ce": ce.mean().detach(), "ord": ordinal.detach(),
            "mac": macula.detach()}


class GradingTask:
    """The grading CNN as the engine sees it; fitness is validation QWK with the plain rounding cut points."""

    def __init__(self, model: GraderNet, train: Sequence[GradedImage], val: Sequence[GradedImage],
                 cfg: Mapping[str, Any], meta: dict[str, Any], preprocessed: bool,
                 decoded: Mapping[Path, np.ndarray] | None = None) -> None:
        self.model, self.cfg, self._meta = model, cfg, meta
        size = int(cfg["size"])
        self.dataset = GradingDataset(train, size, preprocessed, transforms(True), decoded)
        self.val = DataLoader(GradingDataset(val or train, size, preprocessed, transforms(False), decoded),
                              batch_size=int(cfg["batch"]))

    def phases(self) -> list[Phase]:
        return head_then_all(self.cfg)

    def train_dataset(self) -> Dataset:
        return self.dataset

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> dict[str, torch.Tensor]:
        x, g, m = (t.to(device) for t in batch)
        return multitask_loss(model(x), g, m, float(self.cfg["focal_gamma"]))

    @torch.inference_mode()
    def validate(self, model: nn.Module, device: torch.device) -> dict[str, Any]:
        from lesiondet.grading.learned import quadratic_weighted_kappa as qwk

        model.eval()
        outs, ys, ms = [], [], []
        for x, g, m in self.val:
            outs.append(model(x.to(device)).float().cpu())
            ys.append(g)
            ms.append(m)
        out, y, m = torch.cat(outs), torch.cat(ys), torch.cat(ms)
        loss = float(multitask_loss(out, y, m)["loss"])
        d = decode(out.numpy())
        pred = apply_cuts(d["score"], (0.5, 1.5, 2.5, 3.5))
        return {"val_loss": loss, "val_qwk": qwk(y.numpy(), pred), "val_acc": float(np.mean(pred == y.numpy()))}

    def fitness(self, metrics: Mapping[str, Any]) -> float:
        return float(metrics["val_qwk"]) - 1e-3 * float(metrics["val_loss"])  # loss breaks ties

    def history_row(self, metrics: Mapping[str, Any]) -> dict[str, float]:
        return dict(metrics)

    def meta(self) -> dict[str, Any]:
        return self._meta



@torch.inference_mode()
def predict_raw(model: GraderNet, images: Sequence[np.ndarray], device: torch.device, batch: int = 16,
                tta: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Head outputs and pooled features of preprocessed photographs, averaged over the mirrors when ``tta``."""
    model.eval()
    tf = transforms(False)
    outs, feats = [], []
    for s in range(0, len(images), batch):
        x = torch.stack([torch.from_numpy(tf(image=im)["image"]).permute(2, 0, 1).float()
                         for im in images[s:s + batch]]).to(device)
        views = [x, x.flip(3), x.flip(2)] if tta else [x]
        # the mirrors go through the network as one batch: one call instead of three
        f = model.features(torch.cat(views)).float().reshape(len(views), len(x), -1)
        o = torch.stack([model.head(fv) for fv in f])
        outs.append(o.mean(0).cpu().numpy())
        feats.append(f.mean(0).cpu().numpy())
    if not outs:
        return np.zeros((0, GraderNet.N_OUT)), np.zeros((0, model.dim))
    return np.concatenate(outs), np.concatenate(feats)


def train_grader(train: Sequence[GradedImage], val: Sequence[GradedImage], cfg: Mapping[str, Any],
                 out_dir: str | Path, device: torch.device, *, preprocessed: bool = False,
                 init: str | Path | None = None, time_limit_min: float | None = None,
                 log: Callable[[str], None] = print, resume: str | Path | None = None,
                 decoded: Mapping[Path, np.ndarray] | None = None) -> dict[str, Any]:
    """Train on the engine, then tune the cut points and the referable threshold on ``val``.

    ``decoded``: photographs the caller already preprocessed at ``cfg["size"]`` (path → array).

    ``init`` starts from another grader checkpoint (e.g. one trained on APTOS). Writes
    ``best.pt`` (with the tuned thresholds), ``last.pt``, ``metrics.csv``, ``curves.png``, ``config.yaml``.
    """
    from lesiondet.engine.checkpoint import load_checkpoint, save_checkpoint
    from lesiondet.engine.rng import seed_everything
    from lesiondet.engine.trainer import LoopConfig, Trainer

    cfg = {**DEFAULT_GRADER, **cfg}
    seed_everything(int(cfg["seed"]))
    out_dir = Path(out_dir)
    model = GraderNet(cfg["pretrained"] if (resume is None and init is None) else "none").to(device)
    if init is not None and resume is None:
        model.load_state_dict(GraderCNN(init).model.state_dict())
        log(f"starting from {init}")
    meta: dict[str, Any] = {"format": CNN_FORMAT, "config": cfg, "preprocessed": preprocessed,
                            "cuts": [0.5, 1.5, 2.5, 3.5], "referable_threshold": 0.5,
                            "referable_rule": "grade >= 2 or maculopathy"}
    if resume is None:
        write_split_csv(out_dir / "train.csv", train)
        write_split_csv(out_dir / "val.csv", val)
    task = GradingTask(model, train, val, cfg, meta, preprocessed, decoded)
    loop = LoopConfig(batch=int(cfg["batch"]), weight_decay=float(cfg["weight_decay"]), workers=int(cfg["workers"]),
                      amp=bool(cfg["amp"]), seed=int(cfg["seed"]), patience=int(cfg["patience"]),
                      sampler=resample_to(int(cfg["min_steps"]), int(cfg["batch"])), augment=task.dataset.transforms)
    result = Trainer(task, loop, out_dir, device, time_limit_min=time_limit_min, log=log,
                     config={"grader": cfg, "preprocessed": preprocessed, "init": init and str(init)}).fit(resume)
    best = out_dir / "best.pt"
    summary: dict[str, Any] = {"out_dir": str(out_dir), "history": result["history"]}
    if not best.is_file():
        return summary
    ck = load_checkpoint(best)
    if val:
        net = GraderNet("none").to(device)
        net.load_state_dict(ck["model"])
        ds = task.val.dataset
        raw, _ = predict_raw(net, [ds.image(i) for i in range(len(ds))], device)
        d = decode(raw)
        y = [i.grade for i in val]
        ck["cuts"] = tune_cuts(d["score"], y)
        truth = [i.referable for i in val]
        ck["referable_threshold"] = tune_referable(d["p_referable"], truth, float(cfg["referable_sensitivity"]))
        save_checkpoint(best, ck)
        log(f"cut points tuned on {len(val)} validation photographs: {ck['cuts']}; "
            f"referable threshold {ck['referable_threshold']:.3f}")
    summary.update(cuts=ck["cuts"], referable_threshold=ck["referable_threshold"])
    return summary


# --------------------------------------------------------------------------- inference
class GraderCNN:
    """A trained grading CNN. ``predict(paths)`` → one dict per photograph.

    >>> g = GraderCNN("runs/grader/best.pt")        # doctest: +SKIP
    >>> g.predict(["eye.jpg"])[0]["grade"]          # doctest: +SKIP
    2
    """

    def __init__(self, weights: str | Path, device: str = "auto", trust_legacy: bool = False,
                 backend: str = "torch", threads: int | None = None) -> None:
        """``backend``: ``"torch"``, ``"onnx"`` (the feature network on onnxruntime, from an ONNX copy
        cached on first use) or ``"auto"`` (onnxruntime when on the CPU and installed; ``export.runtime``).
        ``threads``: onnxruntime's intra-op threads (default: all cores)."""
        from lesiondet.device import resolve_device
        from lesiondet.engine.checkpoint import load_kind, load_weights

        ck = load_kind(weights, CNN_FORMAT, "grading-CNN", "pass best.pt from 'lesiondet grader train'", trust_legacy)
        self.weights = Path(weights)
        self.cfg = {**DEFAULT_GRADER, **ck["config"]}
        self.preprocessed = bool(ck["preprocessed"])
        self.cuts = [float(c) for c in ck["cuts"]]
        self.referable_threshold = float(ck["referable_threshold"])
        from lesiondet.grading.readout import Readout

        try:
            self.readout = Readout.from_dict(ck["readout"]) if ck.get("readout") else None
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(weights, "the grade readout in this file is damaged",
                                  "refit it with 'lesiondet grader fit'") from None
        self.device = resolve_device(device)
        self.model = GraderNet("none")
        load_weights(self.model, ck["model"], weights, "the grading CNN")
        self.model.to(self.device).eval()
        self.backend = "torch"
        from lesiondet.export.runtime import choose_backend, load_or_fall_back

        if choose_backend(backend, self.device) == "onnx":
            net = self.model
            onnx = load_or_fall_back(self.weights, "grader", lambda p: export_features(net, p),
                                     lambda p: OnnxGraderNet(p, net, threads), backend)
            if onnx is not None:
                self.model, self.backend = onnx, "onnx"

    @property
    def size(self) -> int:
        """Side of the prepared photograph: the largest size the readout reads features at, or the network's."""
        return max(self.readout.sizes) if self.readout else int(self.cfg["size"])

    @property
    def uses_lesions(self) -> bool:
        """Whether the grade can also weigh the detector's lesion evidence (``predict_images(lesions=...)``)."""
        return self.readout is not None and "lesions" in self.readout.blocks

    def embed(self, images: Sequence[np.ndarray], sizes: Sequence[int] | None = None, tta: bool = True
              ) -> np.ndarray:
        """Pooled features of prepared photographs, read at each size (default: the readout's) and concatenated.

        Smaller sizes are shrunk from the prepared photograph, so prepare it at the largest."""
        sizes = sizes or (self.readout.sizes if self.readout else [self.size])
        bs = int(self.cfg["batch"])
        parts = []
        for s in sizes:
            views = [im if im.shape[0] == s else cv2.resize(im, (s, s), interpolation=cv2.INTER_AREA) for im in images]
            parts.append(predict_raw(self.model, views, self.device, bs, tta)[1])
        return np.hstack(parts)

    def prepare(self, path: str | Path) -> np.ndarray:
        return load_input(path, self.size, self.preprocessed)

    def prepare_array(self, img: np.ndarray) -> np.ndarray:
        """An RGB uint8 photograph already in memory, preprocessed as ``prepare`` would."""
        return to_input(img, self.size, self.preprocessed)

    def predict_images(self, images: Sequence[np.ndarray], tta: bool | None = None,
                       lesions: np.ndarray | None = None) -> list[dict[str, Any]]:
        """Preprocessed photographs (``prepare``) → grade, probabilities, score, referable, maculopathy.

        ``tta`` (average over the two mirrors) defaults to what the readout was fitted with, else True.

        With a readout (``grader fit``) the grade comes from it; ``lesions`` (rows of
        ``grading.learned.features``) lets a readout fitted with lesions weigh them too (``source``
        says which: ``cnn`` or ``cnn+lesions``). Without one, from the network's own heads.
        """
        if tta is None:
            tta = self.readout.tta if self.readout is not None else True
        if self.readout is not None:
            return self._predict_readout(images, tta, lesions)
        raw, feats = predict_raw(self.model, images, self.device, int(self.cfg["batch"]), tta)
        d = decode(raw)
        grades = apply_cuts(d["score"], self.cuts)
        out = []
        for i, g in enumerate(grades):
            p_ref = float(d["p_referable"][i])
            out.append({"grade": int(g), "score": round(float(d["score"][i]), 4),
                        "probabilities": [round(float(v), 4) for v in d["probabilities"][i]],
                        "p_maculopathy": round(float(d["p_maculopathy"][i]), 4),
                        "p_referable": round(p_ref, 4),
                        "referable": bool(g >= REFERABLE_GRADE or p_ref >= self.referable_threshold),
                        "source": "cnn", "embedding": feats[i]})
        return out

    def _predict_readout(self, images: Sequence[np.ndarray], tta: bool, lesions: np.ndarray | None
                         ) -> list[dict[str, Any]]:
        E = self.embed(images, tta=tta)
        L = None if lesions is None or not self.uses_lesions else np.asarray(lesions, np.float64).reshape(len(E), -1)
        d = self.readout.predict(E, L)
        return [{"grade": int(d["grade"][i]), "score": round(float(d["score"][i]), 4),
                 "probabilities": [round(float(v), 4) for v in d["probabilities"][i]],
                 "p_maculopathy": round(float(d["p_maculopathy"][i]), 4),
                 "p_referable": round(float(d["p_referable"][i]), 4), "referable": bool(d["referable"][i]),
                 "raw_score": round(float(d["raw_score"][i]), 4), "familiar": bool(d["familiar"][i]),
                 "novelty": round(float(d["novelty"][i]), 3), "in_range": bool(d["in_range"][i]),
                 "source": d["variant"], "embedding": E[i]} for i in range(len(E))]

    def predict(self, paths: Sequence[str | Path], tta: bool | None = None,
                progress: bool = False) -> list[dict[str, Any]]:
        from lesiondet.progress import progress as bar

        imgs = [self.prepare(p) for p in bar(list(paths), desc="reading", enabled=progress)]
        return self.predict_images(imgs, tta)


# --------------------------------------------------------------------------- onnxruntime
def export_features(model: GraderNet, path: str | Path, opset: int = 17) -> Path:
    """Write the network up to its pooled features as ONNX (any batch and side); the heads stay in PyTorch."""
    import warnings

    from lesiondet.fileio import atomic_path

    class Features(nn.Module):
        def __init__(self, net: GraderNet) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net.features(x)

    path = Path(path)
    with atomic_path(path) as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(Features(model).eval(), (torch.rand(2, 3, 224, 224),), str(tmp), dynamo=False,
                          opset_version=opset, input_names=["image"], output_names=["features"],
                          dynamic_axes={"image": {0: "n", 2: "h", 3: "w"}, "features": {0: "n"}})
    return path


class OnnxGraderNet:
    """``GraderNet`` with its feature network on onnxruntime (CPU): ``features`` and ``head`` as GraderNet's."""

    def __init__(self, path: str | Path, net: GraderNet, threads: int | None = None) -> None:
        from lesiondet.export.runtime import onnx_session

        self.session = onnx_session(path, threads, "delete it; it is made again on the next run")
        self.head, self.dim = net.head, net.dim

    def eval(self) -> OnnxGraderNet:
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {"image": np.ascontiguousarray(x.cpu().numpy())})[0])


def embed_photographs(grader: Any, paths: Sequence[str | Path], sizes: Sequence[int], preprocessed: bool = False,
                      chunk: int = 32, progress: bool = False, tta: bool = True, view: int | None = None,
                      seed: int = 0) -> np.ndarray:
    """Multi-scale features (``GraderCNN.embed``) of photographs on disk, a chunk at a time (memory stays flat).

    ``preprocessed`` describes these photographs, not the network: one pre-trained on the
    source-processed APTOS copy still needs Ben Graham's preprocessing of raw photographs.
    ``view``: read the ``view``-th camera-shifted copy of each photograph instead (``camera.CameraShift``,
    drawn from ``(seed, view, index)``, so the same copy every time)."""
    from lesiondet.camera import CameraShift
    from lesiondet.progress import progress as bar

    top = max(sizes)
    shift = CameraShift()
    parts = []
    starts = range(0, len(paths), chunk)
    desc = "features" if view is None else f"features, camera view {view + 1}"
    for s in bar(list(starts), desc=desc, enabled=progress and len(paths) > chunk):
        if view is None:
            imgs = [load_input(p, top, preprocessed) for p in paths[s:s + chunk]]
        else:
            imgs = [to_input(shift(read_rgb(p), np.random.default_rng([seed, view, s + j])), top, preprocessed)
                    for j, p in enumerate(paths[s:s + chunk])]
        parts.append(grader.embed(imgs, sizes, tta=tta))
    return np.vstack(parts) if parts else np.zeros((0, 0))


def cached_views(cache: str | Path | None, weights: str | Path, grader: Any, paths: Sequence[Path],
                 sizes: Sequence[int], k: int, seed: int, preprocessed: bool = False, tta: bool = True
                 ) -> np.ndarray | None:
    """``[n, k, d]`` features of each photograph's ``k`` camera-shifted views (``embed_photographs``
    with ``view``), each view cached beside ``cache`` as ``<cache>.view<c>.npz``; None when ``k`` is 0."""
    from lesiondet.grading.readout import cached_features

    if not k:
        return None
    return np.stack([cached_features(None if cache is None else Path(cache).with_suffix(f".view{c}.npz"), weights,
                                     paths, sizes, preprocessed,
                                     lambda c=c: embed_photographs(grader, paths, sizes, preprocessed, progress=True,
                                                                   tta=tta, view=c, seed=seed),
                                     tta, {"view": c, "seed": seed}) for c in range(k)], 1)
