"""``lesiondet oct train|predict|eval``: the OCT B-scan classifier."""
from __future__ import annotations

import argparse
from pathlib import Path

from lesiondet.cli.common import add_device, Parser, add_trust_legacy, error, fraction_or_zero, positive_float, positive_int, say


def add(sub) -> None:
    o = sub.add_parser("oct", help="OCT B-scan classifier: CNV / DME / DRUSEN / NORMAL")
    osub = o.add_subparsers(dest="oct_command", required=True, parser_class=Parser)
    ot = osub.add_parser("train", help="train on a class-per-folder tree or a path,label CSV")
    ot.add_argument("--data", required=True, nargs="+",
                    help="folder(s) with CNV/ DME/ DRUSEN/ NORMAL/ sub-folders, or CSVs; several are pooled")
    og = ot.add_mutually_exclusive_group()
    og.add_argument("--val", help="validation folder or CSV (default: hold out patients from --data)")
    og.add_argument("--val-split", type=fraction_or_zero, default=0.2,
                    help="share of patients held out (default 0.2; 0: train on all, the final model)")
    ot.add_argument("--head", choices=("finetune", "linear", "both"), default="both",
                    help="fine-tuned CNN, logistic regression on frozen features, or both (default)")
    ot.add_argument("--arch", choices=("efficientnet_lite0", "mobilenet_v3_large", "resnet18", "resnet50"),
                    help="backbone (default: oct.arch, efficientnet_lite0)")
    ot.add_argument("--pretrained", choices=("imagenet", "torchvision", "none"),
                    help="backbone weights: imagenet (offline Lite0), torchvision (hub cache) or none "
                         "(default: oct.pretrained, imagenet)")
    ot.add_argument("--config", help="YAML with OCT options (configs/models/oct.yaml)")
    ot.add_argument("--epochs", type=positive_int, help="fine-tuning epochs after the head-only stage")
    ot.add_argument("--batch", type=positive_int, help="scans per step (default: oct.batch, 16)")
    ot.add_argument("--time-limit", type=positive_float, metavar="MINUTES",
                    help="stop cleanly after this many minutes, keeping best.pt")
    add_device(ot)
    ot.add_argument("--out", default="runs/oct", help="run folder; numbered if it exists")
    ot.add_argument("--resume", metavar="LAST_PT", help="continue a run from its last.pt (same --data)")
    ot.set_defaults(func=run_train)
    op = osub.add_parser("predict", help="class and probabilities for OCT scans")
    op.add_argument("images", nargs="+", help="scan files or folders")
    op.add_argument("--weights", help="best.pt from 'lesiondet oct train' (default: the shipped classifier)")
    op.add_argument("--head", choices=("finetune", "linear"), help="default: the fine-tuned head if trained")
    op.add_argument("--topk", type=positive_int, default=4, help="classes listed per scan, most likely first")
    op.add_argument("--json", help="write class and probabilities to this file")
    op.add_argument("--out", default="runs/oct-predict", help="folder for the pictures; numbered if it exists")
    op.add_argument("--seg", metavar="W", nargs="?", const=True,
                    help="report fluid area too, with the shipped fluid U-Net or this best.pt from 'oct segment train'")
    add_device(op)
    add_trust_legacy(op)
    op.set_defaults(func=run_predict)
    oe = osub.add_parser("eval", help="accuracy, sensitivity, specificity, ROC AUC, confusion matrix")
    oe.add_argument("--data", required=True, help="labelled folder or CSV")
    oe.add_argument("--weights", help="default: the shipped classifier")
    oe.add_argument("--head", choices=("finetune", "linear"), help="default: the fine-tuned head if trained")
    oe.add_argument("--json", help="write the figures to this JSON file")
    oe.add_argument("--out", default="runs/oct-eval", help="folder for oct_confusion.png")
    add_device(oe)
    add_trust_legacy(oe)
    oe.set_defaults(func=run_eval)
    add_segment(osub)


def add_segment(osub) -> None:
    s = osub.add_parser("segment", help="OCT fluid U-Net: outline DME fluid in B-scans")
    ssub = s.add_subparsers(dest="segment_command", required=True, parser_class=Parser)
    t = ssub.add_parser("train", help="train on scans and fluid masks, split by subject")
    t.add_argument("--data", required=True, help="folder with images/ and masks/ (same names), or a CSV "
                                                 "image,mask[,subject] with paths relative to it")
    g = t.add_mutually_exclusive_group()
    g.add_argument("--val", help="validation folder or CSV (other subjects)")
    g.add_argument("--val-split", type=fraction_or_zero, default=0.2,
                   help="share of subjects held out (default 0.2; 0: train on all and keep the last epoch)")
    t.add_argument("--config", help="YAML with a segment: section (defaults in lesiondet/config/defaults.yaml)")
    t.add_argument("--epochs", type=positive_int, help="training epochs (default: segment.epochs, 60)")
    t.add_argument("--time-limit", type=positive_float, metavar="MINUTES",
                   help="stop cleanly after this many minutes, keeping best.pt")
    add_device(t)
    t.add_argument("--out", default="runs/oct-segment", help="run folder; numbered if it exists")
    t.add_argument("--resume", metavar="LAST_PT", help="continue a run from its last.pt (same --data)")
    t.set_defaults(func=run_segment_train)
    p = ssub.add_parser("predict", help="mask PNG, overlay PNG and fluid area JSON per scan")
    p.add_argument("images", nargs="+", help="scan files or folders")
    p.add_argument("--weights", help="best.pt from 'oct segment train' (default: the shipped fluid U-Net)")
    p.add_argument("--out", default="runs/oct-seg", help="output folder; numbered if it exists")
    p.add_argument("--json", help="also write all scans' fluid figures to this file")
    p.add_argument("--spacing", type=positive_float, nargs=2, metavar=("X_UM", "Z_UM"),
                   help="µm per pixel across and in depth (Duke Spectralis: 11.3 3.9): fluid area in mm² too")
    add_device(p)
    p.set_defaults(func=run_segment_predict)
    e = ssub.add_parser("eval", help="pooled Dice, IoU, pixel accuracy, per-scan Dice; overlay grid, area scatter")
    e.add_argument("--data", required=True, help="folder with images/ and masks/, or a CSV image,mask[,subject]")
    e.add_argument("--weights", help="default: the shipped fluid U-Net")
    e.add_argument("--json", help="write the figures to this JSON file")
    e.add_argument("--out", default="runs/oct-seg-eval", help="folder for the pictures; numbered if it exists")
    e.add_argument("--spacing", type=positive_float, nargs=2, metavar=("X_UM", "Z_UM"),
                   help="µm per pixel across and in depth (Duke Spectralis: 11.3 3.9): per-scan fluid-area "
                        "error in mm² too")
    add_device(e)
    e.set_defaults(func=run_segment_eval)


def run_train(a: argparse.Namespace) -> int:
    from lesiondet import api

    s = api.oct_train(a.data, val=a.val, val_split=a.val_split, head=a.head, arch=a.arch, pretrained=a.pretrained,
                      config=a.config, epochs=a.epochs, batch=a.batch, time_limit=a.time_limit, device=a.device,
                      out=a.out, resume=a.resume, log=say)
    for head, acc in s["val"].items():
        say(f"{head} head: validation accuracy {acc:.3f}")
    say(f"weights {s['out_dir']}/best.pt" + (f", curves {s['out_dir']}/curves.png" if s["history"] else ""))
    return 0


def run_predict(a: argparse.Namespace) -> int:
    from lesiondet import api

    r = api.oct_predict(a.images, a.weights, head=a.head, json=a.json, out=a.out, device=a.device,
                        trust_legacy=a.trust_legacy, seg=a.seg)
    for d in r["predictions"]:
        top = sorted(d["probabilities"].items(), key=lambda kv: -kv[1])[: a.topk]
        fl = d.get("fluid")
        fluid = f"  fluid {fl['fluid_fraction']:.2%} ({fl['regions']} region(s))" if fl else ""
        flag = f"  FLAG: {d['flag']}" if d.get("flag") else ""
        cut = f" (top probability under {d['uncertain_below']:.2f})" if d["uncertain"] else ""
        print(f"{Path(d['image']).name}: {d['answer']}{cut}  " + "  ".join(f"{c} {v:.3f}" for c, v in top)
              + fluid + flag)
    say(f"pictures in {r['out']}")
    for f in r["failures"]:
        error(f)
    return 1 if r["failures"] else 0


def run_eval(a: argparse.Namespace) -> int:
    from lesiondet import api

    m = api.oct_evaluate(a.data, a.weights, head=a.head, json=a.json, out=a.out, device=a.device,
                         trust_legacy=a.trust_legacy)

    def f(v):
        return "   -  " if v is None else f"{v:6.3f}"

    print(f"{'class':<8} {'n':>4} {'sens':>6} {'spec':>6} {'AUC':>6}")
    for c, v in m["per_class"].items():
        print(f"{c:<8} {v['n']:>4} {f(v['sensitivity'])} {f(v['specificity'])} {f(v['auc'])}")
    print(f"accuracy {m['accuracy']:.4f} on {m['n']} scans ({m['head']} head)")
    say(f"confusion matrix {m['confusion_png']}")
    if a.json:
        say(f"wrote {a.json}")
    return 0


def run_segment_train(a: argparse.Namespace) -> int:
    from lesiondet import api

    s = api.oct_segment_train(a.data, val=a.val, val_split=a.val_split, config=a.config, epochs=a.epochs,
                              time_limit=a.time_limit, device=a.device, out=a.out, resume=a.resume, log=say)
    if s["history"]:
        say(f"best validation Dice {max(r['val_dice'] for r in s['history']):.3f}; weights {s['out_dir']}/best.pt, "
            f"curves {s['out_dir']}/curves.png")
    return 0


def run_segment_predict(a: argparse.Namespace) -> int:
    from lesiondet import api

    r = api.oct_segment_predict(a.images, a.weights, out=a.out, json=a.json, device=a.device, spacing=a.spacing)
    for d in r["predictions"]:
        mm2 = f", {d['fluid_mm2']:.4f} mm²" if "fluid_mm2" in d else ""
        print(f"{Path(d['image']).name}: fluid {d['fluid_px']} px ({d['fluid_fraction']:.2%}{mm2}), "
              f"{d['regions']} region(s)")
    say(f"masks, overlays and JSON in {r['out']}")
    for f in r["failures"]:
        error(f)
    return 1 if r["failures"] else 0


def run_segment_eval(a: argparse.Namespace) -> int:
    from lesiondet import api

    m = api.oct_segment_evaluate(a.data, a.weights, json=a.json, out=a.out, device=a.device, spacing=a.spacing)
    print(f"pooled Dice {m['dice']:.3f}  IoU {m['iou']:.3f}  pixel accuracy {m['pixel_accuracy']:.4f}  "
          f"mean per-scan Dice {m['dice_per_scan_mean']:.3f}  ({m['n']} scans; "
          f"{len(m['both_empty'])} with no fluid in either mask count as Dice 1)")
    if a.spacing:
        print(f"fluid area per scan, absolute error: mean {m['area_abs_error_mm2_mean']:.4f} mm², median "
              f"{m['area_abs_error_mm2_median']:.4f} mm² (at {a.spacing[0]:g} x {a.spacing[1]:g} µm per pixel)")
    say(f"pictures {m['grid_png']}, {m['scatter_png']}" + (f"; wrote {a.json}" if a.json else ""))
    return 0
