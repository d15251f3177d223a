"""COCO-style box mAP through pycocotools, with a per-image cap of 1000 detections.

``COCOeval.summarize()`` only prints figures for maxDets 1/10/100 (and reports
-1 for mAP@[.5:.95] when 100 is missing), so the numbers here are read straight
from ``eval['precision']`` at our cap instead.

``difficult`` ground truth is passed as ``iscrowd=1``: pycocotools then neither
rewards nor penalises detections on it, exactly as it treats crowd regions.
"""
from __future__ import annotations

import contextlib
import io
import math
from dataclasses import replace
from typing import Mapping, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from lesiondet.errors import LesiondetError
from lesiondet.io.voc import VocRecord

MAX_DETS = 1000


def _coco(images: list[dict], categories: list[dict], annotations: list[dict]) -> COCO:
    coco = COCO()
    coco.dataset = {"images": images, "categories": categories, "annotations": annotations}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def to_coco(gt: Sequence[VocRecord], preds: Sequence[VocRecord], classes: Sequence[str]) -> tuple[COCO, COCO]:
    """Ground truth and detections as pycocotools objects; predictions matched by file stem."""
    cat = {c: i + 1 for i, c in enumerate(classes)}
    images = [{"id": i + 1, "width": r.width, "height": r.height, "file_name": r.image_path.name}
              for i, r in enumerate(gt)]
    image_id = {r.stem: i + 1 for i, r in enumerate(gt)}
    if len(image_id) != len(gt):
        raise LesiondetError(None, "two ground-truth files share a name stem", "rename one of them")
    categories = [{"id": i, "name": c} for c, i in cat.items()]
    gt_anns, dt_anns = [], []
    for r in gt:
        for o in r.objects:
            x0, y0, x1, y1 = o.box
            gt_anns.append({"id": len(gt_anns) + 1, "image_id": image_id[r.stem], "category_id": cat[o.label],
                            "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                            "iscrowd": int(o.difficult)})
    for p in preds:
        if p.stem not in image_id:
            continue  # a prediction for an image without ground truth cannot be scored
        for o in p.objects:
            if o.label not in cat:
                raise LesiondetError(p.xml_path or p.image_path, f"predicted class '{o.label}' is not in the "
                                     f"ground truth classes {list(classes)}", "evaluate with the matching --labels")
            x0, y0, x1, y1 = o.box
            dt_anns.append({"id": len(dt_anns) + 1, "image_id": image_id[p.stem], "category_id": cat[o.label],
                            "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0,
                            "score": 1.0 if o.score is None else float(o.score)})
    return _coco(images, categories, gt_anns), _coco(images, categories, dt_anns)


def _precision(coco_gt: COCO, coco_dt: COCO, max_dets: int, **params) -> np.ndarray:
    """``COCOeval`` at ``max_dets`` detections per image (plus any ``params``); its precision array."""
    ev = COCOeval(coco_gt, coco_dt, "bbox")
    ev.params.maxDets = [max_dets]
    for k, v in params.items():
        setattr(ev.params, k, v)
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
    return ev.eval["precision"]  # [IoU thresholds, recall points, classes, areas, maxDets]


def _mean(a: np.ndarray) -> float:
    a = a[a > -1]
    return float(a.mean()) if a.size else float("nan")


def merge_partial(gt: Sequence[VocRecord], preds: Sequence[VocRecord], classes: Sequence[str],
                  partial: Mapping[str, Sequence[str]], iou: float = 0.5) -> tuple[list[VocRecord], list[str], dict]:
    """Predictions scored against ground truth that uses partial labels (``HE_MA`` = HE or MA).

    For each partial label the ground truth uses that is not itself a model class (an older model's
    ``HE_MA`` is), the predictions of its members are relabelled to it and merged by NMS at ``iou``
    (an HE and an MA box on one lesion would otherwise be a hit and a false positive). Returns the
    predictions, the class list to score (members replaced by the partial label) and
    ``{partial: [members merged]}``.
    """
    present = {o.label for r in gt for o in r.objects}
    merged = {p: [c for c in m if c in classes] for p, m in partial.items() if p in present and p not in classes}
    if not merged:
        return list(preds), list(classes), {}
    to = {m: p for p, ms in merged.items() for m in ms}
    names = [c for c in classes if c not in to] + list(merged)
    out = []
    for r in preds:
        objs = [replace(o, label=to.get(o.label, o.label)) for o in r.objects]
        if objs:
            import torch
            from torchvision.ops import batched_nms

            idx = {c: i for i, c in enumerate(names)}
            keep = batched_nms(torch.tensor([o.box for o in objs], dtype=torch.float32),
                               torch.tensor([1.0 if o.score is None else o.score for o in objs]),
                               torch.tensor([idx.get(o.label, -1) for o in objs]), iou)
            objs = [objs[i] for i in sorted(keep.tolist())]
        out.append(r.with_objects(objs))
    return out, names, merged


def coco_map(gt: Sequence[VocRecord], preds: Sequence[VocRecord], classes: Sequence[str],
             max_dets: int = MAX_DETS) -> dict:
    """mAP@[.5:.95], AP50 and per-class AP/AP50 over all object sizes.

    Classes without ground truth get ``nan`` and are left out of the means.
    Returns ``{"mAP", "mAP50", "per_class": {cls: {"AP", "AP50", "n_gt"}}, "n_images", "n_pred"}``.
    """
    coco_gt, coco_dt = to_coco(gt, preds, classes)
    n_gt = {c: 0 for c in classes}
    for r in gt:
        for o in r.objects:
            if not o.difficult:
                n_gt[o.label] += 1
    result = {"mAP": float("nan"), "mAP50": float("nan"), "per_class": {},
              "n_images": len(gt), "n_pred": len(coco_dt.dataset["annotations"])}
    if not coco_gt.dataset["annotations"]:
        for c in classes:
            result["per_class"][c] = {"AP": float("nan"), "AP50": float("nan"), "n_gt": 0}
        return result
    prec = _precision(coco_gt, coco_dt, max_dets)[:, :, :, 0, 0]  # [IoU thresholds, recall points, classes], 'all'
    result["mAP"] = _mean(prec)
    result["mAP50"] = _mean(prec[0])
    for k, c in enumerate(classes):
        result["per_class"][c] = {"AP": _mean(prec[:, :, k]), "AP50": _mean(prec[0, :, k]), "n_gt": n_gt[c]}
    # Precision at IoU 0.5 on COCO's 101 recall points (-1 past the highest recall reached): the PR curves.
    result["pr50"] = {c: [round(float(v), 4) for v in prec[0, :, k]] for k, c in enumerate(classes) if n_gt[c]}
    return result


#: False positives per image at which FROC sensitivity is read (Retinopathy Online Challenge).
FROC_FPI = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
#: Lesion size buckets by sqrt(box area) in pixels. COCO's small/medium/large (32/96 px)
#: would put nearly every lesion in 'small'.
SIZE_BUCKETS = {"<8": (0, 8), "8-16": (8, 16), "16-32": (16, 32), "32-96": (32, 96), ">=96": (96, 1e5)}


def _hits(det: Sequence[float], gts: np.ndarray, iou_thr: float) -> np.ndarray:
    """Which ground-truth boxes a detection hits: its centre lies inside, or IoU >= ``iou_thr``."""
    if len(gts) == 0:
        return np.zeros(0, bool)
    x0, y0, x1, y1 = det
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    inside = (gts[:, 0] <= cx) & (cx <= gts[:, 2]) & (gts[:, 1] <= cy) & (cy <= gts[:, 3])
    ix = np.clip(np.minimum(x1, gts[:, 2]) - np.maximum(x0, gts[:, 0]), 0, None)
    iy = np.clip(np.minimum(y1, gts[:, 3]) - np.maximum(y0, gts[:, 1]), 0, None)
    inter = ix * iy
    union = (x1 - x0) * (y1 - y0) + (gts[:, 2] - gts[:, 0]) * (gts[:, 3] - gts[:, 1]) - inter
    return inside | (inter / np.maximum(union, 1e-9) >= iou_thr)


def drawn_stats(gt: Sequence[VocRecord], preds: Sequence[VocRecord], cls: str, threshold: float) -> dict:
    """What a reader sees of ``cls`` at ``threshold``: boxes drawn, the share right, the share of lesions found.

    A box is right when it hits a lesion of its class (``_hits``: centre inside, or IoU >= 0.2); a
    lesion is found when any drawn box hits it. ``nan`` shares when there is nothing to divide by.
    """
    by_stem = {p.stem: p for p in preds}
    n_box = right = found = n_les = 0
    for g in gt:
        gts = np.array([o.box for o in g.objects if o.label == cls], float).reshape(-1, 4)
        hit = np.zeros(len(gts), bool)
        for o in by_stem[g.stem].objects if g.stem in by_stem else ():
            if o.label != cls or (o.score is not None and o.score < threshold):
                continue
            h = _hits(o.box, gts, 0.2)
            n_box += 1
            right += bool(h.any())
            hit |= h
        n_les += len(gts)
        found += int(hit.sum())
    return {"boxes": n_box, "right": right / n_box if n_box else float("nan"),
            "found": found / n_les if n_les else float("nan"), "lesions": n_les}


def froc(gt: Sequence[VocRecord], preds: Sequence[VocRecord], classes: Sequence[str],
         fpi: Sequence[float] = FROC_FPI, iou_thr: float = 0.2) -> dict:
    """Free-response ROC per class: lesion sensitivity at ``fpi`` false positives per image.

    Detections are taken best score first, over all images. A detection *hits*
    a ground-truth lesion when its centre falls inside the lesion's box or their
    IoU is at least ``iou_thr`` (0.2: a microaneurysm box is a few pixels, so a
    one-pixel shift already costs half the IoU). The first hit on a lesion is a
    true positive; later hits on the same lesion, and hits on ``difficult``
    lesions, count as neither true nor false positives. Anything else is a
    false positive. Sensitivity at a rate r is the best reached with at most
    ``r × n_images`` false positives. Returns ``{cls: {"0.125": s, ..., "mean": m}}``
    (``nan`` for classes without ground truth).
    """
    n_img = len(gt)
    out: dict[str, dict[str, float]] = {}
    for c in classes:
        _, fps, tps, n_pos = froc_curve(gt, preds, c, iou_thr)
        if n_pos == 0:
            out[c] = {**{f"{f:g}": float("nan") for f in fpi}, "mean": float("nan")}
            continue
        row = {}
        for f in fpi:
            ok = fps <= f * n_img
            row[f"{f:g}"] = float(tps[ok].max() / n_pos)
        row["mean"] = float(np.mean([row[f"{f:g}"] for f in fpi]))
        out[c] = row
    return out


def froc_curve(gt: Sequence[VocRecord], preds: Sequence[VocRecord], cls: str, iou_thr: float = 0.2
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """``(scores, false positives, true positives, lesions)`` of one class, after each detection, best first.

    The first entry is the start (score +inf, 0, 0); see ``froc`` for what counts as a hit.
    """
    by_stem = {r.stem: r for r in gt}
    boxes = {s: np.array([o.box for o in r.objects if o.label == cls], float).reshape(-1, 4)
             for s, r in by_stem.items()}
    hard = {s: np.array([o.difficult for o in r.objects if o.label == cls], bool) for s, r in by_stem.items()}
    n_pos = int(sum((~h).sum() for h in hard.values()))
    dets = sorted(((o.score if o.score is not None else 1.0, p.stem, o.box) for p in preds if p.stem in by_stem
                   for o in p.objects if o.label == cls), key=lambda d: -d[0])
    found = {s: np.zeros(len(b), bool) for s, b in boxes.items()}
    tp = fp = 0
    curve = [(float("inf"), 0, 0)]
    for score, stem, box in dets:
        hit = _hits(box, boxes[stem], iou_thr)
        new = hit & ~found[stem] & ~hard[stem]
        if new.any():
            found[stem][np.flatnonzero(new)[0]] = True
            tp += 1
        elif not hit.any():
            fp += 1
        curve.append((score, fp, tp))
    scores, fps, tps = (np.array(v) for v in zip(*curve))
    return scores, fps, tps, n_pos


def ap_by_size(gt: Sequence[VocRecord], preds: Sequence[VocRecord], classes: Sequence[str],
               max_dets: int = MAX_DETS) -> dict:
    """AP50 over all classes per lesion-size bucket (``SIZE_BUCKETS``), with ground-truth counts.

    Uses pycocotools' area ranges: ground truth outside a bucket is ignored
    there, and so are unmatched detections outside it.
    """
    coco_gt, coco_dt = to_coco(gt, preds, classes)
    counts = {k: 0 for k in SIZE_BUCKETS}
    for r in gt:
        for o in r.objects:
            side = math.sqrt(max(o.area, 0.0))
            for k, (lo, hi) in SIZE_BUCKETS.items():
                if lo <= side < hi and not o.difficult:
                    counts[k] += 1
    if not coco_gt.dataset["annotations"]:
        return {k: {"AP50": float("nan"), "n_gt": 0} for k in SIZE_BUCKETS}
    prec = _precision(coco_gt, coco_dt, max_dets, iouThrs=np.array([0.5]), areaRngLbl=list(SIZE_BUCKETS),
                      areaRng=[[lo ** 2, hi ** 2] for lo, hi in SIZE_BUCKETS.values()])
    return {k: {"AP50": _mean(prec[0, :, :, a, 0]), "n_gt": counts[k]} for a, k in enumerate(SIZE_BUCKETS)}


def evaluate_detections(gt: Sequence[VocRecord], preds: Sequence[VocRecord], classes: Sequence[str],
                        partial: Mapping[str, Sequence[str]] | None = None) -> dict:
    """Everything ``lesiondet eval`` reports: COCO AP, FROC per class and AP50 per size bucket.

    ``partial`` (the ground truth's label map): predictions of a partial label's members are
    merged into it first (``merge_partial``); ``result["merged"]`` says which.
    """
    preds, classes, merged = merge_partial(gt, preds, classes, partial or {})
    result = coco_map(gt, preds, classes)
    result["froc"] = froc(gt, preds, classes)
    result["ap50_by_size"] = ap_by_size(gt, preds, classes)
    result["merged"] = merged
    return result


def format_froc(result: dict) -> str:
    """Plain-text FROC table: sensitivity per class at each false-positive rate."""
    rates = list(FROC_FPI)
    lines = [f"{'FROC':<8} " + " ".join(f"{f'{f:g}':>6}" for f in rates) + f" {'mean':>6}   (sensitivity at FP/image)"]
    for c, row in result["froc"].items():
        vals = [row[f"{f:g}"] for f in rates] + [row["mean"]]
        lines.append(f"{c:<8} " + " ".join("   -  " if math.isnan(v) else f"{v:6.3f}" for v in vals))
    sizes = result.get("ap50_by_size") or {}
    if sizes:
        cells = []
        for k, v in sizes.items():
            ap = "-" if math.isnan(v["AP50"]) else f"{v['AP50']:.3f}"
            cells.append(f"{k} {ap} (n={v['n_gt']})")
        lines.append("AP50 by lesion size (sqrt area, px): " + ", ".join(cells))
    return "\n".join(lines)


def format_table(result: dict) -> str:
    """Plain-text table: one row per class and an 'all' row."""
    def f(x: float) -> str:
        return "   -  " if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:6.3f}"

    lines = [f"{'class':<8} {'n_gt':>6} {'AP':>6} {'AP50':>6}"]
    for c, v in result["per_class"].items():
        lines.append(f"{c:<8} {v['n_gt']:>6} {f(v['AP'])} {f(v['AP50'])}")
    total = sum(v["n_gt"] for v in result["per_class"].values())
    lines.append(f"{'all':<8} {total:>6} {f(result['mAP'])} {f(result['mAP50'])}")
    for name, members in (result.get("merged") or {}).items():
        lines.append(f"{name} = {' + '.join(members) or 'nothing the model predicts'} (the ground truth does not "
                     "tell them apart; their predictions are merged before scoring)")
    return "\n".join(lines)


def json_safe(result: dict) -> dict:
    """The ``--json`` document: ``nan`` becomes ``null`` (JSON has no NaN)."""
    def clean(x):
        if isinstance(x, float) and math.isnan(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        return x

    return clean(result)
