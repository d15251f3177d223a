"""Side-by-side crop of detections and ground truth, to look at what a model found where.

    python tools/compare_crop.py IMAGE --pred runs/detect/NAME.xml --gt Annotations/NAME.xml \
        --labels configs/datasets/idrid.yaml --out crop.png [--window X,Y,W,H] [--classes MA,HE]

Without ``--window`` the crop is the 900x600 window holding the most ground-truth boxes of
``--classes`` (default MA and HE: the small red lesions that are hardest to find). Left: the
detections as ``lesiondet detect`` draws them; right: the ground truth in the same colours. It
prints, per class, how many boxes in the crop hit a lesion (centre inside or IoU >= 0.2, as
FROC counts) and how many lesions were found.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lesiondet.detection.metrics import _hits  # noqa: E402
from lesiondet.detection.slicing import objects_in  # noqa: E402
from lesiondet.images import read_rgb  # noqa: E402
from lesiondet.io.labels import load_label_map  # noqa: E402
from lesiondet.io.voc import VocRecord, parse_voc  # noqa: E402
from lesiondet.reporting.draw import draw, write_png  # noqa: E402


def inside(rec: VocRecord, win: tuple[int, int, int, int], classes: set[str] | None = None) -> list:
    """The objects lying wholly inside the ``(x, y, w, h)`` window, in its coordinates."""
    x, y, w, h = win
    return [o for o in objects_in(rec.objects, (x, y, x + w, y + h), 1.0) if classes is None or o.label in classes]


def busiest_window(gt: VocRecord, classes: set[str], size: tuple[int, int]) -> tuple[int, int, int, int]:
    w, h = min(size[0], gt.width), min(size[1], gt.height)
    starts = [(x, y) for x in range(0, gt.width - w + 1, 50) for y in range(0, gt.height - h + 1, 50)]
    x, y = max(starts, key=lambda s: len(inside(gt, (s[0], s[1], w, h), classes)))
    return x, y, w, h


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("image")
    ap.add_argument("--pred", required=True, help="labelImg XML written by lesiondet detect")
    ap.add_argument("--gt", required=True, help="the image's ground-truth labelImg XML")
    ap.add_argument("--labels", required=True, help="dataset YAML (configs/datasets/NAME.yaml)")
    ap.add_argument("--out", default="crop.png")
    ap.add_argument("--window", help="X,Y,W,H in image pixels")
    ap.add_argument("--classes", default="MA,HE")
    a = ap.parse_args()
    lm = load_label_map(a.labels)
    img_dir = Path(a.image).parent
    gt, pred = parse_voc(a.gt, lm, img_dir), parse_voc(a.pred, lm, img_dir)
    classes = set(a.classes.split(","))
    win = tuple(int(v) for v in a.window.split(",")) if a.window else busiest_window(gt, classes, (900, 600))
    x, y, w, h = win
    img = read_rgb(a.image)
    crop, t = img[y:y + h, x:x + w], max(1, round(max(img.shape[:2]) / 800))  # detect's line width
    left, right = draw(crop, pred.with_objects(inside(pred, win)), t), draw(crop, gt.with_objects(inside(gt, win)), t)
    write_png(a.out, np.concatenate([left, np.full((h, 8, 3), 255, np.uint8), right], axis=1))
    print(f"window x={x} y={y} w={w} h={h}; left: detections, right: ground truth -> {a.out}")
    for c in lm.classes:
        g = np.array([o.box for o in inside(gt, win, {c})]).reshape(-1, 4)
        dets = inside(pred, win, {c})
        if not len(g) and not dets:
            continue
        found, hits = np.zeros(len(g), bool), 0
        for o in dets:
            m = _hits(o.box, g, 0.2)
            hits += bool(m.any())
            found |= m
        print(f"{c}: {len(dets)} boxes, {hits} on a lesion; {int(found.sum())} of {len(g)} lesions found")


if __name__ == "__main__":
    main()
