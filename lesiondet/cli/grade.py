"""``lesiondet grade``: ICDR grades of a labelImg folder, by the rules or a learned ordinal grader."""
from __future__ import annotations

import argparse
from collections import Counter

from lesiondet.cli.common import add_trust_legacy, say


def add(sub) -> None:
    gr = sub.add_parser("grade", help="ICDR DR grade from labelImg lesion annotations (or predictions)")
    gr.add_argument("--voc", required=True, help="labelImg folder (ground truth or 'detect' output)")
    gr.add_argument("--images", help="image folder, if not next to the XML or in ../JPEGImages")
    gr.add_argument("--labels", help="label map YAML")
    gr.add_argument("--grading", help="grading thresholds YAML (defaults: grading: in lesiondet/config/defaults.yaml)")
    gr.add_argument("--json", help="write one object per image (or, with --eval, the scores too)")
    gr.add_argument("--fit", metavar="LABELS_CSV", help="fit the learned ordinal grader on image,grade rows")
    gr.add_argument("--model", help="learned grader file (JSON): written by --fit, read otherwise")
    gr.add_argument("--eval", metavar="LABELS_CSV", help="QWK, accuracy and a confusion-matrix PNG")
    gr.add_argument("--out", default="runs/grade", help="folder for the confusion-matrix PNG")
    add_trust_legacy(gr)
    gr.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from lesiondet import api

    r = api.grade_voc(a.voc, labels=a.labels, images=a.images, grading=a.grading, fit=a.fit, model=a.model,
                      eval=a.eval, out=a.out, json=a.json, trust_legacy=a.trust_legacy)
    if r.fitted:
        print(f"fitted an ordinal grader on {r.fitted['n']} images (training QWK {r.fitted['training_qwk']:.3f}); "
              f"saved {r.fitted['path']}")
    print(f"{'image':<24} {'grade':>5}  {'fovea from':<12} {'DME?':<5} counts")
    for n, g, p in zip(r.names, r.grades, r.predicted):
        counts = ", ".join(f"{k} {v}" for k, v in g.counts.items()) or "-"
        print(f"{n[:23]:<24} {p:>5}  {g.fovea_source:<12} {'yes' if g.dme_suspect else 'no':<5} {counts}")
    dist = Counter(r.predicted)
    print("grade distribution: " + ", ".join(f"{k}: {dist.get(k, 0)}" for k in range(5)))
    if r.scores:
        s = r.scores
        print(f"against {s['n']} reference grades: quadratic weighted kappa {s['qwk']:.4f}, "
              f"accuracy {s['accuracy']:.4f}; confusion matrix {s['confusion_png']}")
    if a.json:
        say(f"wrote {a.json}")
    return 0
