"""``lesiondet calibrate``: per-class score thresholds from validation photographs, stored in the checkpoint."""
from __future__ import annotations

import argparse

from lesiondet.cli.common import add_device, add_trust_legacy, say, score
from lesiondet.errors import LesiondetError


def _rate(text: str) -> tuple[str, float]:
    cls, _, v = text.partition("=")
    try:
        rate = float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not CLASS=RATE (e.g. OD=0.05)") from None
    if not cls or rate < 0:
        raise argparse.ArgumentTypeError(f"'{text}' is not CLASS=RATE with a rate >= 0")
    return cls, rate


def add(sub) -> None:
    c = sub.add_parser("calibrate", help="choose each class's score threshold on validation photographs "
                                         "and store it in a copy of the checkpoint")
    c.add_argument("--weights", required=True, help="best.pt from 'lesiondet train'")
    c.add_argument("--voc", required=True, help="labelImg validation folder (not the training photographs)")
    c.add_argument("--labels", help="label map YAML of --voc (default: the model's)")
    c.add_argument("--images", help="image folder, when not beside the XML")
    c.add_argument("--fp-per-image", type=float, default=1.0,
                   help="false positives per image each class may make at its threshold (default 1)")
    c.add_argument("--class-rate", type=_rate, action="append", default=[], metavar="CLASS=RATE",
                   help="another rate for one class, e.g. OD=0.05 (repeatable)")
    c.add_argument("--display-precision", type=score, metavar="P",
                   help="also store display thresholds: per class, the lowest score whose boxes are at least this "
                        "share right (e.g. 0.5); the drawing shows them, the rules count those at --fp-per-image's")
    c.add_argument("--out", required=True, help="the calibrated checkpoint to write (.pt)")
    add_device(c)
    add_trust_legacy(c)
    c.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from lesiondet import api

    if a.fp_per_image < 0:
        raise LesiondetError(None, f"--fp-per-image {a.fp_per_image}", "use a rate >= 0")
    r = api.calibrate(a.weights, a.voc, out=a.out, labels=a.labels, images=a.images, fp_per_image=a.fp_per_image,
                      per_class=dict(a.class_rate), display_precision=a.display_precision, device=a.device,
                      trust_legacy=a.trust_legacy, progress=True)
    op = r["operating_point"]
    shown = (r["display_point"] or {}).get("thresholds", {})
    for cls, t in op["thresholds"].items():
        print(f"{cls:<6} {t:.3f}" + (f"  shown from {shown[cls]:.3f}" if cls in shown else ""))
    say(f"wrote {r['out']}: detect reports each class at these scores ({op['purpose']})")
    return 0
