"""OCT fluid segmentation: a U-Net that outlines diabetic macular oedema fluid in B-scans.

The network is segmentation-models-pytorch's U-Net on timm's EfficientNet-Lite0
(``tu-efficientnet_lite0``) with the offline ImageNet weights the detector uses,
trained on the shared engine with Dice + BCE (fluid is a few percent of a scan's
pixels, so plain cross-entropy would learn to predict none). Augmentation fits
OCT: horizontal flips, small shifts and scales, intensity and contrast, and
multiplicative speckle-like noise. Scans are read at about their own resolution
(768x512) and trained on random windows of it, since small cysts vanish when a
whole scan is shrunk to what a training step can afford.

Data is a folder with ``images/`` and ``masks/`` matched by file name, or a CSV
``image,mask[,subject]`` (paths relative to it). Masks are 8-bit images where
non-zero is fluid. Splits keep each subject's B-scans on one side.
"""
from __future__ import annotations

import csv
import re
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
from lesiondet.engine.trainer import Phase, resample_to
from lesiondet.errors import LesiondetError
from lesiondet.images import read_rgb

SEG_FORMAT = "lesiondet-oct-seg/1"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DEFAULT_SEGMENT: dict[str, Any] = defaults("segment")
#: inference of checkpoints written before it was configurable (a cut at 0.5 with flip averaging)
LEGACY_INFERENCE: dict[str, Any] = {"threshold": 0.5, "tta_flip": True, "min_region_px": 0, "retina_only": False,
                                     "normalise": "none"}


# --------------------------------------------------------------------------- data
@dataclass(frozen=True)
class FluidScan:
    image: Path
    mask: Path | None  # None: prediction only
    subject: str


def subject_of(path: str | Path) -> str:
    """``subject01_bscan03`` → ``subject01``; otherwise the name before its last ``_``/``-`` number."""
    m = re.match(r"^(.*?)[_\-]?(?:bscan|scan|b)?[_\-]?\d+$", Path(path).stem, re.IGNORECASE)
    return m.group(1) if m and m.group(1) else Path(path).stem


def read_fluid_data(source: str | Path) -> list[FluidScan]:
    """Pairs from a folder (``images/`` + ``masks/``, matched by file stem) or an ``image,mask[,subject]`` CSV."""
    from lesiondet.images import list_images

    src = Path(source)
    scans: list[FluidScan] = []
    if src.is_dir():
        from lesiondet.fileio import list_dir

        subs = {p.name for p in list_dir(src) if p.is_dir()}  # an unreadable folder fails here, naming it
        if not {"images", "masks"} <= subs:
            raise LesiondetError(src, "expected images/ and masks/ sub-folders",
                                 "put the B-scans in images/ and their fluid masks (same file names) in masks/")
        images, masks = list_images(src / "images"), {p.stem: p for p in list_images(src / "masks")}
        for img in images:
            if img.stem not in masks:
                raise LesiondetError(img, "no mask with this name in masks/", "add its mask or remove the scan")
            scans.append(FluidScan(img, masks.pop(img.stem), subject_of(img)))
        if masks:
            extra = sorted(masks.values())[0]
            raise LesiondetError(extra, "mask without a scan of the same name in images/",
                                 "add the scan or remove the mask")
    elif src.is_file() and src.suffix.lower() == ".csv":
        with open(src, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            cols = [c.strip().lower() for c in reader.fieldnames or []]
            rows = list(reader)
        if "image" not in cols or "mask" not in cols:
            raise LesiondetError(src, f"expected columns image,mask[,subject]; found {','.join(cols) or 'none'}",
                                 "add the header row image,mask,subject")
        for raw in rows:
            row = {str(k).strip().lower(): (v or "").strip() for k, v in raw.items() if k is not None}
            if not row["image"]:
                continue
            img, mask = (Path(row[k]) if Path(row[k]).is_absolute() else src.parent / row[k] for k in ("image", "mask"))
            scans.append(FluidScan(img, mask, row.get("subject") or subject_of(img)))
        if not scans:
            raise LesiondetError(src, "the CSV lists no scans", "add image,mask rows")
    else:
        raise LesiondetError(src, "not a folder or a .csv file", "pass a folder with images/ and masks/, or a CSV")
    for s in scans:
        for p, what in ((s.image, "scan"), (s.mask, "mask")):
            if not p.is_file():
                raise LesiondetError(p, f"{what} not found", f"fix the path in {src}")
    return scans


def read_pair(scan: FluidScan) -> tuple[np.ndarray, np.ndarray]:
    """The scan (RGB uint8) and its mask (bool), checked to be the same size; 16-bit masks are refused."""
    img = read_rgb(scan.image, allow_16bit=True)
    mask = read_rgb(scan.mask).max(2) > 0
    if mask.shape != img.shape[:2]:
        raise LesiondetError(scan.mask, f"mask is {mask.shape[1]}x{mask.shape[0]} but its scan "
                             f"{scan.image.name} is {img.shape[1]}x{img.shape[0]}",
                             "give each scan a mask of exactly its size")
    return img, mask


def subject_split(scans: Sequence[FluidScan], val_fraction: float = 0.2, seed: int = 0
                  ) -> tuple[list[FluidScan], list[FluidScan]]:
    """Every subject's B-scans on one side."""
    from lesiondet.io.splits import group_split

    tr, va = group_split([s.subject for s in scans], None, val_fraction, seed, "scans", "subject")
    return [scans[i] for i in tr], [scans[i] for i in va]


def check_disjoint(train: Sequence[FluidScan], val: Sequence[FluidScan], where: str | Path) -> None:
    from lesiondet.io.splits import check_disjoint as disjoint

    disjoint([s.subject for s in train], [s.subject for s in val], where, "B-scans", "subject")


AUGMENTS = ("standard", "strong")
LOSSES = ("dice_bce", "dice_focal")
NORMALISE = ("none", "percentile")


def stretch(img: np.ndarray, **_: Any) -> np.ndarray:
    """The scan's 1st to 99.5th intensity percentiles stretched to 0-255: subjects and sessions differ in
    brightness and contrast more than fluid differs from tissue."""
    lo, hi = np.percentile(img, (1.0, 99.5))
    return np.clip((img.astype(np.float32) - lo) * (255.0 / max(hi - lo, 1.0)), 0, 255).astype(np.uint8)


def transforms(width: int, height: int, train: bool, augment: str = "standard", normalise: str = "none",
               crop: tuple[int, int] = (0, 0)) -> A.Compose:
    """Resize and normalise; for training also flips, shifts, intensity and speckle.

    ``normalise="percentile"`` first stretches each scan's own intensity range (``stretch``).

    ``crop`` (width, height), when set, trains on random windows of the resized scan: the network
    sees the scan at ``width`` x ``height`` detail for the cost of the window, and predicts on the
    whole scan (a U-Net is convolutional, so the size it runs at is free).

    ``strong`` widens them to what differs between devices and patients: gamma, blur, a larger
    scale range and vertical shift (the retina sits at different depths), stronger speckle.
    """
    if augment not in AUGMENTS:
        raise LesiondetError(None, f"unknown segment augment '{augment}'", f"use one of {', '.join(AUGMENTS)}")
    if normalise not in NORMALISE:
        raise LesiondetError(None, f"unknown segment normalise '{normalise}'", f"use one of {', '.join(NORMALISE)}")
    cw, ch = (int(v) for v in crop)
    if cw < 0 or ch < 0 or bool(cw) != bool(ch) or cw % 32 or ch % 32:
        raise LesiondetError(None, f"segment crop {cw}x{ch} is not a window the U-Net can take",
                             "set crop_width and crop_height to positive multiples of 32, or both to 0")
    # a window as large as the input is the input: a smaller width/height needs no crop setting of its own
    cw, ch = min(cw, width), min(ch, height)
    if (cw, ch) == (width, height):
        cw = ch = 0
    norm = A.Normalize(mean=MEAN, std=STD)
    resize = A.Compose([A.Lambda(image=stretch), A.Resize(height, width)] if normalise == "percentile"
                       else [A.Resize(height, width)])
    if not train:
        return A.Compose([resize, norm])
    if cw:  # the window is cut after the resize, so every other step sees full-detail pixels
        resize = A.Compose([resize, A.RandomCrop(ch, cw)])
    if augment == "standard":
        return A.Compose([
            resize,
            A.HorizontalFlip(p=0.5),
            A.Affine(translate_percent=(-0.05, 0.05), scale=(0.9, 1.1), border_mode=cv2.BORDER_CONSTANT, fill=0,
                     fill_mask=0, p=0.7),
            A.RandomBrightnessContrast(0.2, 0.2, p=0.7),
            A.MultiplicativeNoise(multiplier=(0.7, 1.3), per_channel=False, elementwise=True, p=0.5),  # speckle
            norm,
        ])
    return A.Compose([
        resize,
        A.HorizontalFlip(p=0.5),
        A.Affine(translate_percent={"x": (-0.05, 0.05), "y": (-0.12, 0.12)}, scale=(0.8, 1.25), rotate=(-8, 8),
                 border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=0.8),
        A.RandomBrightnessContrast(0.3, 0.3, p=0.8),
        A.RandomGamma((70, 150), p=0.5),
        A.GaussianBlur(blur_limit=(3, 5), p=0.2),
        A.MultiplicativeNoise(multiplier=(0.6, 1.4), per_channel=False, elementwise=True, p=0.6),  # speckle
        norm,
    ])


def train_transforms(cfg: Mapping[str, Any]) -> A.Compose:
    """The training transforms a segment config asks for."""
    return transforms(int(cfg["width"]), int(cfg["height"]), True, str(cfg["augment"]), str(cfg["normalise"]),
                      (int(cfg["crop_width"]), int(cfg["crop_height"])))


def check_recipe(cfg: Mapping[str, Any]) -> None:
    """The recipe's words and sizes, checked before a run folder exists (each a one-line error)."""
    cfg = {**DEFAULT_SEGMENT, **cfg}  # a checkpoint from before a key was added resumes with its default
    segment_loss(str(cfg["loss"]))
    train_transforms(cfg)


class FluidDataset(Dataset):
    """Scans and masks, decoded once and kept in memory (a Duke-sized set is tens of MB)."""

    def __init__(self, scans: Sequence[FluidScan], tf: A.Compose,
                 decoded: Mapping[FluidScan, tuple[np.ndarray, np.ndarray]] | None = None) -> None:
        self.scans, self.transforms = list(scans), tf
        # pairs the caller already decoded (to check them before training) are not decoded again
        self._cache = {i: decoded[s] for i, s in enumerate(self.scans) if decoded and s in decoded}

    def __len__(self) -> int:
        return len(self.scans)

    def pair(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if i not in self._cache:
            self._cache[i] = read_pair(self.scans[i])
        return self._cache[i]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img, mask = self.pair(i)
        t = self.transforms(image=img, mask=mask.astype(np.uint8))
        return torch.from_numpy(t["image"]).permute(2, 0, 1).float(), torch.from_numpy(t["mask"]).float()[None]


# --------------------------------------------------------------------------- model
def build_unet(pretrained: str = "imagenet") -> nn.Module:
    """segmentation-models-pytorch U-Net on timm's EfficientNet-Lite0, offline ImageNet weights in the encoder."""
    import segmentation_models_pytorch as smp

    if pretrained not in ("imagenet", "none"):
        raise LesiondetError(None, f"unknown encoder weights '{pretrained}'", "use imagenet or none")
    net = smp.Unet("tu-efficientnet_lite0", encoder_weights=None, in_channels=3, classes=1)
    if pretrained == "imagenet":
        from lesiondet.nn.backbones import lite0_weights_path, rename_lite0_keys

        state = rename_lite0_keys(torch.load(lite0_weights_path(), map_location="cpu", weights_only=True))
        head = ("conv_head.", "bn2.", "classifier.")  # the classifier's top, absent from the feature encoder
        net.encoder.model.load_state_dict({k: v for k, v in state.items() if not k.startswith(head)}, strict=True)
    return net


def dice_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    import segmentation_models_pytorch as smp

    dice = smp.losses.DiceLoss("binary", from_logits=True)
    return dice(logits.float(), target) + nn.functional.binary_cross_entropy_with_logits(logits.float(), target)


def dice_focal(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Dice + focal (gamma 2): the per-pixel term weighs the hard pixels, the thin fluid borders."""
    import segmentation_models_pytorch as smp

    dice = smp.losses.DiceLoss("binary", from_logits=True)
    focal = smp.losses.FocalLoss("binary", gamma=2.0)
    return dice(logits.float(), target) + 10.0 * focal(logits.float(), target)  # 10: focal is ~10x smaller than BCE


def segment_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if name not in LOSSES:
        raise LesiondetError(None, f"unknown segment loss '{name}'", f"use one of {', '.join(LOSSES)}")
    return dice_bce if name == "dice_bce" else dice_focal


# --------------------------------------------------------------------------- post-processing
def retina_band(img: np.ndarray, margin_px: int = 20, level: float = 0.5) -> np.ndarray:
    """Pixels from the inner retinal surface to just below the RPE in each column: the retina, not
    the vitreous above it or the choroid below.

    Both are where the smoothed column first and last reaches ``level`` of its brightest value (the
    nerve fibre layer and the RPE are the bright bands). White export padding counts as background.
    """
    grey = (img.mean(2) if img.ndim == 3 else img).astype(np.float32)
    grey[grey >= 250] = 0  # white padding around Spectralis exports
    smooth = cv2.GaussianBlur(grey, (0, 0), sigmaX=8, sigmaY=3)
    h = smooth.shape[0]
    bright = smooth >= level * smooth.max(0, keepdims=True)
    top = bright.argmax(0)
    bottom = h - 1 - bright[::-1].argmax(0)
    rows = np.arange(h)[:, None]
    return (rows >= (top - margin_px)[None]) & (rows <= (bottom + margin_px)[None])


def clean_mask(prob: np.ndarray, threshold: float = 0.5, min_region_px: int = 0,
               retina: np.ndarray | None = None) -> np.ndarray:
    """The fluid mask from a probability map: cut, keep inside ``retina`` if given, drop small regions."""
    mask = prob >= threshold
    if retina is not None:
        mask &= retina
    if min_region_px > 0 and mask.any():
        n, lab, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        keep = np.zeros(n, bool)
        keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_region_px
        mask = keep[lab]
    return mask


def overlap_counts(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int, int]:
    """True positives, false positives, false negatives, true negatives."""
    tp = int(np.logical_and(pred, truth).sum())
    fp = int(np.logical_and(pred, ~truth).sum())
    fn = int(np.logical_and(~pred, truth).sum())
    return tp, fp, fn, int(pred.size - tp - fp - fn)


def dice_of(tp: int, fp: int, fn: int) -> float:
    """Dice; 1 when both masks are empty (nothing to find and nothing found)."""
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


class SegmentTask:
    """The fluid U-Net as the engine sees it; fitness is pooled validation Dice at model resolution."""

    def __init__(self, model: nn.Module, train: Sequence[FluidScan], val: Sequence[FluidScan],
                 cfg: Mapping[str, Any], meta: dict[str, Any],
                 decoded: Mapping[FluidScan, tuple[np.ndarray, np.ndarray]] | None = None) -> None:
        self.model, self.cfg, self._meta = model, cfg, meta
        w, h = int(cfg["width"]), int(cfg["height"])
        self.loss_fn = segment_loss(str(cfg["loss"]))
        norm = str(cfg["normalise"])
        self.dataset = FluidDataset(train, train_transforms(cfg), decoded)
        self.val = DataLoader(FluidDataset(val or train, transforms(w, h, False, normalise=norm), decoded),
                              batch_size=int(cfg["batch"]))

    def phases(self) -> list[Phase]:
        return [Phase("all", int(self.cfg["epochs"]), float(self.cfg["lr"]), None, "adamw",
                      int(self.cfg["warmup_iters"]))]

    def train_dataset(self) -> Dataset:
        return self.dataset

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> dict[str, torch.Tensor]:
        x, y = batch[0].to(device), batch[1].to(device)
        return {"loss": self.loss_fn(model(x), y)}

    @torch.inference_mode()
    def validate(self, model: nn.Module, device: torch.device) -> dict[str, Any]:
        model.eval()
        sums, total, n = np.zeros(4, np.int64), 0.0, 0
        for x, y in self.val:
            logits = model(x.to(device)).float().cpu()
            total += float(self.loss_fn(logits, y)) * len(x)
            n += len(x)
            sums += overlap_counts(logits.numpy() > 0, y.numpy() > 0.5)
        tp, fp, fn, _ = sums
        return {"val_loss": total / max(n, 1), "val_dice": dice_of(tp, fp, fn)}

    def fitness(self, metrics: Mapping[str, Any]) -> float:
        return float(metrics["val_dice"])

    def history_row(self, metrics: Mapping[str, Any]) -> dict[str, float]:
        return dict(metrics)

    def meta(self) -> dict[str, Any]:
        return self._meta


def train_segmenter(train: Sequence[FluidScan], val: Sequence[FluidScan], cfg: Mapping[str, Any],
                    out_dir: str | Path, device: torch.device, *, time_limit_min: float | None = None,
                    log: Callable[[str], None] = print, resume: str | Path | None = None,
                    decoded: Mapping[FluidScan, tuple[np.ndarray, np.ndarray]] | None = None) -> dict[str, Any]:
    """Train the U-Net on the engine; writes ``best.pt``, ``last.pt``, ``metrics.csv``, ``curves.png``.

    ``decoded``: ``read_pair`` results the caller already has, so no file is decoded twice."""
    from lesiondet.engine.rng import seed_everything
    from lesiondet.engine.trainer import LoopConfig, Trainer

    cfg = {**DEFAULT_SEGMENT, **cfg}
    seed_everything(int(cfg["seed"]))
    model = build_unet(cfg["pretrained"] if resume is None else "none").to(device)
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)  # oneDNN's fast convolution layout
    meta = {"format": SEG_FORMAT, "config": cfg, "threshold": float(cfg["threshold"])}
    task = SegmentTask(model, train, val, cfg, meta, decoded)
    loop = LoopConfig(batch=int(cfg["batch"]), weight_decay=float(cfg["weight_decay"]), workers=int(cfg["workers"]),
                      amp=bool(cfg["amp"]), cpu_bf16=bool(cfg["cpu_bf16"]), seed=int(cfg["seed"]),
                      patience=int(cfg["patience"]), sampler=resample_to(int(cfg["min_steps"]), int(cfg["batch"])),
                      augment=task.dataset.transforms)
    result = Trainer(task, loop, out_dir, device, time_limit_min=time_limit_min, log=log,
                     config={"segment": cfg}).fit(resume)
    return {"out_dir": str(out_dir), "history": result["history"]}


# --------------------------------------------------------------------------- inference
class FluidSegmenter:
    """A trained fluid U-Net: ``predict(img)`` → fluid probability at the scan's own size."""

    def __init__(self, weights: str | Path, device: str = "auto", trust_legacy: bool = False) -> None:
        from lesiondet.device import resolve_device
        from lesiondet.engine.checkpoint import load_kind, load_weights

        ck = load_kind(weights, SEG_FORMAT, "OCT fluid", "pass best.pt from 'lesiondet oct segment train'",
                       trust_legacy)
        # checkpoints from before the post-processing keys keep the inference they were scored with
        self.cfg = {**DEFAULT_SEGMENT, **LEGACY_INFERENCE, **ck["config"]}
        self.threshold = float(self.cfg["threshold"])
        self.device = resolve_device(device)
        self.model = build_unet("none")
        load_weights(self.model, ck["model"], weights, "the fluid U-Net")
        self.model.to(self.device).eval()
        self.tf = transforms(int(self.cfg["width"]), int(self.cfg["height"]), False,
                             normalise=str(self.cfg["normalise"]))

    @torch.inference_mode()
    def probability(self, img: np.ndarray, flip: bool | None = None) -> np.ndarray:
        """Fluid probability per pixel of an RGB uint8 scan, averaged with the mirrored scan when ``flip``
        (default: the checkpoint's ``tta_flip``)."""
        flip = bool(self.cfg["tta_flip"]) if flip is None else flip
        x = torch.from_numpy(self.tf(image=img)["image"]).permute(2, 0, 1).float()[None].to(self.device)
        p = torch.sigmoid(self.model(x).float())
        if flip:
            p = (p + torch.sigmoid(self.model(x.flip(3)).float()).flip(3)) / 2
        return cv2.resize(p[0, 0].cpu().numpy(), (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)

    def mask(self, img: np.ndarray) -> np.ndarray:
        """The fluid mask with the checkpoint's post-processing (cut, retina band, small regions dropped)."""
        retina = retina_band(img) if self.cfg["retina_only"] else None
        return clean_mask(self.probability(img), self.threshold, int(self.cfg["min_region_px"]), retina)


def fluid_area_mm2(pixels: int, spacing: Sequence[float]) -> float:
    """``pixels`` of a B-scan as mm²; ``spacing`` is µm per pixel across (x) and in depth (z).

    Duke's Spectralis B-scans are about 11.3 × 3.9 µm per pixel, so one pixel is about 4.4e-5 mm².
    """
    sx, sz = (float(v) for v in spacing)
    return pixels * sx * sz / 1e6


def fluid_summary(mask: np.ndarray, spacing: Sequence[float] | None = None) -> dict[str, Any]:
    """Fluid area in pixels (and mm² with ``spacing``), share of the scan, and connected regions (8-connected)."""
    n, _ = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    out = {"fluid_px": int(mask.sum()), "fluid_fraction": round(float(mask.mean()), 6), "regions": int(n - 1),
           "width": int(mask.shape[1]), "height": int(mask.shape[0])}
    if spacing is not None:
        out["fluid_mm2"] = round(fluid_area_mm2(int(mask.sum()), spacing), 6)
        out["spacing_um"] = [float(v) for v in spacing]
    return out


#: Fluid below this share of the B-scan counts as none visible (a few stray pixels are not oedema).
MIN_FLUID_FRACTION = 0.0005


def fluid_flag(oct_class: str, fluid: Mapping[str, Any]) -> str | None:
    """A reader should look twice when the class and the fluid disagree."""
    has_fluid = fluid["fluid_fraction"] >= MIN_FLUID_FRACTION
    if oct_class == "DME" and not has_fluid:
        return "DME called but no fluid visible"
    if oct_class == "NORMAL" and has_fluid:
        return f"fluid ({fluid['fluid_fraction']:.2%} of the scan) in a scan called NORMAL"
    return None


def overlay(img: np.ndarray, pred: np.ndarray, truth: np.ndarray | None = None) -> np.ndarray:
    """The scan with predicted fluid outlined in yellow (and the reference, when given, in cyan)."""
    out = img.copy()
    if truth is not None:
        cs, _ = cv2.findContours(truth.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, cs, -1, (0, 220, 255), 1)
    cs, _ = cv2.findContours(pred.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, cs, -1, (255, 220, 0), 1)
    return out


def segmentation_metrics(rows: Sequence[dict[str, Any]], sums: np.ndarray,
                         spacing: Sequence[float] | None = None) -> dict[str, Any]:
    """The ``oct segment eval --json`` document from per-scan rows and pooled (tp, fp, fn, tn).

    With ``spacing`` (µm per pixel, x and z) each row also gets its fluid areas in mm² and their
    absolute difference, and the document their mean and median: clinicians read fluid as an area
    or a volume, not as an overlap score.
    """
    tp, fp, fn, tn = (int(v) for v in sums)
    m = {"dice": dice_of(tp, fp, fn), "iou": 1.0 if tp + fp + fn == 0 else tp / (tp + fp + fn),
         "pixel_accuracy": (tp + tn) / max(tp + fp + fn + tn, 1),
         "dice_per_scan_mean": float(np.mean([r["dice"] for r in rows])) if rows else float("nan"),
         "per_scan": list(rows), "n": len(rows),
         "both_empty": [r["image"] for r in rows if r["fluid_px_true"] == 0 and r["fluid_px_pred"] == 0]}
    if spacing is not None:
        for r in m["per_scan"]:
            r["fluid_mm2_true"] = fluid_area_mm2(r["fluid_px_true"], spacing)
            r["fluid_mm2_pred"] = fluid_area_mm2(r["fluid_px_pred"], spacing)
            r["area_abs_error_mm2"] = abs(r["fluid_mm2_pred"] - r["fluid_mm2_true"])
        err = [r["area_abs_error_mm2"] for r in m["per_scan"]]
        m["spacing_um"] = [float(v) for v in spacing]
        m["area_abs_error_mm2_mean"] = float(np.mean(err)) if err else float("nan")
        m["area_abs_error_mm2_median"] = float(np.median(err)) if err else float("nan")
    return m


def plot_grid(path: str | Path, panels: Sequence[tuple[str, np.ndarray]], cols: int = 3) -> Path:
    """Overlays (prediction yellow, reference cyan) in a grid, titled with each scan's Dice."""
    from lesiondet.reporting.plots import pyplot, save_figure

    rows = max(1, -(-len(panels) // cols))
    fig, axes = pyplot().subplots(rows, cols, figsize=(4.2 * cols, 2.9 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (title, im) in zip(axes.ravel(), panels):
        ax.imshow(im), ax.set_title(title, fontsize=8)
    fig.suptitle("fluid: prediction (yellow) against reference (cyan)", fontsize=10)
    return save_figure(fig, path)


def plot_areas(path: str | Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Predicted against reference fluid area per scan, with the identity line."""
    from lesiondet.reporting.plots import pyplot, save_figure

    t = np.array([r["fluid_px_true"] for r in rows], float)
    p = np.array([r["fluid_px_pred"] for r in rows], float)
    fig, ax = pyplot().subplots(figsize=(4.8, 4.5))
    ax.scatter(t, p, s=14)
    hi = max(t.max(initial=1), p.max(initial=1)) * 1.05
    ax.plot([0, hi], [0, hi], "k--", lw=0.8)
    ax.set_xlim(0, hi), ax.set_ylim(0, hi)
    ax.set_xlabel("reference fluid area (px)"), ax.set_ylabel("predicted fluid area (px)")
    ax.set_title(f"fluid area per scan (n={len(rows)})", fontsize=9)
    return save_figure(fig, path)
