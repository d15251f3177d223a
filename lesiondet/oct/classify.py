"""Retinal OCT B-scan classification: CNV / DME / DRUSEN / NORMAL (Kermany et al. 2018).

A transfer-learning CNN on the same offline ImageNet backbone as the detector
(EfficientNet-Lite0), trained in two stages (head, then everything at a lower
learning rate) with class weights and early stopping on validation loss. For a
few dozen scans a second head fits a logistic regression on the frozen
ImageNet features (``linear``); both are kept in one checkpoint and reported.

Data is a class-per-folder tree or a CSV of ``path,label``. Kermany file names
are ``CLASS-PATIENT-N.jpeg``; splits keep each patient on one side.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import albumentations as A
import cv2
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lesiondet.config import defaults
from lesiondet.engine.trainer import Phase, head_then_all, resample_to
from lesiondet.errors import LesiondetError
from lesiondet.images import IMAGE_SUFFIXES, read_rgb
from lesiondet.nn.logistic import PlainLogistic
from lesiondet.progress import progress as progress_bar

OCT_CLASSES = ("CNV", "DME", "DRUSEN", "NORMAL")
OCT_FORMAT = "lesiondet-oct/2"  # 1: lesiondet 0.1, sklearn objects inside
ARCHS = ("efficientnet_lite0", "mobilenet_v3_large", "resnet18", "resnet50")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

DEFAULT_OCT: dict[str, Any] = defaults("oct")


@dataclass(frozen=True)
class OctSample:
    path: Path
    label: str
    patient: str


_KERMANY = re.compile(r"^(?P<cls>[A-Za-z]+)-(?P<patient>\d+)-\d+$")


def patient_of(path: str | Path) -> str:
    """Patient id from a Kermany name ``CLASS-PATIENT-N``; otherwise the file itself is its own group."""
    stem = Path(path).stem
    m = _KERMANY.match(stem)
    return m.group("patient") if m else stem


def read_oct_data(source: str | Path, classes: Sequence[str] | None = None) -> list[OctSample]:
    """Samples from a class-per-folder tree or a ``path,label`` CSV (paths relative to the CSV).

    ``classes`` restricts the allowed labels (a trained model's classes); a
    label outside it is an error naming the file.
    """
    src = Path(source)
    samples: list[OctSample] = []
    if src.is_dir():
        from lesiondet.fileio import list_dir

        for d in (p for p in list_dir(src) if p.is_dir()):
            for f in list_dir(d):
                if f.suffix.lower() in IMAGE_SUFFIXES:
                    samples.append(OctSample(f, d.name.upper(), patient_of(f)))
        if not samples:
            raise LesiondetError(src, "no images in class folders (e.g. CNV/, DME/, DRUSEN/, NORMAL/)",
                                 "put each class's scans in a sub-folder named after it, or pass a CSV path,label")
    elif src.is_file() and src.suffix.lower() == ".csv":
        with open(src, newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.reader(fh) if r and any(c.strip() for c in r)]
        if rows and [c.strip().lower() for c in rows[0][:2]] == ["path", "label"]:
            rows = rows[1:]
        for n, row in enumerate(rows, 1):
            if len(row) < 2:
                raise LesiondetError(src, f"row {n} has no label", "write one 'path,label' per row")
            p = Path(row[0].strip())
            p = p if p.is_absolute() else src.parent / p
            samples.append(OctSample(p, row[1].strip().upper(), patient_of(p)))
        if not samples:
            raise LesiondetError(src, "the CSV lists no images", "write one 'path,label' per row")
    else:
        raise LesiondetError(src, "not a folder or a .csv file", "pass a class-per-folder tree or a path,label CSV")
    allowed = set(classes) if classes is not None else None
    for s in samples:
        if not s.path.is_file():
            raise LesiondetError(s.path, "image not found", f"fix the path in {src}")
        if allowed is not None and s.label not in allowed:
            raise LesiondetError(s.path, f"label '{s.label}' is not one of the model's classes {sorted(allowed)}",
                                 "evaluate with data of the same classes")
    return samples


def check_disjoint(train: Sequence[OctSample], val: Sequence[OctSample], where: str | Path) -> None:
    """A ``--val`` set that shares a patient with the training scans is refused, as the other trainers do."""
    from lesiondet.io.splits import check_disjoint as disjoint

    disjoint([s.patient for s in train], [s.patient for s in val], where, "B-scans")


def patient_split(samples: Sequence[OctSample], val_fraction: float = 0.2, seed: int = 0
                  ) -> tuple[list[OctSample], list[OctSample]]:
    """Split with every patient's scans on one side, classes balanced as far as groups allow."""
    from lesiondet.io.splits import group_split

    tr, va = group_split([s.patient for s in samples], [s.label for s in samples], val_fraction, seed, "scans")
    return [samples[i] for i in tr], [samples[i] for i in va]


def read_scan(path: str | Path) -> np.ndarray:
    """An OCT scan as RGB uint8: grey replicated to three channels, 16-bit scaled to 8 bits (OCT exports are)."""
    return read_rgb(path, allow_16bit=True)


_INTERP = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR}


def transforms(size: int, train: bool, interp: str = "area") -> A.Compose:
    """Training: random resized crop, small rotation, flip, brightness/contrast. Evaluation: resize only.

    ``area`` averages the pixels it shrinks, so a 1024-px-wide export and a 512-px one of the same
    B-scan give nearly the same input; ``linear`` (what checkpoints without a ``resize`` key used)
    samples them and keeps each width's own speckle, which the classifier can learn as a class cue.
    """
    norm = A.Normalize(mean=MEAN, std=STD)
    if not train:
        return A.Compose([A.Resize(size, size, interpolation=_INTERP[interp]), norm])
    return A.Compose([
        A.RandomResizedCrop(size=(size, size), scale=(0.7, 1.0), ratio=(0.8, 1.25), interpolation=_INTERP[interp]),
        A.Rotate(limit=10, border_mode=0, p=0.5),
        A.HorizontalFlip(p=0.5),
        A.RandomBrightnessContrast(0.2, 0.2, p=0.5),
        norm,
    ])


class OctDataset(Dataset):
    def __init__(self, samples: Sequence[OctSample], classes: Sequence[str], tf: A.Compose) -> None:
        self.samples, self.classes, self.tf = list(samples), list(classes), tf

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        s = self.samples[i]
        img = self.tf(image=read_scan(s.path))["image"]
        return torch.from_numpy(img).permute(2, 0, 1).float(), self.classes.index(s.label)


# --------------------------------------------------------------------------- model
class OctNet(nn.Module):
    """Backbone → global average pool → dropout → linear classifier; ``features`` gives the pooled vector."""

    def __init__(self, arch: str, num_classes: int, pretrained: str = "imagenet") -> None:
        super().__init__()
        if arch not in ARCHS:
            raise LesiondetError(None, f"unknown OCT backbone '{arch}'", f"choose one of {', '.join(ARCHS)}")
        self.arch = arch
        if arch == "efficientnet_lite0":
            if pretrained == "torchvision":
                raise LesiondetError(None, "torchvision has no EfficientNet-Lite0 weights", "use imagenet or none")
            from lesiondet.nn.backbones import efficientnet_lite0

            net = efficientnet_lite0(pretrained == "imagenet")
            net.reset_classifier(0)
            self.body, dim = net, net.num_features
        else:
            self.body, dim = _torchvision_body(arch, pretrained)
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


def _torchvision_body(arch: str, pretrained: str) -> tuple[nn.Module, int]:
    import torchvision.models as tvm

    from lesiondet.nn.backbones import require_cached

    if pretrained == "imagenet":
        raise LesiondetError(None, f"offline ImageNet weights exist only for efficientnet_lite0, not {arch}",
                             "use --pretrained torchvision (needs the hub cache) or none")
    weights = {"mobilenet_v3_large": tvm.MobileNet_V3_Large_Weights.IMAGENET1K_V1,
               "resnet18": tvm.ResNet18_Weights.IMAGENET1K_V1,
               "resnet50": tvm.ResNet50_Weights.IMAGENET1K_V1}[arch] if pretrained == "torchvision" else None
    if weights is not None:
        require_cached(weights)
    net = getattr(tvm, arch)(weights=weights)
    if arch == "mobilenet_v3_large":
        dim = net.classifier[0].in_features
        net.classifier = nn.Identity()
    else:
        dim = net.fc.in_features
        net.fc = nn.Identity()
    return net, dim


def class_weights(samples: Sequence[OctSample], classes: Sequence[str]) -> torch.Tensor:
    """The fine-tuned head's loss weights: the linear heads' balanced weights (``class_weight_map``), scaled
    to mean 1 over the classes present (Kermany's training set is 45% CNV and 10% drusen); absent ones 0."""
    per = class_weight_map([s.label for s in samples], classes, "balanced") or {}
    w = np.array([per.get(i, 0.0) for i in range(len(classes))])
    return torch.tensor(w / w[w > 0].mean(), dtype=torch.float32)


# --------------------------------------------------------------------------- training
@torch.inference_mode()
def extract_features(model: OctNet, samples: Sequence[OctSample], size: int, device: torch.device,
                     batch: int = 16, interp: str = "area", flip: bool = False) -> np.ndarray:
    """Pooled features of the scans at ``size`` (``flip``: of their mirror images)."""
    model.eval()
    loader = DataLoader(OctDataset(samples, sorted({s.label for s in samples}), transforms(size, False, interp)),
                        batch_size=batch)
    return np.concatenate([model.features((x.flip(3) if flip else x).to(device)).float().cpu().numpy()
                           for x, _ in loader]) if len(samples) else np.zeros((0, model.head.in_features))


def linear_training_set(model: OctNet, samples: Sequence[OctSample], size: int, device: torch.device,
                        cfg: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray | None]:
    """Features of the scans at ``size``, and of their mirror images when ``linear_flip`` (a B-scan read
    left to right or right to left shows the same disease; None otherwise)."""
    f = extract_features(model, samples, size, device, interp=cfg["resize"])
    return f, (extract_features(model, samples, size, device, interp=cfg["resize"], flip=True)
               if cfg["linear_flip"] else None)


def fit_linear(f: np.ndarray, f_flip: np.ndarray | None, labels: Sequence[str], classes: Sequence[str],
               cfg: Mapping[str, Any]) -> PlainLogistic:
    """One linear head on the features (and the mirrored ones beside them)."""
    if f_flip is not None:
        f, labels = np.vstack([f, f_flip]), list(labels) * 2
    return fit_linear_head(f, labels, classes, cfg["class_weight"])


def linear_sizes(cfg: Mapping[str, Any]) -> list[int]:
    """Input sides the linear head reads features at (``linear_sizes``; empty: the network's ``size``)."""
    return [int(z) for z in cfg.get("linear_sizes") or [cfg["size"]]]


def class_weight_map(labels: Sequence[str], classes: Sequence[str], mode: str) -> dict[int, float] | None:
    """Per-class sample weights for the linear head: ``balanced`` (inverse frequency), ``sqrt`` (its
    square root: rare classes count more, but a class of a dozen scans does not become the default
    answer for anything unfamiliar) or ``none`` (the training mix is the prior)."""
    if mode == "none":
        return None
    if mode not in ("balanced", "sqrt"):
        raise LesiondetError(None, f"unknown class weighting '{mode}'", "use balanced, sqrt or none")
    counts = {i: sum(lab == c for lab in labels) for i, c in enumerate(classes)}
    n, k = len(labels), sum(1 for v in counts.values() if v)
    w = {i: (n / (k * v)) ** (1.0 if mode == "balanced" else 0.5) for i, v in counts.items() if v}
    return w


def fit_linear_head(features: np.ndarray, labels: Sequence[str], classes: Sequence[str],
                    class_weight: str = "balanced", C: float = 0.1) -> PlainLogistic:
    """Standardised features → multinomial logistic regression (scikit-learn), kept as arrays."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.array([list(classes).index(lab) for lab in labels])
    clf = make_pipeline(StandardScaler(), LogisticRegression(
        C=C, max_iter=5000, class_weight=class_weight_map(labels, classes, class_weight)))
    return PlainLogistic.from_sklearn(clf.fit(features, y))


def kermany_like(img: np.ndarray, width: int = 512) -> np.ndarray:
    """A B-scan of another cohort (Duke's 768-px, unaveraged Spectralis exports) made to look like a
    Kermany one: 512 px across, speckle softened as averaged B-scans show it, intensity stretched to
    the full 8-bit range between its 0.5th and 99.5th percentiles."""
    h, w = img.shape[:2]
    out = cv2.resize(img, (width, h), interpolation=cv2.INTER_AREA) if w != width else img
    out = cv2.medianBlur(out, 3)
    lo, hi = np.percentile(out, (0.5, 99.5))
    return np.clip((out.astype(np.float32) - lo) * 255.0 / max(hi - lo, 1.0), 0, 255).astype(np.uint8)


def linear_proba(clf, features: np.ndarray, n_classes: int) -> np.ndarray:
    """Probabilities for every class, including classes absent when the head was fitted."""
    p = clf.predict_proba(features)
    out = np.zeros((len(features), n_classes))
    out[:, clf.classes_] = p
    return out


class OctTask:
    """The fine-tuned head as the engine sees it: head first (backbone frozen), then everything."""

    def __init__(self, model: OctNet, train_samples: Sequence[OctSample], val_samples: Sequence[OctSample],
                 classes: Sequence[str], cfg: Mapping[str, Any], meta: dict[str, Any], device: torch.device) -> None:
        self.model, self.cfg, self.classes, self._meta = model, cfg, list(classes), meta
        self.loss_fn = nn.CrossEntropyLoss(weight=class_weights(train_samples, classes).to(device),
                                           label_smoothing=0.05)
        self.dataset = OctDataset(train_samples, classes, transforms(cfg["size"], True, cfg["resize"]))
        # without validation scans, the training scans (unaugmented) stand in
        self.val = DataLoader(OctDataset(val_samples or train_samples, classes,
                                         transforms(cfg["size"], False, cfg["resize"])),
                              batch_size=cfg["batch"], num_workers=cfg["workers"])

    def phases(self) -> list[Phase]:
        return head_then_all(self.cfg)

    def train_dataset(self) -> Dataset:
        return self.dataset

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> dict[str, torch.Tensor]:
        x, y = batch[0].to(device), batch[1].to(device)
        logits = model(x)
        return {"loss": self.loss_fn(logits, y), "acc": (logits.argmax(1) == y).float().mean().detach()}

    @torch.inference_mode()
    def validate(self, model: nn.Module, device: torch.device) -> dict[str, Any]:
        model.eval()
        total, correct, n = 0.0, 0, 0
        for x, y in self.val:
            logits = model(x.to(device)).float()
            total += float(nn.functional.cross_entropy(logits, y.to(device), reduction="sum"))
            correct += int((logits.argmax(1).cpu() == y).sum())
            n += len(y)
        return {"val_loss": total / max(n, 1), "val_acc": correct / max(n, 1)}

    def fitness(self, metrics: Mapping[str, Any]) -> float:
        return -float(metrics["val_loss"])  # early stopping on validation loss, as the seeds do

    def history_row(self, metrics: Mapping[str, Any]) -> dict[str, float]:
        return dict(metrics)

    def meta(self) -> dict[str, Any]:
        return self._meta



def calibrate_linear_heads(feats: Sequence[tuple[np.ndarray, np.ndarray | None]], samples: Sequence[OctSample],
                           classes: Sequence[str],
                           cfg: Mapping[str, Any], log: Callable[[str], None] = print,
                           k: int = 5) -> dict[str, Any] | None:
    """Temperature and "uncertain" cut of the linear heads, from their out-of-fold probabilities.

    The heads are refitted on ``k`` patient-grouped folds of the training scans (seconds: the
    features are already there). None, with a line saying so, when the scans are too few to fold.
    """
    from lesiondet.io.splits import group_folds
    from lesiondet.oct.calibrate import expected_calibration_error, fit_temperature, uncertain_cut, with_temperature

    y = np.array([list(classes).index(s.label) for s in samples])
    groups = [s.patient for s in samples]
    counts = np.bincount(y, minlength=len(classes))
    if len(set(groups)) < k or counts[counts > 0].min() < 2:
        log(f"OCT: {len(set(groups))} patients are too few to calibrate out of fold; probabilities left as fitted, "
            "no 'uncertain' answer")
        return None
    folds = group_folds(groups, [s.label for s in samples], k=k, seed=int(cfg["seed"]), items="scans")
    proba = np.zeros((len(y), len(classes)))
    for f, f_flip in feats:
        for tr, te in folds:
            clf = fit_linear(f[tr], None if f_flip is None else f_flip[tr], [samples[i].label for i in tr], classes,
                             cfg)
            proba[te] += linear_proba(clf, f[te], len(classes)) / len(feats)
    t = fit_temperature(proba, y)
    scaled = with_temperature(proba, t)
    out: dict[str, Any] = {"temperature": t, "ece_before": expected_calibration_error(proba, y),
                           "ece_after": expected_calibration_error(scaled, y), "oof_accuracy":
                           float((proba.argmax(1) == y).mean()), "n": int(len(y)), "folds": len(folds)}
    target = float(cfg["uncertain_accuracy"])
    if target > 0:
        cut = uncertain_cut(scaled, y, target)
        out.update(uncertain_below=cut["threshold"], coverage=cut["coverage"], confident_accuracy=cut["accuracy"],
                   target_accuracy=target)
    log(f"OCT: temperature {t:.2f} (out-of-fold ECE {out['ece_before']:.3f} -> {out['ece_after']:.3f})" +
        (f"; 'uncertain' below {out['uncertain_below']:.2f}: {out['coverage']:.0%} of scans answered, "
         f"{out['confident_accuracy']:.1%} of them right" if "uncertain_below" in out else ""))
    return out


def train_oct(train_samples: Sequence[OctSample], val_samples: Sequence[OctSample], classes: Sequence[str],
              cfg: Mapping[str, Any], out_dir: str | Path, device: torch.device, heads: str = "both",
              time_limit_min: float | None = None, log: Callable[[str], None] = print,
              resume: str | Path | None = None) -> dict:
    """Train the fine-tuned head and/or the linear head; writes ``best.pt``, ``metrics.csv``, ``curves.png``.

    Returns ``{"out_dir", "history", "val": {head: accuracy}}``.
    """
    from lesiondet.engine.checkpoint import load_checkpoint, save_checkpoint
    from lesiondet.engine.rng import seed_everything
    from lesiondet.engine.trainer import LoopConfig, Trainer

    cfg = {**DEFAULT_OCT, **cfg}
    seed_everything(int(cfg["seed"]))
    out_dir = Path(out_dir)
    classes = list(classes)
    model = OctNet(cfg["arch"], len(classes), cfg["pretrained"] if resume is None else "none").to(device)
    meta: dict[str, Any] = {"format": OCT_FORMAT, "classes": classes, "config": cfg, "heads": {}}
    summary: dict[str, Any] = {"out_dir": str(out_dir), "history": [], "val": {}}

    if resume is not None:
        meta["heads"] = dict(load_checkpoint(resume)["heads"])
    elif heads in ("linear", "both"):
        # Features of the pretrained backbone, before any fine-tuning changes it: one head per input
        # size, their probabilities averaged (a scan's texture reads differently at each scale).
        sizes = linear_sizes(cfg)
        labels = [s.label for s in train_samples]
        feats = [linear_training_set(model, train_samples, z, device, cfg) for z in sizes]
        clfs = [fit_linear(f, f_flip, labels, classes, cfg) for f, f_flip in feats]
        calibration = calibrate_linear_heads(feats, train_samples, classes, cfg, log)
        # Cloned: fine-tuning below changes the body's tensors in place.
        body = {k: v.detach().cpu().clone() for k, v in model.body.state_dict().items()}
        # "head" alone is what lesiondet < 0.4 reads
        meta["heads"]["linear"] = {"body": body, "head": clfs[0].to_dict(), "sizes": sizes,
                                   "heads": [c.to_dict() for c in clfs], "calibration": calibration}
        if val_samples:
            vp = sum(linear_proba(c, extract_features(model, val_samples, z, device, interp=cfg["resize"]),
                                  len(classes)) for c, z in zip(clfs, sizes)) / len(sizes)
            acc = float(np.mean(vp.argmax(1) == [classes.index(s.label) for s in val_samples]))
            summary["val"]["linear"] = acc
            log(f"linear head (logistic regression on frozen features): val accuracy {acc:.3f}")

    if heads in ("finetune", "both"):
        meta["heads"]["finetune"] = {}
        meta["default_head"] = "finetune"
        task = OctTask(model, train_samples, val_samples, classes, cfg, meta, device)
        loop = LoopConfig(batch=int(cfg["batch"]), weight_decay=float(cfg["weight_decay"]),
                          workers=int(cfg["workers"]), amp=bool(cfg["amp"]), seed=int(cfg["seed"]),
                          patience=int(cfg["patience"]), sampler=resample_to(int(cfg["min_steps"]), int(cfg["batch"])))
        result = Trainer(task, loop, out_dir, device, time_limit_min=time_limit_min, log=log,
                         config={"oct": cfg, "heads": heads}).fit(resume)
        summary["history"] = result["history"]
        if result["history"] and val_samples:
            best = max(result["history"], key=lambda r: -r["val_loss"])
            summary["val"]["finetune"] = best["val_acc"]
    else:
        from lesiondet.engine.checkpoint import write_resolved

        meta["default_head"] = "linear"
        save_checkpoint(out_dir / "best.pt", meta)
        write_resolved(out_dir / "config.yaml", {"oct": cfg, "heads": heads})
    return summary


# --------------------------------------------------------------------------- inference and metrics
class OctClassifier:
    """A trained OCT checkpoint: ``predict_proba(paths)`` → ``[n, classes]`` probabilities.

    >>> clf = OctClassifier("runs/oct/best.pt")           # doctest: +SKIP
    >>> clf.predict("scan.jpeg")                          # doctest: +SKIP
    {'CNV': 0.91, 'DME': 0.05, 'DRUSEN': 0.03, 'NORMAL': 0.01}
    """

    def __init__(self, weights: str | Path, head: str | None = None, device: str = "auto",
                 trust_legacy: bool = False) -> None:
        from lesiondet.device import resolve_device
        from lesiondet.engine.checkpoint import load_kind, load_weights
        from lesiondet.errors import CheckpointError

        ck = load_kind(weights, (OCT_FORMAT, "lesiondet-oct/1"), "OCT", "pass best.pt from 'lesiondet oct train'",
                       trust_legacy)
        legacy = ck["format"] == "lesiondet-oct/1"
        self.classes = list(ck["classes"])
        self.head = head or ck["default_head"]
        if self.head not in ck["heads"]:
            raise CheckpointError(weights, f"this checkpoint has no '{self.head}' head",
                                  f"use --head {' or '.join(ck['heads'])}")
        self.cfg = {**DEFAULT_OCT, **ck["config"]}
        self.device = resolve_device(device)
        self.model = OctNet(self.cfg["arch"], len(self.classes), "none")
        h = ck["heads"][self.head]
        if self.head == "finetune":
            load_weights(self.model, h["model"] if legacy else ck["model"], weights, "the model they describe")
        else:
            load_weights(self.model.body, h["body"], weights, "the model they describe")
        # Linear heads per input size (lesiondet >= 0.4); older checkpoints have one, at the network's
        # size, and lesiondet 0.1 kept the scikit-learn pipeline itself (loaded only with trust_legacy).
        self.sizes = [int(z) for z in h.get("sizes", [self.cfg["size"]])] if self.head == "linear" \
            else [int(self.cfg["size"])]
        self.clfs = [PlainLogistic.from_dict(d) for d in h["heads"]] if "heads" in h else \
            [PlainLogistic.from_dict(h["head"]) if "head" in h else h.get("clf")]
        self.model.to(self.device).eval()
        # checkpoints without a resize key were trained on linearly resized scans
        self.tfs = [transforms(z, False, ck["config"].get("resize", "linear")) for z in self.sizes]
        self.calibration = h.get("calibration") if self.head == "linear" else None

    @torch.inference_mode()
    def predict_proba_arrays(self, images: Sequence[np.ndarray]) -> np.ndarray:
        def batch(tf: A.Compose) -> torch.Tensor:
            x = torch.stack([torch.from_numpy(tf(image=im)["image"]).permute(2, 0, 1) for im in images])
            return x.float().to(self.device)

        if self.head == "linear":
            p = sum(linear_proba(c, self.model.features(batch(tf)).cpu().numpy(), len(self.classes))
                    for c, tf in zip(self.clfs, self.tfs)) / len(self.clfs)
            if self.calibration:
                from lesiondet.oct.calibrate import with_temperature

                p = with_temperature(p, self.calibration["temperature"])
            return p
        return torch.softmax(self.model(batch(self.tfs[0])).float(), 1).cpu().numpy()

    @property
    def uncertain_below(self) -> float | None:
        """The stored top-probability cut under which the answer is "uncertain" (None: never)."""
        return (self.calibration or {}).get("uncertain_below")

    def answer(self, probs: Mapping[str, float]) -> str:
        """The most probable class, or ``"uncertain"`` when its probability is under the stored cut."""
        best = max(probs, key=probs.get)
        cut = self.uncertain_below
        return "uncertain" if cut is not None and probs[best] < cut else best

    def predict_proba(self, paths: Sequence[str | Path], batch: int = 16, progress: bool = False) -> np.ndarray:
        out = []
        for i in progress_bar(range(0, len(paths), batch), desc="oct predict", enabled=progress):
            out.append(self.predict_proba_arrays([read_scan(p) for p in paths[i:i + batch]]))
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)))

    def predict(self, path: str | Path) -> dict[str, float]:
        return dict(zip(self.classes, map(float, self.predict_proba([path])[0])))


def classification_metrics(y_true: Sequence[int], proba: np.ndarray, classes: Sequence[str]) -> dict:
    """Accuracy, confusion matrix and, per class, sensitivity, specificity and one-vs-rest ROC AUC.

    AUC is ``None`` for a class with no positives or no negatives in ``y_true``.
    """
    from sklearn.metrics import confusion_matrix, roc_auc_score

    y = np.asarray(y_true)
    pred = proba.argmax(1)
    k = len(classes)
    cm = confusion_matrix(y, pred, labels=list(range(k)))
    per = {}
    for i, c in enumerate(classes):
        tp = cm[i, i]
        fn = cm[i].sum() - tp
        fp = cm[:, i].sum() - tp
        tn = cm.sum() - tp - fn - fp
        pos = (y == i)
        auc = float(roc_auc_score(pos, proba[:, i])) if 0 < pos.sum() < len(y) else None
        per[c] = {"sensitivity": float(tp / (tp + fn)) if tp + fn else None,
                  "specificity": float(tn / (tn + fp)) if tn + fp else None,
                  "auc": auc, "n": int(pos.sum())}
    return {"accuracy": float((pred == y).mean()) if len(y) else float("nan"), "per_class": per,
            "confusion": cm.tolist(), "classes": list(classes), "n": int(len(y))}


def plot_prediction(path: str | Path, img: np.ndarray, probs: Mapping[str, float], title: str) -> Path:
    """The scan beside a bar chart of class probabilities."""
    from lesiondet.reporting.plots import pyplot, save_figure

    fig, (a, b) = pyplot().subplots(1, 2, figsize=(9, 3.4), gridspec_kw={"width_ratios": [1.6, 1]})
    a.imshow(img), a.axis("off"), a.set_title(title, fontsize=9)
    names = list(probs)
    best = max(probs, key=probs.get)
    b.barh(names[::-1], [probs[n] for n in names[::-1]],
           color=["tab:red" if n == best else "tab:gray" for n in names[::-1]])
    b.set_xlim(0, 1), b.set_xlabel("probability")
    return save_figure(fig, path)
