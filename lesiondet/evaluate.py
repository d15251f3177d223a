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
from typing import Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from .errors import LesiondetError
from .voc import VocRecord

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


def _mean(a: np.ndarray) -> float:
    a = a[a > -1]
    return float(a.mean()) if a.size else float("nan")


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
    ev = COCOeval(coco_gt, coco_dt, "bbox")
    ev.params.maxDets = [max_dets]
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
    prec = ev.eval["precision"][:, :, :, 0, 0]  # [IoU thresholds, recall points, classes] for area 'all'
    result["mAP"] = _mean(prec)
    result["mAP50"] = _mean(prec[0])
    for k, c in enumerate(classes):
        result["per_class"][c] = {"AP": _mean(prec[:, :, k]), "AP50": _mean(prec[0, :, k]), "n_gt": n_gt[c]}
    return result


def format_table(result: dict) -> str:
    """Plain-text table: one row per class and an 'all' row."""
    def f(x: float) -> str:
        return "   -  " if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:6.3f}"

    lines = [f"{'class':<8} {'n_gt':>6} {'AP':>6} {'AP50':>6}"]
    for c, v in result["per_class"].items():
        lines.append(f"{c:<8} {v['n_gt']:>6} {f(v['AP'])} {f(v['AP50'])}")
    total = sum(v["n_gt"] for v in result["per_class"].values())
    lines.append(f"{'all':<8} {total:>6} {f(result['mAP'])} {f(result['mAP50'])}")
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
