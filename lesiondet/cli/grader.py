"""``lesiondet grader train|fit|eval|predict``: the image-level DR grading CNN and its grade readout."""
from __future__ import annotations

import argparse
from pathlib import Path

from lesiondet.cli.common import add_device, Parser, error, fraction, positive_float, positive_int, say


def add(sub) -> None:
    g = sub.add_parser("grader", help="image-level DR grading CNN: ICDR grade 0-4, referable DR, maculopathy")
    gsub = g.add_subparsers(dest="grader_command", required=True, parser_class=Parser)
    t = gsub.add_parser("train", help="train on an image,dr_grade[,maculopathy][,patient] CSV, split by patient")
    t.add_argument("--data", required=True, help="CSV image,dr_grade[,maculopathy][,patient]; paths relative to it")
    vg = t.add_mutually_exclusive_group()
    vg.add_argument("--val", help="validation CSV (other patients); default: hold out patients from --data")
    vg.add_argument("--val-split", type=fraction, default=0.2, help="share of patients held out (default 0.2)")
    t.add_argument("--init", metavar="W", help="start from another grader's best.pt (e.g. one trained on APTOS)")
    t.add_argument("--preprocessed", action="store_true",
                   help="the photographs are already Ben Graham-processed by their source (the shared APTOS copy)")
    t.add_argument("--config", help="YAML with a grader: section (defaults in lesiondet/config/defaults.yaml)")
    t.add_argument("--epochs", type=positive_int, help="fine-tuning epochs after the head-only stage")
    t.add_argument("--size", type=positive_int, help="network input side in pixels")
    t.add_argument("--time-limit", type=positive_float, metavar="MINUTES",
                   help="stop cleanly after this many minutes, keeping best.pt")
    add_device(t)
    t.add_argument("--out", default="runs/grader", help="run folder; numbered if it exists")
    t.add_argument("--resume", metavar="LAST_PT", help="continue a run from its last.pt (same --data)")
    t.set_defaults(func=run_train)
    f = gsub.add_parser("fit", help="fit the grade readout (linear models on the CNN's multi-scale features, "
                                    "optionally with lesion evidence) on graded photographs")
    f.add_argument("--data", required=True, help="CSV image,dr_grade[,maculopathy][,patient]; paths relative to it")
    f.add_argument("--weights", required=True, help="a trained grader's best.pt (e.g. pre-trained on APTOS)")
    f.add_argument("--lesions", metavar="DIR",
                   help="per-photograph JSONs of 'lesiondet detect --grade --grader none --out DIR' on the same "
                        "photographs: the readout then also weighs lesion counts, areas and quadrants")
    f.add_argument("--preprocessed", action="store_true",
                   help="the photographs are already Ben Graham-processed by their source")
    f.add_argument("--config", help="YAML with a grader: section (readout_* options)")
    f.add_argument("--grading", help="grading-rules YAML (which merged classes count as haemorrhages)")
    add_device(f)
    f.add_argument("--out", default="runs/grader-fit", help="run folder; numbered if it exists")
    f.add_argument("--features-cache", metavar="FILE.npz",
                   help="keep the network's features here and reuse them when the network and photographs "
                        "are the same (refitting on new lesion evidence then reads no photograph)")
    f.set_defaults(func=run_fit)
    e = gsub.add_parser("eval", help="QWK, accuracy, confusion, referable and maculopathy figures")
    e.add_argument("--data", required=True, help="graded CSV (other patients than training)")
    e.add_argument("--weights", help="grader best.pt (default: the shipped grader)")
    e.add_argument("--json", help="write the figures to this JSON file")
    e.add_argument("--out", default="runs/grader-eval", help="folder for the confusion and t-SNE pictures")
    add_device(e)
    e.set_defaults(func=run_eval)
    p = gsub.add_parser("predict", help="grade photographs (ungradable ones are reported, not graded)")
    p.add_argument("images", nargs="+", help="photograph files or folders")
    p.add_argument("--weights", help="grader best.pt (default: the shipped grader)")
    p.add_argument("--json", help="write the predictions to this file")
    add_device(p)
    p.set_defaults(func=run_predict)


def run_train(a: argparse.Namespace) -> int:
    from lesiondet import api

    s = api.grader_train(a.data, val=a.val, val_split=a.val_split, config=a.config, init=a.init,
                         preprocessed=a.preprocessed, epochs=a.epochs, size=a.size, time_limit=a.time_limit,
                         device=a.device, out=a.out, resume=a.resume, log=say)
    if s["history"]:
        best = max(r["val_qwk"] for r in s["history"])
        say(f"best validation QWK {best:.3f} (plain rounding); weights {s['out_dir']}/best.pt, "
            f"curves {s['out_dir']}/curves.png")
    return 0


def run_fit(a: argparse.Namespace) -> int:
    from lesiondet import api

    r = api.grader_fit(a.data, a.weights, lesions=a.lesions, preprocessed=a.preprocessed, config=a.config,
                       grading=a.grading, out=a.out, device=a.device, log=say, features_cache=a.features_cache)
    def f(v):
        return "-" if v is None else f"{v:.3f}"

    for v, m in r["out_of_fold"].items():
        ref = m["referable"]
        print(f"{v:12s} out of fold (patient-grouped): QWK {f(m['qwk'])}  referable sensitivity "
              f"{f(ref['sensitivity'])} specificity {f(ref['specificity'])} AUC {f(ref.get('auc'))}")
    say(f"weights {r['weights']}; figures {Path(r['weights']).parent / 'fit.json'}, {r['confusion_png']}")
    return 0


def run_eval(a: argparse.Namespace) -> int:
    from lesiondet import api

    m = api.grader_evaluate(a.data, a.weights, json=a.json, out=a.out, device=a.device)
    r = m["referable"]

    def f(v):
        return "-" if v is None else f"{v:.3f}"

    print(f"QWK {m['qwk']:.3f}  accuracy {m['accuracy']:.3f}  n {m['n']}")
    ci = r.get("ci95", {})
    print(f"referable (grade >= 2 or maculopathy): sensitivity {f(r['sensitivity'])} {ci.get('sensitivity', '')}  "
          f"specificity {f(r['specificity'])} {ci.get('specificity', '')}  AUC {f(r.get('auc'))}")
    if "maculopathy" in m:
        mm = m["maculopathy"]
        print(f"maculopathy: sensitivity {f(mm['sensitivity'])}  specificity {f(mm['specificity'])}  "
              f"AUC {f(mm.get('auc'))}")
    say(f"pictures {m['confusion_png']}, {m['embedding_png']}" + (f"; wrote {a.json}" if a.json else ""))
    return 0


def run_predict(a: argparse.Namespace) -> int:
    from lesiondet import api

    r = api.grader_predict(a.images, a.weights, json=a.json, device=a.device)
    for d in r["predictions"]:
        name = Path(d["image"]).name
        if not d["gradable"]:
            print(f"{name}: ungradable ({'; '.join(d['quality']['reasons'])})")
        elif d["status"] == "unfamiliar":
            print(f"{name}: unfamiliar, {d['reasons'][0]} (referred; provisional grade {d['provisional_grade']})")
        else:
            print(f"{name}: grade {d['grade']}  referable {'yes' if d['referable'] else 'no'}  "
                  f"p(referable) {d['p_referable']:.3f}  p(maculopathy) {d['p_maculopathy']:.3f}")
    if a.json:
        say(f"wrote {a.json}")
    for f_ in r["failures"]:
        error(f_)
    return 1 if r["failures"] else 0
