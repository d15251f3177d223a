"""``lesiondet eval``: COCO mAP, AP50, FROC and AP by size against labelImg ground truth."""
from __future__ import annotations

import argparse

from lesiondet.cli.common import add_device, add_tiling_args, add_trust_legacy, say, score, tiling_overrides
from lesiondet.errors import LesiondetError


def add(sub) -> None:
    e = sub.add_parser("eval", help="score detections against labelImg ground truth")
    e.add_argument("--map", action="store_true", help="COCO mAP@[.5:.95], AP50 and per-class AP (pycocotools)")
    e.add_argument("--voc", help="ground-truth labelImg folder (default: the photographs the scored run held out: "
                                 "its test/ folder, else its validation photographs)")
    e.add_argument("--images", help="image folder, if not next to the XML or in ../JPEGImages")
    src = e.add_mutually_exclusive_group()
    src.add_argument("--weights", help="checkpoint (or exported .onnx) to run on the ground-truth images (default: "
                                       "the newest runs/**/best.pt, as 'lesiondet train' wrote it)")
    src.add_argument("--pred", help="folder of predicted VOC XML (optional <score>), matched by file stem")
    e.add_argument("--labels", help="label map YAML")
    e.add_argument("--score", type=score, default=0.001, help="minimum score kept with --weights (default 0.001)")
    e.add_argument("--json", help="write the figures to this JSON file")
    e.add_argument("--grade-score", type=score, default=None,
                   help="one score threshold for grading the detections (default: the model's operating point, "
                        "as detect; 0.3 for --pred)")
    e.add_argument("--out", default="runs/eval", help="folder for the PR, FROC and grade plots; numbered if it exists")
    add_device(e)
    add_tiling_args(e)
    add_trust_legacy(e)
    e.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from lesiondet import api
    from lesiondet.detection.metrics import format_froc, format_table

    if not a.map:
        raise LesiondetError(None, "no metric chosen", "pass --map")
    r = api.evaluate(a.voc, weights=a.weights, pred=a.pred, labels=a.labels, images=a.images, score=a.score,
                     grade_score=a.grade_score, out=a.out, json=a.json, device=a.device,
                     trust_legacy=a.trust_legacy, progress=True, log=say, **tiling_overrides(a))
    print(format_table(r))
    print(format_froc(r))
    ga = r["grade_agreement"]
    print(f"{r['n_images']} images, {r['n_pred']} detections; mAP@[.5:.95] {r['mAP']:.4f}  "
          f"AP50 {r['mAP50']:.4f}  (pycocotools, maxDets 1000)")
    print(f"ICDR grade from detections vs from ground truth: agreement {ga['accuracy']:.3f}, "
          f"quadratic kappa {ga['qwk']:.3f}")
    sc = r["scored"]
    print(f"scored {sc['weights'] or sc['pred']} on {sc['on']}")
    say(f"figures in {r['figures']} (pr_curves.png, froc.png, grade_confusion.png)")
    if a.json:
        say(f"wrote {a.json}")
    return 0
