"""``lesiondet`` command line: a thin layer over the Python API.

Every user-fixable problem surfaces as one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Sequence

from lesiondet.errors import LesiondetError
from lesiondet.io.voc import IMAGE_SUFFIXES


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line, like every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{s}' is not a whole number") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{v} must be at least 1")
    return v


def _positive_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{s}' is not a number") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"{v} must be above 0")
    return v


def _number_in(lo: float, hi: float, hi_included: bool):
    """argparse type: a number from ``lo`` (included) to ``hi``."""
    def parse(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{s}' is not a number") from None
        if not (lo <= v <= hi if hi_included else lo <= v < hi):
            raise argparse.ArgumentTypeError(f"{v} must be between {lo:g} and {hi:g}")
        return v
    return parse


def _fraction(s: str) -> float:
    v = _positive_float(s)
    if v >= 1:
        raise argparse.ArgumentTypeError(f"{v} must be below 1")
    return v


_score = _number_in(0.0, 1.0, hi_included=True)
_overlap = _number_in(0.0, 0.9, hi_included=False)


# --------------------------------------------------------------------------- train
def cmd_train(a: argparse.Namespace) -> int:
    import torch.distributed as dist

    from lesiondet.config import load_config, merge
    from lesiondet.detection.data import split_records
    from lesiondet.device import distributed, resolve_device
    from lesiondet.fileio import next_run_dir
    from lesiondet.io.labels import LabelMap
    from lesiondet.engine.checkpoint import load_checkpoint
    from lesiondet.detection.train import train
    from lesiondet.io.voc import read_voc_dir

    from lesiondet.io.sources import Source, parse_source, read_sources

    resume_ck = None
    if a.resume:
        resume_ck = load_checkpoint(a.resume, trust_legacy=a.trust_legacy)
        if "optimizer" not in resume_ck:
            raise LesiondetError(a.resume, "this checkpoint cannot be resumed (no optimizer state)",
                                 "resume from last.pt, not best.pt")
        cfg = resume_ck["config"]
        data = cfg["data"]
        if a.epochs:
            cfg["train"]["epochs"] = a.epochs
    else:
        cfg = load_config(a.config)
        over = {k: v for k, v in {"epochs": a.epochs, "batch": a.batch, "lr": a.lr, "workers": a.workers}.items()
                if v is not None}
        cfg = merge(cfg, {"train": over})
        if a.pretrained:
            cfg = merge(cfg, {"model": {"pretrained": a.pretrained}})
        tiling_over = {k: v for k, v in {"tile": a.tile, "overlap": a.overlap}.items() if v is not None}
        cfg = merge(cfg, {"tiling": tiling_over})
        if not a.voc:
            raise LesiondetError(None, "no training data given",
                                 "pass --voc DIR (a labelImg folder) or --voc configs/datasets/NAME.yaml")
        labels_path = a.labels or (cfg.pop("labels", None) if isinstance(cfg.get("labels"), str) else None)
        sources = [parse_source(v, labels_path) for v in a.voc]
        data = {"sources": [src.to_dict() for src in sources], "val": a.val and str(a.val),
                "val_split": a.val_split, "images": a.images and str(a.images)}
        cfg["data"] = data

    sources = [Source.from_dict(d) for d in data["sources"]]
    records, label_map, annotated = read_sources(sources, data["images"])
    if resume_ck is not None:
        label_map = LabelMap.from_dict({**resume_ck["label_map"], "default_aliases": False}, str(a.resume))
    if data["val"]:
        train_records, val_records = records, read_voc_dir(data["val"], label_map, data["images"])
    else:
        if len(records) < 2:
            raise LesiondetError(sources[0].voc, "only one annotated image; cannot hold some back for validation",
                                 "add images or pass --val DIR")
        train_records, val_records = split_records(records, data["val_split"], seed=cfg["train"]["seed"])
    _check_images(train_records + val_records)

    device = resolve_device(a.device)
    if resume_ck is not None:
        out = Path(a.resume).parent
    elif distributed():
        from lesiondet.device import init_distributed

        rank, _, device = init_distributed(device)
        holder = [str(next_run_dir(Path(a.out).parent, Path(a.out).name)) if rank == 0 else None]
        dist.broadcast_object_list(holder, src=0)
        out = Path(holder[0])
    else:
        out = next_run_dir(Path(a.out).parent, Path(a.out).name)
    counts = Counter(o.label for r in train_records for o in r.objects)
    _say(f"training on {len(train_records)} images ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}), "
         f"validating on {len(val_records)}; classes {list(label_map.classes)}; device {device}; run folder {out}")
    if len(sources) > 1:
        _say("classes each source annotates (others are masked out of its loss): "
             + "; ".join(f"{k}: {', '.join(v)}" for k, v in annotated.items()))
    summary = train(train_records, val_records, label_map, cfg, out, device, resume=a.resume,
                    time_limit_min=a.time_limit, log=_say, annotated=annotated if len(sources) > 1 else None,
                    trust_legacy=a.trust_legacy)
    _say(f"done: {summary['epochs_done']} epoch(s), best val mAP50 {max(summary['best_fitness'], 0):.3f}; "
         f"weights {out / 'best.pt'}, curves {out / 'curves.png'}")
    return 0


def _check_images(records) -> None:
    """Decode every image before training starts, so a bad file fails now, not in hour three."""
    from lesiondet.errors import ImageError
    from lesiondet.images import read_rgb
    from lesiondet.progress import progress

    for r in progress(records, desc="checking images", enabled=len(records) > 50):
        # A full decode: a truncated JPEG has a good header and would fail only inside the data loader.
        h, w = read_rgb(r.image_path).shape[:2]
        if (w, h) != (r.width, r.height):
            raise ImageError(r.image_path, f"image is {w}x{h} but {r.xml_path} says {r.width}x{r.height}",
                             "fix <size> in the XML or re-annotate the image")


# --------------------------------------------------------------------------- detect
def _collect_images(inputs: Sequence[str]) -> list[Path]:
    paths: list[Path] = []
    for s in inputs:
        p = Path(s)
        if p.is_dir():
            from lesiondet.fileio import list_dir

            found = [q for q in list_dir(p) if q.suffix.lower() in IMAGE_SUFFIXES]
            if not found:
                raise LesiondetError(p, "no images (.jpg, .png, .tif, .bmp) in this folder", "point at image files")
            paths += found
        elif p.exists():
            paths.append(p)
        else:
            raise LesiondetError(p, "image not found", "check the path")
    return paths


def cmd_detect(a: argparse.Namespace) -> int:
    from lesiondet.detection.detect import count_table, detect_files
    from lesiondet.fileio import next_run_dir
    from lesiondet.grading.rules import GradingConfig
    from lesiondet.detection.predict import Predictor

    images = _collect_images(a.images)
    predictor = Predictor(a.weights, a.device, a.score, trust_legacy=a.trust_legacy, **_tiling_overrides(a))
    grading = GradingConfig.load(a.grading) if (a.grade or a.report) else None
    out = Path(a.out)
    if a.exist_ok:
        out.mkdir(parents=True, exist_ok=True)
    else:
        out = next_run_dir(out.parent, out.name)
    run = detect_files(predictor, images, out, grading=grading, report=a.report)
    print(count_table(run, predictor.classes))
    if a.grade:
        for rec, g in zip(run.records, run.grades):
            print(f"{rec.image_path.name}: grade {g.grade} – {g.grade_name}")
            for r in g.reasons:
                print(f"  - {r}")
        if run.records:
            from lesiondet.grading.rules import PDR_SENTENCE

            print(f"Note: {PDR_SENTENCE}")
    if run.report:
        _say(f"report {run.report}")
    _say(f"results in {out} (annotated .png, .json, labelImg .xml with <score>; score >= {a.score})")
    if run.failures:
        for f in run.failures:
            print(f"lesiondet: error: {f}", file=sys.stderr)
        _say(f"{len(run.failures)} of {len(images)} image(s) failed; list in {out / 'failures.txt'}")
        return 1
    return 0


# --------------------------------------------------------------------------- eval
def cmd_eval(a: argparse.Namespace) -> int:
    from lesiondet.detection.metrics import evaluate_detections, format_froc, format_table, json_safe
    from lesiondet.fileio import next_run_dir, write_json
    from lesiondet.grading.learned import grade_agreement, plot_confusion
    from lesiondet.reporting.plots import plot_froc, plot_pr_curves
    from lesiondet.io.labels import LabelMap, load_label_map
    from lesiondet.io.voc import present_labels, read_voc_dir

    if not a.map:
        raise LesiondetError(None, "no metric chosen", "pass --map")
    if a.weights:
        from lesiondet.detection.predict import Predictor

        predictor = Predictor(a.weights, a.device, a.score, trust_legacy=a.trust_legacy, **_tiling_overrides(a))
        classes = predictor.classes
        label_map = (load_label_map(a.labels) if a.labels
                     else LabelMap.from_dict({**predictor.label_map, "default_aliases": True}, str(a.weights)))
        gt = read_voc_dir(a.voc, label_map, a.images)
        preds = predictor.predict_records(gt, progress=True)
    else:
        label_map = load_label_map(a.labels)
        gt = read_voc_dir(a.voc, label_map, a.images)
        preds = read_voc_dir(a.pred, label_map, need_image=False)
        classes = list(label_map.classes) if a.labels else \
            [c for c in label_map.classes if c in present_labels(gt) | present_labels(preds)]
    result = evaluate_detections(gt, preds, classes)
    result["grade_agreement"] = grade_agreement(gt, preds, a.grade_score)
    print(format_table(result))
    print(format_froc(result))
    ga = result["grade_agreement"]
    print(f"{len(gt)} images, {result['n_pred']} detections; mAP@[.5:.95] {result['mAP']:.4f}  "
          f"AP50 {result['mAP50']:.4f}  (pycocotools, maxDets 1000)")
    print(f"ICDR grade from detections vs from ground truth: agreement {ga['accuracy']:.3f}, "
          f"quadratic kappa {ga['qwk']:.3f}")
    out = next_run_dir(Path(a.out).parent, Path(a.out).name)
    plot_pr_curves(out / "pr_curves.png", result)
    plot_froc(out / "froc.png", result)
    plot_confusion(out / "grade_confusion.png", ga["reference"], ga["predicted"],
                   f"grade from detections vs ground-truth boxes (kappa {ga['qwk']:.3f})")
    _say(f"figures in {out} (pr_curves.png, froc.png, grade_confusion.png)")
    if a.json:
        write_json(a.json, json_safe(result))
        _say(f"wrote {a.json}")
    return 0


# --------------------------------------------------------------------------- grade
def cmd_grade(a: argparse.Namespace) -> int:
    import numpy as np

    from lesiondet.fileio import write_json
    from lesiondet.grading.rules import GRADE_NAMES, GradingConfig, grade_record
    from lesiondet.grading.learned import (OrdinalGrader, features, plot_confusion, quadratic_weighted_kappa, read_labels_csv)
    from lesiondet.io.labels import load_label_map
    from lesiondet.progress import progress
    from lesiondet.io.voc import read_voc_dir

    cfg = GradingConfig.load(a.grading)
    records = read_voc_dir(a.voc, load_label_map(a.labels), a.images)
    grades = [grade_record(r, cfg) for r in progress(records, desc="grade", enabled=len(records) >= 20)]
    names = [r.stem for r in records]
    model = None
    if a.fit:
        labels = read_labels_csv(a.fit)
        pairs = [(features(g, cfg.merged_as_he), labels[n]) for n, g in zip(names, grades) if n in labels]
        if len(pairs) < 2:
            raise LesiondetError(a.fit, "fewer than two of its images are in --voc", "check the image names")
        X, y = np.stack([p[0] for p in pairs]), [p[1] for p in pairs]
        model = OrdinalGrader().fit(X, y)
        path = model.save(a.model or "grader.json")
        fit_qwk = quadratic_weighted_kappa(y, model.predict(X))
        print(f"fitted an ordinal grader on {len(y)} images (training QWK {fit_qwk:.3f}); saved {path}")
    elif a.model:
        model = OrdinalGrader.load(a.model, a.trust_legacy)
    predicted = [int(g.grade) for g in grades]
    if model is not None:
        predicted = [int(v) for v in model.predict(np.stack([features(g, cfg.merged_as_he) for g in grades]))]

    print(f"{'image':<24} {'grade':>5}  {'fovea from':<12} {'DME?':<5} counts")
    for n, g, p in zip(names, grades, predicted):
        counts = ", ".join(f"{k} {v}" for k, v in g.counts.items()) or "-"
        print(f"{n[:23]:<24} {p:>5}  {g.fovea_source:<12} {'yes' if g.dme_suspect else 'no':<5} {counts}")
    dist = Counter(predicted)
    print("grade distribution: " + ", ".join(f"{k}: {dist.get(k, 0)}" for k in range(5)))
    doc: dict | list = []
    for n, g, p in zip(names, grades, predicted):
        d = g.to_dict()
        d["image"] = n if not g.image else Path(g.image).name
        if model is not None:
            d["rule_grade"], d["grade"] = d["grade"], p
            d["grade_name"] = GRADE_NAMES[p]
        doc.append(d)
    if a.eval:
        labels = read_labels_csv(a.eval)
        pairs = [(labels[n], p) for n, p in zip(names, predicted) if n in labels]
        if not pairs:
            raise LesiondetError(a.eval, "none of its images are in --voc", "check the image names")
        y, yp = [t for t, _ in pairs], [p for _, p in pairs]
        qwk = quadratic_weighted_kappa(y, yp)
        acc = float(np.mean(np.equal(y, yp)))
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        png = plot_confusion(out / "grade_confusion.png", y, yp,
                             f"{'learned' if model is not None else 'rule'} grader: QWK {qwk:.3f}, accuracy {acc:.3f}")
        print(f"against {len(y)} reference grades: quadratic weighted kappa {qwk:.4f}, accuracy {acc:.4f}; "
              f"confusion matrix {png}")
        doc = {"images": doc, "qwk": qwk, "accuracy": acc, "n": len(y)}
    if a.json:
        write_json(a.json, doc)
        _say(f"wrote {a.json}")
    return 0


# --------------------------------------------------------------------------- synth
def cmd_synth(a: argparse.Namespace) -> int:
    from lesiondet.synth import write_sample

    if a.oct:
        from lesiondet.synth import write_oct_sample

        out = write_oct_sample(a.out, per_class=a.n_train, seed=a.seed)
        _say(f"wrote a synthetic OCT dataset to {out} (CNV/, DME/, DRUSEN/, NORMAL/)")
        return 0
    out = write_sample(a.out, a.n_train, a.n_val, a.n_test, a.size, a.seed)
    _say(f"wrote a synthetic labelImg dataset to {out} (train/, val/, test/)")
    return 0


# --------------------------------------------------------------------------- oct
def cmd_oct_train(a: argparse.Namespace) -> int:
    from lesiondet.device import resolve_device
    from lesiondet.fileio import next_run_dir, read_yaml
    from lesiondet.oct.classify import DEFAULT_OCT, patient_split, read_oct_data, read_scan, train_oct

    cfg = dict(DEFAULT_OCT)
    if a.config:
        user = read_yaml(a.config, "OCT config", "pass a YAML such as configs/models/oct.yaml")
        bad = set(user.get("oct", user)) - set(DEFAULT_OCT)
        if bad:
            raise LesiondetError(a.config, f"unknown OCT option(s) {sorted(bad)}", f"valid: {', '.join(DEFAULT_OCT)}")
        cfg.update(user.get("oct", user))
    cfg.update({k: v for k, v in {"epochs": a.epochs, "batch": a.batch, "arch": a.arch,
                                  "pretrained": a.pretrained}.items() if v is not None})
    samples = read_oct_data(a.data)
    if a.val:
        train_s, val_s = samples, read_oct_data(a.val)
    else:
        train_s, val_s = patient_split(samples, a.val_split, cfg["seed"])
    classes = sorted({s.label for s in train_s} | {s.label for s in val_s})
    if len(classes) < 2:
        raise LesiondetError(a.data, f"only one class ({classes[0]})", "add scans of at least one other class")
    for s in train_s + val_s:
        read_scan(s.path)  # a bad file fails now, not in epoch five
    out = next_run_dir(Path(a.out).parent, Path(a.out).name)
    counts = Counter(s.label for s in train_s)
    _say(f"OCT: training on {len(train_s)} scans ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}) "
         f"from {len({s.patient for s in train_s})} patients, validating on {len(val_s)} scans from "
         f"{len({s.patient for s in val_s})} other patients; run folder {out}")
    summary = train_oct(train_s, val_s, classes, cfg, out, resolve_device(a.device), a.head, a.time_limit, _say)
    for head, acc in summary["val"].items():
        _say(f"{head} head: validation accuracy {acc:.3f}")
    _say(f"weights {out / 'best.pt'}" + (f", curves {out / 'curves.png'}" if summary["history"] else ""))
    return 0


def cmd_oct_predict(a: argparse.Namespace) -> int:
    from lesiondet.fileio import next_run_dir, write_json
    from lesiondet.oct.classify import OctClassifier, plot_prediction, read_scan

    paths = _collect_images(a.images)
    clf = OctClassifier(a.weights, a.head, a.device, a.trust_legacy)
    out = next_run_dir(Path(a.out).parent, Path(a.out).name)
    docs, failures = [], []
    for p in paths:
        try:
            img = read_scan(p)
        except LesiondetError as e:
            failures.append(str(e))
            continue
        probs = dict(zip(clf.classes, map(float, clf.predict_proba_arrays([img])[0])))
        top = sorted(probs.items(), key=lambda kv: -kv[1])[: a.topk]
        print(f"{p.name}: {top[0][0]}  " + "  ".join(f"{c} {v:.3f}" for c, v in top))
        plot_prediction(out / f"{p.stem}.png", img, probs, f"{p.name}: {top[0][0]} ({top[0][1]:.2f})")
        docs.append({"image": str(p), "class": top[0][0], "probabilities": probs, "head": clf.head})
    if a.json:
        write_json(a.json, docs if len(paths) > 1 else (docs[0] if docs else []))
    _say(f"pictures in {out}")
    for f in failures:
        print(f"lesiondet: error: {f}", file=sys.stderr)
    return 1 if failures else 0


def cmd_oct_eval(a: argparse.Namespace) -> int:
    from lesiondet.fileio import write_json
    from lesiondet.oct.classify import OctClassifier, classification_metrics, read_oct_data
    from lesiondet.reporting.plots import plot_confusion_matrix

    clf = OctClassifier(a.weights, a.head, a.device, a.trust_legacy)
    samples = read_oct_data(a.data, clf.classes)
    proba = clf.predict_proba([s.path for s in samples], progress=len(samples) > 16)
    m = classification_metrics([clf.classes.index(s.label) for s in samples], proba, clf.classes)

    def f(v):
        return "   -  " if v is None else f"{v:6.3f}"

    print(f"{'class':<8} {'n':>4} {'sens':>6} {'spec':>6} {'AUC':>6}")
    for c, v in m["per_class"].items():
        print(f"{c:<8} {v['n']:>4} {f(v['sensitivity'])} {f(v['specificity'])} {f(v['auc'])}")
    print(f"accuracy {m['accuracy']:.4f} on {m['n']} scans ({clf.head} head)")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    import numpy as np

    png = plot_confusion_matrix(out / "oct_confusion.png", np.array(m["confusion"]), clf.classes,
                                f"OCT {clf.head} head: accuracy {m['accuracy']:.3f} (n={m['n']})")
    _say(f"confusion matrix {png}")
    if a.json:
        write_json(a.json, {**m, "head": clf.head})
        _say(f"wrote {a.json}")
    return 0


# --------------------------------------------------------------------------- export
def cmd_export(a: argparse.Namespace) -> int:
    from lesiondet.export.onnx import export

    out = export(a.weights, a.format, a.out, trust_legacy=a.trust_legacy)
    use = f"lesiondet detect IMG --weights {out}" if a.format == "onnx" else "torch.jit.load"
    _say(f"wrote {out}: the per-tile network, images at model scale in, boxes out; slicing and merging stay "
         f"in lesiondet ({use})")
    return 0


def _tiling_overrides(a: argparse.Namespace) -> dict:
    """Slicing options given on the command line (None: keep what the checkpoint says)."""
    return {"tile": a.tile, "overlap": a.overlap, "merge": a.merge, "nested_ios": a.nested_ios,
            "slice": False if a.no_slice else None, "tta": True if a.tta else None}


def _add_tiling_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("slicing (defaults: what the model was trained with)")
    g.add_argument("--tile", type=_positive_int, help="tile side in model pixels")
    g.add_argument("--overlap", type=_overlap, help="share of a tile that neighbours overlap (0-0.9)")
    g.add_argument("--merge", choices=("nms", "wbf"), help="merge tiles by class-wise NMS or weighted box fusion")
    g.add_argument("--nested-ios", type=_score, metavar="S",
                   help="drop a box lying this share inside a better one of its class (default 0.8; 0: keep all)")
    g.add_argument("--no-slice", action="store_true", help="one pass over the whole image at training scale")
    g.add_argument("--tta", action="store_true",
                   help="also predict on the mirrored image and merge the two (twice the time)")


def _add_trust_legacy(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-legacy", action="store_true",
                   help="load a lesiondet 0.1 model file, which unpickles it WITH code execution: only for files "
                        "you wrote yourself or got from someone you trust")


def _say(msg: str) -> None:
    """Progress for people; under torchrun only rank 0 speaks."""
    import os

    if os.environ.get("RANK", "0") == "0":
        print(msg, file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="lesiondet", description="Retinal lesion detection (Faster R-CNN) from labelImg VOC data.")
    from lesiondet import __version__

    p.add_argument("--version", action="version", version=f"lesiondet {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a detector on a labelImg VOC folder")
    t.add_argument("--voc", action="append",
                   help="folder of labelImg .xml (or its parent holding Annotations/), or a dataset YAML "
                        "(configs/datasets/*.yaml); repeat to train on several datasets together")
    t.add_argument("--images", help="folder of the images, if not next to the XML or in ../JPEGImages")
    g = t.add_mutually_exclusive_group()
    g.add_argument("--val", help="validation folder (labelImg VOC)")
    g.add_argument("--val-split", type=_fraction, default=0.2, help="share of --voc held out (default 0.2)")
    t.add_argument("--labels", help="label map YAML (default: canonical classes found in the data)")
    t.add_argument("--config", help="training preset YAML (configs/models/*.yaml)")
    t.add_argument("--epochs", type=_positive_int)
    t.add_argument("--batch", type=_positive_int)
    t.add_argument("--lr", type=_positive_float)
    t.add_argument("--workers", type=int, help="data-loader processes")
    t.add_argument("--pretrained", choices=("imagenet", "torchvision", "none"),
                   help="backbone weights: imagenet (offline EfficientNet-Lite0), torchvision (hub cache), none")
    t.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    t.add_argument("--time-limit", type=_positive_float, metavar="MINUTES",
                   help="stop cleanly after this many minutes, keeping best.pt")
    t.add_argument("--resume", metavar="LAST_PT", help="continue a run from its last.pt")
    t.add_argument("--out", default="runs/train", help="run folder; numbered if it exists (default runs/train)")
    t.add_argument("--tile", type=_positive_int, help="tile side in model pixels (default 512)")
    t.add_argument("--overlap", type=_overlap, help="tile overlap share at validation (default 0.2)")
    _add_trust_legacy(t)
    t.set_defaults(func=cmd_train)

    d = sub.add_parser("detect", help="detect lesions in images")
    d.add_argument("images", nargs="+", help="image files or folders")
    d.add_argument("--weights", required=True, help="best.pt from 'lesiondet train', or its exported .onnx")
    d.add_argument("--score", type=_score, default=0.3, help="minimum score (default 0.3)")
    d.add_argument("--out", default="runs/detect", help="output folder; numbered if it exists")
    d.add_argument("--exist-ok", action="store_true", help="write into --out even if it exists")
    d.add_argument("--device", default="auto")
    d.add_argument("--grade", action="store_true", help="grade DR severity (ICDR 0-3) from the detections")
    d.add_argument("--grading", help="grading thresholds YAML (default: configs/grading.yaml values)")
    d.add_argument("--report", action="store_true",
                   help="also write a self-contained report.html (images, lesion tables, grades, flags)")
    _add_tiling_args(d)
    _add_trust_legacy(d)
    d.set_defaults(func=cmd_detect)

    e = sub.add_parser("eval", help="score detections against labelImg ground truth")
    e.add_argument("--map", action="store_true", help="COCO mAP@[.5:.95], AP50 and per-class AP (pycocotools)")
    e.add_argument("--voc", required=True, help="ground-truth labelImg folder")
    e.add_argument("--images", help="image folder, if not next to the XML or in ../JPEGImages")
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", help="checkpoint (or exported .onnx) to run on the ground-truth images")
    src.add_argument("--pred", help="folder of predicted VOC XML (optional <score>), matched by file stem")
    e.add_argument("--labels", help="label map YAML")
    e.add_argument("--score", type=_score, default=0.001, help="minimum score kept with --weights (default 0.001)")
    e.add_argument("--json", help="write the figures to this JSON file")
    e.add_argument("--grade-score", type=_score, default=0.3,
                   help="score threshold for grading the detections (default 0.3, as detect)")
    e.add_argument("--out", default="runs/eval", help="folder for the PR, FROC and grade plots; numbered if it exists")
    e.add_argument("--device", default="auto")
    _add_tiling_args(e)
    _add_trust_legacy(e)
    e.set_defaults(func=cmd_eval)

    gr = sub.add_parser("grade", help="ICDR DR grade from labelImg lesion annotations (or predictions)")
    gr.add_argument("--voc", required=True, help="labelImg folder (ground truth or 'detect' output)")
    gr.add_argument("--images", help="image folder, if not next to the XML or in ../JPEGImages")
    gr.add_argument("--labels", help="label map YAML")
    gr.add_argument("--grading", help="grading thresholds YAML (configs/grading.yaml)")
    gr.add_argument("--json", help="write one object per image (or, with --eval, the scores too)")
    gr.add_argument("--fit", metavar="LABELS_CSV", help="fit the learned ordinal grader on image,grade rows")
    gr.add_argument("--model", help="learned grader file: written by --fit, read otherwise")
    gr.add_argument("--eval", metavar="LABELS_CSV", help="QWK, accuracy and a confusion-matrix PNG")
    gr.add_argument("--out", default="runs/grade", help="folder for the confusion-matrix PNG")
    _add_trust_legacy(gr)
    gr.set_defaults(func=cmd_grade)

    o = sub.add_parser("oct", help="OCT B-scan classifier: CNV / DME / DRUSEN / NORMAL")
    osub = o.add_subparsers(dest="oct_command", required=True, parser_class=_Parser)
    ot = osub.add_parser("train", help="train on a class-per-folder tree or a path,label CSV")
    ot.add_argument("--data", required=True, help="folder with CNV/ DME/ DRUSEN/ NORMAL/ sub-folders, or a CSV")
    og = ot.add_mutually_exclusive_group()
    og.add_argument("--val", help="validation folder or CSV (default: hold out patients from --data)")
    og.add_argument("--val-split", type=_fraction, default=0.2, help="share of patients held out (default 0.2)")
    ot.add_argument("--head", choices=("finetune", "linear", "both"), default="both",
                    help="fine-tuned CNN, logistic regression on frozen features, or both (default)")
    ot.add_argument("--arch", choices=("efficientnet_lite0", "mobilenet_v3_large", "resnet18", "resnet50"))
    ot.add_argument("--pretrained", choices=("imagenet", "torchvision", "none"))
    ot.add_argument("--config", help="YAML with OCT options (configs/models/oct.yaml)")
    ot.add_argument("--epochs", type=_positive_int, help="fine-tuning epochs after the head-only stage")
    ot.add_argument("--batch", type=_positive_int)
    ot.add_argument("--time-limit", type=_positive_float, metavar="MINUTES")
    ot.add_argument("--device", default="auto")
    ot.add_argument("--out", default="runs/oct", help="run folder; numbered if it exists")
    ot.set_defaults(func=cmd_oct_train)
    op = osub.add_parser("predict", help="class and probabilities for OCT scans")
    op.add_argument("images", nargs="+", help="scan files or folders")
    op.add_argument("--weights", required=True, help="best.pt from 'lesiondet oct train'")
    op.add_argument("--head", choices=("finetune", "linear"), help="default: the fine-tuned head if trained")
    op.add_argument("--topk", type=_positive_int, default=4)
    op.add_argument("--json", help="write class and probabilities to this file")
    op.add_argument("--out", default="runs/oct-predict", help="folder for the pictures; numbered if it exists")
    op.add_argument("--device", default="auto")
    _add_trust_legacy(op)
    op.set_defaults(func=cmd_oct_predict)
    oe = osub.add_parser("eval", help="accuracy, sensitivity, specificity, ROC AUC, confusion matrix")
    oe.add_argument("--data", required=True, help="labelled folder or CSV")
    oe.add_argument("--weights", required=True)
    oe.add_argument("--head", choices=("finetune", "linear"))
    oe.add_argument("--json", help="write the figures to this JSON file")
    oe.add_argument("--out", default="runs/oct-eval", help="folder for oct_confusion.png")
    oe.add_argument("--device", default="auto")
    _add_trust_legacy(oe)
    oe.set_defaults(func=cmd_oct_eval)

    x = sub.add_parser("export", help="export a detector's per-tile network to ONNX or TorchScript")
    x.add_argument("--weights", required=True, help="best.pt from 'lesiondet train'")
    x.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    x.add_argument("--out", help="output file (default: the weights' name with .onnx or .torchscript)")
    _add_trust_legacy(x)
    x.set_defaults(func=cmd_export)

    s = sub.add_parser("synth", help="write the synthetic sample dataset")
    s.add_argument("out")
    s.add_argument("--n-train", type=_positive_int, default=24)
    s.add_argument("--n-val", type=_positive_int, default=6)
    s.add_argument("--n-test", type=_positive_int, default=6)
    s.add_argument("--size", type=_positive_int, default=512)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--oct", action="store_true", help="write a synthetic OCT class-per-folder set instead")
    s.set_defaults(func=cmd_synth)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except LesiondetError as e:
        print(f"lesiondet: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # unreadable file, full disk: the OS says what, we say where
        where = f"{e.filename}: " if e.filename else ""
        print(f"lesiondet: error: {where}{e.strerror or e}; check the path, its permissions and free space",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lesiondet: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
