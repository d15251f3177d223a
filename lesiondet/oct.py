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
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import albumentations as A
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .errors import LesiondetError
from .images import read_rgb
from .progress import progress as progress_bar
from .voc import IMAGE_SUFFIXES

OCT_CLASSES = ("CNV", "DME", "DRUSEN", "NORMAL")
OCT_FORMAT = "lesiondet-oct/1"
ARCHS = ("efficientnet_lite0", "mobilenet_v3_large", "resnet18", "resnet50")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

DEFAULT_OCT: dict[str, Any] = {
    "arch": "efficientnet_lite0",
    "pretrained": "imagenet",   # imagenet (offline Lite0) | torchvision (hub cache) | none
    "size": 224,
    "batch": 16,
    "head_epochs": 3,           # stage 1: backbone frozen
    "epochs": 20,               # stage 2: everything, at lr_finetune
    "lr_head": 1e-3,
    "lr_finetune": 1e-4,
    "weight_decay": 1e-4,
    "patience": 4,              # early stopping on validation loss
    "min_steps": 10,            # optimizer steps per epoch at least (small sets are resampled)
    "workers": 0,
    "seed": 0,
    "amp": True,
}


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
        from .fileio import list_dir

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


def patient_split(samples: Sequence[OctSample], val_fraction: float = 0.2, seed: int = 0
                  ) -> tuple[list[OctSample], list[OctSample]]:
    """Split with every patient's scans on one side, classes balanced as far as groups allow."""
    from sklearn.model_selection import StratifiedGroupKFold

    labels = [s.label for s in samples]
    groups = [s.patient for s in samples]
    n_splits = max(2, min(round(1 / val_fraction), len(set(groups))))
    if len(set(groups)) < 2:
        raise LesiondetError(None, "all scans belong to one patient; cannot split by patient",
                             "pass --val with scans of other patients")
    counts = np.bincount(np.unique(labels, return_inverse=True)[1])
    if counts.min() >= n_splits:
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        train_idx, val_idx = next(splitter.split(np.zeros(len(samples)), labels, groups))
    else:  # a class too rare to stratify: plain group split
        from sklearn.model_selection import GroupShuffleSplit

        splitter = GroupShuffleSplit(n_splits=1, test_size=val_fraction, random_state=seed)
        train_idx, val_idx = next(splitter.split(np.zeros(len(samples)), labels, groups))
    return [samples[i] for i in train_idx], [samples[i] for i in val_idx]


def read_scan(path: str | Path) -> np.ndarray:
    """An OCT scan as RGB uint8: grey replicated to three channels, 16-bit scaled to 8 bits (OCT exports are)."""
    return read_rgb(path, allow_16bit=True)


def transforms(size: int, train: bool) -> A.Compose:
    """Training: random resized crop, small rotation, flip, brightness/contrast. Evaluation: resize only."""
    norm = A.Normalize(mean=MEAN, std=STD)
    if not train:
        return A.Compose([A.Resize(size, size), norm])
    return A.Compose([
        A.RandomResizedCrop(size=(size, size), scale=(0.7, 1.0), ratio=(0.8, 1.25)),
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
            from .backbones import efficientnet_lite0

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

    from .backbones import require_cached

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
    """Inverse-frequency weights, mean 1: Kermany's training set is 45% CNV and 10% drusen."""
    counts = np.array([sum(s.label == c for s in samples) for c in classes], float)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / len(classes), 0.0)
    return torch.tensor(w / w[w > 0].mean(), dtype=torch.float32)


# --------------------------------------------------------------------------- training
def _run_epoch(model, loader, loss_fn, device, opt=None, scaler=None, use_amp=False, desc=""):
    train = opt is not None
    model.train(train)
    total, n, correct = 0.0, 0, 0
    with torch.set_grad_enabled(train):
        for x, y in progress_bar(loader, desc=desc or "", enabled=bool(desc)):
            x, y = x.to(device), y.to(device)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                logits = model(x)
                loss = loss_fn(logits, y)
            if train:
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            total += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            n += len(y)
    return total / max(n, 1), correct / max(n, 1)


@torch.inference_mode()
def extract_features(model: OctNet, samples: Sequence[OctSample], size: int, device: torch.device,
                     batch: int = 16) -> np.ndarray:
    model.eval()
    loader = DataLoader(OctDataset(samples, sorted({s.label for s in samples}), transforms(size, False)),
                        batch_size=batch)
    return np.concatenate([model.features(x.to(device)).float().cpu().numpy() for x, _ in loader]) \
        if len(samples) else np.zeros((0, model.head.in_features))


def fit_linear_head(features: np.ndarray, labels: Sequence[str], classes: Sequence[str]):
    """Standardised features → class-balanced multinomial logistic regression (scikit-learn)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.array([list(classes).index(lab) for lab in labels])
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000, class_weight="balanced"))
    return clf.fit(features, y)


def linear_proba(clf, features: np.ndarray, n_classes: int) -> np.ndarray:
    """Probabilities for every class, including classes absent when the head was fitted."""
    p = clf.predict_proba(features)
    out = np.zeros((len(features), n_classes))
    out[:, clf.classes_] = p
    return out


def train_oct(train_samples: Sequence[OctSample], val_samples: Sequence[OctSample], classes: Sequence[str],
              cfg: Mapping[str, Any], out_dir: str | Path, device: torch.device, heads: str = "both",
              time_limit_min: float | None = None, log: Callable[[str], None] = print) -> dict:
    """Train the fine-tuned head and/or the linear head; writes ``best.pt``, ``metrics.csv``, ``curves.png``.

    Returns ``{"out_dir", "history", "val": {head: accuracy}}``.
    """
    from .fileio import save_torch
    from .report import write_metrics_csv

    cfg = {**DEFAULT_OCT, **cfg}
    torch.manual_seed(int(cfg["seed"]))
    np.random.seed(int(cfg["seed"]))
    out_dir = Path(out_dir)
    classes = list(classes)
    model = OctNet(cfg["arch"], len(classes), cfg["pretrained"]).to(device)
    ckpt: dict[str, Any] = {"format": OCT_FORMAT, "classes": classes, "config": cfg, "heads": {}}
    summary: dict[str, Any] = {"out_dir": str(out_dir), "history": [], "val": {}}
    budget = None if time_limit_min is None else time_limit_min * 60
    t0 = time.monotonic()

    if heads in ("linear", "both"):
        # Features of the pretrained backbone, before any fine-tuning changes it.
        feats = extract_features(model, train_samples, cfg["size"], device)
        clf = fit_linear_head(feats, [s.label for s in train_samples], classes)
        # Cloned: fine-tuning below changes the body's tensors in place.
        body = {k: v.detach().cpu().clone() for k, v in model.body.state_dict().items()}
        ckpt["heads"]["linear"] = {"body": body, "clf": clf}
        if val_samples:
            vp = linear_proba(clf, extract_features(model, val_samples, cfg["size"], device), len(classes))
            acc = float(np.mean(vp.argmax(1) == [classes.index(s.label) for s in val_samples]))
            summary["val"]["linear"] = acc
            log(f"linear head (logistic regression on frozen features): val accuracy {acc:.3f}")

    if heads in ("finetune", "both"):
        w = class_weights(train_samples, classes).to(device)
        loss_fn = nn.CrossEntropyLoss(weight=w, label_smoothing=0.05)
        val_loss_fn = nn.CrossEntropyLoss()
        gen = torch.Generator().manual_seed(int(cfg["seed"]))
        train_ds = OctDataset(train_samples, classes, transforms(cfg["size"], True))
        # A few dozen scans make one or two steps an epoch; resample so each epoch moves the weights.
        n_draw = max(len(train_ds), int(cfg["min_steps"]) * int(cfg["batch"]))
        sampler = torch.utils.data.RandomSampler(train_ds, replacement=n_draw > len(train_ds), num_samples=n_draw,
                                                 generator=gen)
        tl = DataLoader(train_ds, batch_size=cfg["batch"], sampler=sampler, num_workers=cfg["workers"],
                        drop_last=n_draw > cfg["batch"])
        vl = DataLoader(OctDataset(val_samples, classes, transforms(cfg["size"], False)), batch_size=cfg["batch"],
                        num_workers=cfg["workers"])
        use_amp = bool(cfg["amp"]) and device.type == "cuda"
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
        best, best_state, bad, history = math.inf, None, 0, summary["history"]
        stages = [("head", int(cfg["head_epochs"]), float(cfg["lr_head"])),
                  ("all", int(cfg["epochs"]), float(cfg["lr_finetune"]))]
        epoch = 0
        for stage, n_epochs, lr in stages:
            for p in model.body.parameters():
                p.requires_grad_(stage == "all")
            params = [p for p in model.parameters() if p.requires_grad]
            opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg["weight_decay"])
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, n_epochs))
            bad = 0
            for _ in range(n_epochs):
                epoch += 1
                tr_loss, tr_acc = _run_epoch(model, tl, loss_fn, device, opt, scaler, use_amp,
                                             f"oct {stage} epoch {epoch}")
                sched.step()
                va_loss, va_acc = _run_epoch(model, vl, val_loss_fn, device) if val_samples else (tr_loss, tr_acc)
                history.append({"epoch": epoch, "stage": stage, "time_s": round(time.monotonic() - t0, 1),
                                "loss": tr_loss, "acc": tr_acc, "val_loss": va_loss, "val_acc": va_acc})
                improved = va_loss < best - 1e-4
                if improved:
                    best, bad = va_loss, 0
                    best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                    ckpt["heads"]["finetune"] = {"model": best_state, "epoch": epoch, "val_loss": va_loss,
                                                 "val_acc": va_acc}
                    save_torch(out_dir / "best.pt", ckpt)
                else:
                    bad += 1
                write_metrics_csv(out_dir / "metrics.csv", history)
                plot_oct_curves(out_dir / "curves.png", history)
                log(f"epoch {epoch} ({stage})  loss {tr_loss:.3f}  val loss {va_loss:.3f}  val acc {va_acc:.3f}"
                    + ("  *best*" if improved else ""))
                if budget is not None and time.monotonic() - t0 > budget:
                    log(f"time limit of {time_limit_min:g} min reached")
                    break
                if stage == "all" and bad >= int(cfg["patience"]):
                    log(f"early stop: validation loss has not improved for {bad} epochs")
                    break
            if budget is not None and time.monotonic() - t0 > budget:
                break
        if best_state is not None:
            model.load_state_dict(best_state)  # early stopping restores the best weights
            summary["val"]["finetune"] = ckpt["heads"]["finetune"]["val_acc"]
    ckpt["default_head"] = "finetune" if "finetune" in ckpt["heads"] else "linear"
    save_torch(out_dir / "best.pt", ckpt)
    return summary


def plot_oct_curves(path: str | Path, rows: Sequence[dict]) -> Path:
    from .report import pyplot, save_figure

    ep = [r["epoch"] for r in rows]
    fig, (a, b) = pyplot().subplots(1, 2, figsize=(9, 3.4))
    a.plot(ep, [r["loss"] for r in rows], label="train"), a.plot(ep, [r["val_loss"] for r in rows], label="val")
    a.set_title("loss"), a.set_xlabel("epoch"), a.legend()
    b.plot(ep, [r["acc"] for r in rows], label="train"), b.plot(ep, [r["val_acc"] for r in rows], label="val")
    b.set_title("accuracy"), b.set_xlabel("epoch"), b.set_ylim(0, 1), b.legend()
    return save_figure(fig, path)


# --------------------------------------------------------------------------- inference and metrics
class OctClassifier:
    """A trained OCT checkpoint: ``predict_proba(paths)`` → ``[n, classes]`` probabilities.

    >>> clf = OctClassifier("runs/oct/best.pt")           # doctest: +SKIP
    >>> clf.predict("scan.jpeg")                          # doctest: +SKIP
    {'CNV': 0.91, 'DME': 0.05, 'DRUSEN': 0.03, 'NORMAL': 0.01}
    """

    def __init__(self, weights: str | Path, head: str | None = None, device: str = "auto") -> None:
        from .device import resolve_device
        from .model import load_checkpoint
        from .errors import CheckpointError

        ck = load_checkpoint(str(weights))
        if not isinstance(ck, Mapping) or ck.get("format") != OCT_FORMAT:
            raise CheckpointError(weights, "not a lesiondet OCT checkpoint", "pass best.pt from 'lesiondet oct train'")
        self.classes = list(ck["classes"])
        self.head = head or ck["default_head"]
        if self.head not in ck["heads"]:
            raise CheckpointError(weights, f"this checkpoint has no '{self.head}' head",
                                  f"use --head {' or '.join(ck['heads'])}")
        self.cfg = {**DEFAULT_OCT, **ck["config"]}
        self.device = resolve_device(device)
        self.model = OctNet(self.cfg["arch"], len(self.classes), "none")
        h = ck["heads"][self.head]
        try:
            if self.head == "finetune":
                self.model.load_state_dict(h["model"])
            else:
                self.model.body.load_state_dict(h["body"])
        except RuntimeError:
            raise CheckpointError(weights, "weights do not match the model they describe",
                                  "retrain, or use the lesiondet version that wrote it") from None
        self.clf = h.get("clf")
        self.model.to(self.device).eval()
        self.tf = transforms(self.cfg["size"], False)

    @torch.inference_mode()
    def predict_proba_arrays(self, images: Sequence[np.ndarray]) -> np.ndarray:
        x = torch.stack([torch.from_numpy(self.tf(image=im)["image"]).permute(2, 0, 1) for im in images])
        x = x.float().to(self.device)
        if self.head == "linear":
            return linear_proba(self.clf, self.model.features(x).cpu().numpy(), len(self.classes))
        return torch.softmax(self.model(x).float(), 1).cpu().numpy()

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
    from .report import pyplot, save_figure

    fig, (a, b) = pyplot().subplots(1, 2, figsize=(9, 3.4), gridspec_kw={"width_ratios": [1.6, 1]})
    a.imshow(img), a.axis("off"), a.set_title(title, fontsize=9)
    names = list(probs)
    best = max(probs, key=probs.get)
    b.barh(names[::-1], [probs[n] for n in names[::-1]],
           color=["tab:red" if n == best else "tab:gray" for n in names[::-1]])
    b.set_xlim(0, 1), b.set_xlabel("probability")
    return save_figure(fig, path)
