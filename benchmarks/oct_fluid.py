"""OCT fluid U-Net on the shared Duke DME scans, and what helps the OCT classifier, measured.

    python benchmarks/oct_fluid.py segment --minutes 15      # train on 6 subjects, score the other 2
    python benchmarks/oct_fluid.py cv --minutes 12 --name native-crop [--config variant.yaml]   # subject-grouped CV
    python benchmarks/oct_fluid.py ensemble --names base seed1   # two cv runs' maps averaged, against each alone
    python benchmarks/oct_fluid.py classifier                # patient-grouped CV of the OCT classifier
    python benchmarks/oct_fluid.py ship --minutes 16         # the shipped oct.pt and fluid.pt, on all shared data
    python benchmarks/oct_fluid.py ship --minutes 16 --only fluid   # ... the fluid U-Net alone
    python benchmarks/oct_fluid.py ship --only oct           # ... the classifier alone

``segment``: ``lesiondet oct segment train --data scans.csv --val-split 0.2 --time-limit M`` (the
subject split of ``oct_segment_train``, seed 0), then ``lesiondet oct segment eval`` on the
validation subjects' scans. Results in ``benchmarks/runs/oct_fluid/`` (``eval.json``, pictures).

``cv``: 4-fold cross-validation over the 8 shared Duke subjects, 2 subjects per fold, each fold's
U-Net trained for ``--minutes`` on the other 6 and scored with its *last* weights (nothing is
chosen on the held-out subjects). Its probability maps are kept (``cv/NAME/fold*/probs.npz``), so the
post-processing (cut, test-time flip, retina band, small-region removal) is chosen afterwards by
nested CV: for each fold, the setting with the best pooled Dice on the other three folds is applied
to it. Reported: pooled Dice per fold, their mean and spread, and the pooled Dice over all 88 scans,
for the fixed default post-processing and for the nested choice (``cv/NAME/result.json``). A killed
run resumes at the fold it was in.

``classifier``: 5-fold patient-grouped cross-validation over the 46 shared Kermany scans of the
linear head (logistic regression on frozen Lite0 features, the head that trains in seconds), as
it is and with each change the issue lists: the 88 Duke B-scans as extra DME examples (training
folds only), the fluid area from the U-Net as a feature, test-time flips. Accuracy and per-class
sensitivity on the out-of-fold predictions go to ``benchmarks/runs/oct_fluid/classifier.json``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"
RUN = ROOT / "benchmarks" / "runs" / "oct_fluid"


def lesiondet(*args: str) -> None:
    cmd = [sys.executable, "-m", "lesiondet", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def segment(minutes: float) -> dict:
    from lesiondet.oct.segment import read_fluid_data, subject_split

    scans = read_fluid_data(SHARED / "oct_fluid" / "scans.csv")
    _, val = subject_split(scans, 0.2, 0)
    val_csv = RUN / "val.csv"
    RUN.mkdir(parents=True, exist_ok=True)
    val_csv.write_text("image,mask,subject\n" + "".join(f"{s.image},{s.mask},{s.subject}\n" for s in val))
    weights = RUN / "train" / "best.pt"
    if not weights.is_file():
        lesiondet("oct", "segment", "train", "--data", str(SHARED / "oct_fluid" / "scans.csv"), "--val-split", "0.2",
                  "--time-limit", str(minutes), "--out", str(RUN / "train"), "--device", "cpu")
    lesiondet("oct", "segment", "eval", "--data", str(val_csv), "--weights", str(weights), "--json",
              str(RUN / "eval.json"), "--out", str(RUN / "eval"), "--device", "cpu")
    m = json.loads((RUN / "eval.json").read_text())
    print(f"validation subjects {sorted({s.subject for s in val})}: pooled Dice {m['dice']:.3f}, IoU {m['iou']:.3f}, "
          f"pixel accuracy {m['pixel_accuracy']:.4f}, mean per-scan Dice {m['dice_per_scan_mean']:.3f} (n={m['n']})")
    return m


def subject_folds(scans, k: int = 4, seed: int = 0) -> list[list[str]]:
    """The subjects in ``k`` folds, shuffled once with ``seed``."""
    subjects = sorted({s.subject for s in scans})
    order = np.random.default_rng(seed).permutation(len(subjects))
    return [sorted(subjects[i] for i in order[f::k]) for f in range(k)]


POST_GRID = [{"threshold": t, "tta_flip": f, "retina_only": r, "min_region_px": m}
             for t in (0.4, 0.5, 0.6) for f in (False, True) for r in (False, True) for m in (0, 50, 150, 400)]


def pooled_dice(folds: list[dict], post: dict) -> tuple[float, list[float], list[dict]]:
    """Pooled Dice of each fold's scans under one post-processing setting, and over all of them."""
    from lesiondet.oct.segment import clean_mask, dice_of, overlap_counts

    total, per_fold, rows = np.zeros(4, np.int64), [], []
    for fd in folds:
        sums = np.zeros(4, np.int64)
        for name, prob, truth, retina in zip(fd["names"], fd["flip" if post["tta_flip"] else "plain"],
                                             fd["truth"], fd["retina"]):
            m = clean_mask(prob.astype(np.float32) / 255, post["threshold"], post["min_region_px"],
                           retina if post["retina_only"] else None)
            c = overlap_counts(m, truth)
            sums += c
            rows.append({"image": name, "dice": dice_of(*c[:3]), "fluid_px_true": int(truth.sum()),
                         "fluid_px_pred": int(m.sum())})
        per_fold.append(dice_of(*sums[:3]))
        total += sums
    return dice_of(*total[:3]), per_fold, rows


def subject_dice(folds: list[dict], post: dict) -> dict[str, float]:
    """Pooled Dice of each held-out subject's scans (names ``subjectNN_bscanMM``)."""
    from lesiondet.oct.segment import clean_mask, dice_of, overlap_counts

    sums: dict[str, np.ndarray] = {}
    for fd in folds:
        for name, prob, truth, retina in zip(fd["names"], fd["flip" if post["tta_flip"] else "plain"],
                                             fd["truth"], fd["retina"]):
            m = clean_mask(prob.astype(np.float32) / 255, post["threshold"], post["min_region_px"],
                           retina if post["retina_only"] else None)
            key = str(name).split("_")[0]
            sums[key] = sums.get(key, np.zeros(4, np.int64)) + overlap_counts(m, truth)
    return {k: dice_of(*v[:3]) for k, v in sorted(sums.items())}


def cv(minutes: float, name: str, config: Path | None, k: int = 4) -> dict:
    """Subject-grouped CV of one training recipe; post-processing chosen by nested CV on its predictions."""
    import torch

    from lesiondet.config import load_section
    from lesiondet.fileio import write_json
    from lesiondet.oct.segment import FluidSegmenter, read_fluid_data, read_pair, retina_band, train_segmenter

    torch.set_num_threads(2)
    cfg = load_section("segment", config, "segmentation config", "pass a YAML with a segment: section")
    scans = read_fluid_data(SHARED / "oct_fluid" / "scans.csv")
    out = RUN / "cv" / name
    folds = []
    for f, held in enumerate(subject_folds(scans, k)):
        fold_dir = out / f"fold{f}"
        probs = fold_dir / "probs.npz"
        val = [s for s in scans if s.subject in held]
        if not probs.is_file():
            train = [s for s in scans if s.subject not in held]
            print(f"fold {f}: training on {len(train)} scans, holding out subjects {held} ({len(val)} scans)",
                  flush=True)
            if fold_dir.exists():  # a killed fold starts again: its clock-driven schedule cannot resume mid-way
                import shutil

                shutil.rmtree(fold_dir)
            train_segmenter(train, val, cfg, fold_dir, torch.device("cpu"), time_limit_min=minutes,
                            log=lambda m: print("  " + m, flush=True))
            seg = FluidSegmenter(fold_dir / "last.pt", "cpu")
            plain, flip, truth = [], [], []
            for s in val:
                img, t = read_pair(s)
                plain.append((seg.probability(img, flip=False) * 255).round().astype(np.uint8))
                flip.append((seg.probability(img, flip=True) * 255).round().astype(np.uint8))
                truth.append(t)
            np.savez_compressed(probs, plain=np.stack(plain), flip=np.stack(flip), truth=np.stack(truth),
                                names=np.array([s.image.name for s in val]))
        z = np.load(probs)
        folds.append({"held": held, "names": list(z["names"]), "plain": z["plain"], "flip": z["flip"],
                      "truth": z["truth"], "retina": [retina_band(read_pair(s)[0]) for s in val]})

    default_post = {key: cfg[key] for key in ("threshold", "tta_flip", "retina_only", "min_region_px")}
    pooled, per_fold, rows = pooled_dice(folds, default_post)
    # nested: each fold gets the setting that scores best on the other folds
    nested, chosen = [], []
    for f in range(len(folds)):
        others = folds[:f] + folds[f + 1:]
        best = max(POST_GRID, key=lambda p: pooled_dice(others, p)[0])
        chosen.append(best)
        nested.append(pooled_dice([folds[f]], best)[1][0])
    everywhere = max(POST_GRID, key=lambda p: pooled_dice(folds, p)[0])
    # each post-processing idea alone, from the default
    ideas = {"default": {}, "no test-time flip": {"tta_flip": False}, "cut 0.4": {"threshold": 0.4},
             "cut 0.6": {"threshold": 0.6}, "regions under 50 px dropped": {"min_region_px": 50},
             "regions under 150 px dropped": {"min_region_px": 150}, "retina band only": {"retina_only": True}}
    post_table = {}
    for label, change in ideas.items():
        d, per, _ = pooled_dice(folds, {**default_post, **change})
        post_table[label] = {"pooled_dice": d, "fold_dice": per, "fold_mean": float(np.mean(per)),
                             "fold_sd": float(np.std(per, ddof=1))}
        print(f"  {label:<30} pooled {d:.3f}  folds " + " ".join(f"{v:.3f}" for v in per), flush=True)
    per_subject = subject_dice(folds, default_post)
    print("  per subject (default post-processing): " + ", ".join(f"{k} {v:.3f}" for k, v in per_subject.items()))
    epochs = [max(0, len((out / f"fold{f}" / "metrics.csv").read_text().splitlines()) - 1) for f in range(len(folds))]
    result = {"name": name, "minutes_per_fold": minutes, "epochs_per_fold": epochs, "config": cfg,
              "folds": [fd["held"] for fd in folds],
              "default_post": default_post,
              "pooled_dice": pooled, "fold_dice": per_fold,
              "fold_mean": float(np.mean(per_fold)), "fold_sd": float(np.std(per_fold, ddof=1)),
              "nested_fold_dice": nested, "nested_fold_mean": float(np.mean(nested)),
              "nested_fold_sd": float(np.std(nested, ddof=1)), "nested_choices": chosen,
              "post_processing_alone": post_table, "best_post_on_all_folds": everywhere, "best_post_pooled_dice": pooled_dice(folds, everywhere)[0],
              "per_subject_dice": per_subject, "per_scan": rows}
    write_json(out / "result.json", result)
    print(f"{name}: pooled Dice {pooled:.3f}; per fold " + ", ".join(f"{d:.3f}" for d in per_fold) +
          f" (mean {result['fold_mean']:.3f} ± {result['fold_sd']:.3f})")
    print(f"{name}, post-processing by nested CV: per fold " + ", ".join(f"{d:.3f}" for d in nested) +
          f" (mean {result['nested_fold_mean']:.3f} ± {result['nested_fold_sd']:.3f}); chosen {chosen}")
    print(f"{name}: best post-processing on all folds {everywhere}: pooled Dice {result['best_post_pooled_dice']:.3f}")
    return result


def classifier(seg_weights: Path, finetune_minutes: float = 0) -> dict:
    import torch

    from lesiondet.fileio import write_json
    from lesiondet.io.splits import group_folds
    from lesiondet.oct.classify import (OctNet, classification_metrics, fit_linear_head, linear_proba,
                                        read_oct_data, read_scan, transforms)
    from lesiondet.oct.segment import FluidSegmenter, read_fluid_data
    from lesiondet.reporting.plots import plot_confusion_matrix

    torch.manual_seed(0)
    samples = read_oct_data(SHARED / "oct")
    classes = sorted({s.label for s in samples})
    duke = read_fluid_data(SHARED / "oct_fluid" / "scans.csv")
    net = OctNet("efficientnet_lite0", len(classes)).eval()
    seg = FluidSegmenter(seg_weights, "cpu") if seg_weights.is_file() else None
    sizes = (224, 320, 448)

    @torch.inference_mode()
    def feats(imgs, size: int, flip: bool = False) -> np.ndarray:
        tf = transforms(size, False)
        x = torch.stack([torch.from_numpy(tf(image=im)["image"]).permute(2, 0, 1).float() for im in imgs])
        f = torch.cat([net.features(x[i:i + 16]) for i in range(0, len(x), 16)])
        if flip:
            f = (f + torch.cat([net.features(x[i:i + 16].flip(3)) for i in range(0, len(x), 16)])) / 2
        return f.numpy()

    k_imgs = [read_scan(s.path) for s in samples]
    d_imgs = [read_scan(s.image) for s in duke]
    F = {z: (feats(k_imgs, z), feats(d_imgs, z)) for z in sizes}
    F["224flip"] = (feats(k_imgs, 224, True), feats(d_imgs, 224, True))
    fluid_k = np.array([[seg.mask(im).mean() * 100] for im in k_imgs]) if seg else None
    fluid_d = np.array([[seg.mask(im).mean() * 100] for im in d_imgs]) if seg else None
    y = np.array([classes.index(s.label) for s in samples])
    groups = [s.patient for s in samples]
    folds = group_folds(groups, [s.label for s in samples], k=5, seed=0, items="scans")

    def oof(keys, extra_dme: bool = False, fluid: bool = False, concat: bool = False) -> np.ndarray:
        """Out-of-fold probabilities of linear heads on the features ``keys`` (averaged, or one concatenated)."""
        blocks = [F[k] for k in keys]
        if concat:
            blocks = [(np.hstack([b[0] for b in blocks]), np.hstack([b[1] for b in blocks]))]
        proba = np.zeros((len(y), len(classes)))
        for fk, fd in blocks:
            if fluid:
                fk, fd = np.hstack([fk, fluid_k]), np.hstack([fd, fluid_d])
            for tr, te in folds:
                X, labels = fk[tr], [classes[i] for i in y[tr]]
                if extra_dme:
                    X, labels = np.vstack([X, fd]), labels + ["DME"] * len(fd)
                proba[te] += linear_proba(fit_linear_head(X, labels, classes), fk[te], len(classes)) / len(blocks)
        return proba

    variants = {"linear head, 224 px (baseline)": oof([224]),
                "linear head, 320 px": oof([320]),
                "linear head, 448 px": oof([448]),
                "linear head, 224 px + test-time flip": oof(["224flip"]),
                "linear heads at 224 + 320 + 448 px, averaged": oof(list(sizes)),
                "one linear head on 224 + 448 px features": oof([224, 448], concat=True),
                "+ 88 Duke B-scans as DME (224 px)": oof([224], extra_dme=True),
                "+ Duke DME, heads at 224 + 320 + 448 averaged": oof(list(sizes), extra_dme=True)}
    if seg:
        variants["+ fluid area feature (224 px)"] = oof([224], fluid=True)
        variants["+ fluid area, heads at 224 + 320 + 448 averaged"] = oof(list(sizes), fluid=True)
    if finetune_minutes > 0:
        variants.update(finetuned(samples, classes, folds, y, finetune_minutes, variants))
    out = {}
    for name, proba in variants.items():
        m = classification_metrics(y, proba, classes)
        out[name] = {"accuracy": m["accuracy"], "confusion": m["confusion"],
                     "sensitivity": {c: m["per_class"][c]["sensitivity"] for c in classes}}
        print(f"{name:<52} accuracy {m['accuracy']:.3f}  " +
              "  ".join(f"{c} {v:.2f}" for c, v in out[name]["sensitivity"].items()), flush=True)
        slug = "".join(ch if ch.isalnum() else "_" for ch in name).strip("_")[:60]
        plot_confusion_matrix(RUN / "classifier" / f"{slug}.png", np.array(m["confusion"]), classes,
                              f"{name}\nCV accuracy {m['accuracy']:.3f} (n={len(y)})")
    out["_meta"] = {"n": len(y), "patients": len(set(groups)), "folds": len(folds), "classes": classes}
    write_json(RUN / "classifier.json", out)
    return out


def finetuned(samples, classes, folds, y, minutes: float, linear: dict) -> dict[str, np.ndarray]:
    """The fine-tuned head per fold (``oct train --head finetune`` on the training folds, ``minutes`` each),
    alone and averaged with the multi-scale linear heads."""
    import torch

    from lesiondet.oct.classify import OctClassifier, train_oct

    proba = np.zeros((len(y), len(classes)))
    for f, (tr, te) in enumerate(folds):
        run = RUN / "classifier_finetune" / f"fold{f}"
        if not (run / "best.pt").is_file():
            train_oct([samples[i] for i in tr], [], classes, {}, run, torch.device("cpu"), heads="finetune",
                      time_limit_min=minutes, log=lambda m: print("  " + m, flush=True))
        clf = OctClassifier(run / "best.pt", "finetune", "cpu")
        proba[te] = clf.predict_proba([samples[i].path for i in te])
    multi = linear["linear heads at 224 + 320 + 448 px, averaged"]
    return {f"fine-tuned head ({minutes:g} min per fold)": proba,
            "fine-tuned + multi-scale linear heads, averaged": (proba + multi) / 2}


def ship(minutes: float, config: Path | None, only: str | None = None) -> dict:
    """Both OCT models on all shared data with the default recipes, copied to ``lesiondet/weights/``."""
    from lesiondet.weights import FLUID, HERE, OCT, ship_checkpoint

    out = RUN / "ship"
    fluid_run, oct_run = out / "fluid", out / "oct"
    if only != "oct" and not (fluid_run / "last.pt").is_file():
        lesiondet("oct", "segment", "train", "--data", str(SHARED / "oct_fluid" / "scans.csv"), "--val-split", "0",
                  "--time-limit", str(minutes), "--out", str(fluid_run), "--device", "cpu",
                  *(["--config", str(config)] if config else []))
    if only != "fluid" and not (oct_run / "best.pt").is_file():
        # the classifier's training set: every Kermany scan (oct and oct_extra) and the 88 Duke B-scans as
        # extra DME, as they are stored (the best variant of benchmarks/oct_classifier.py; CHANGELOG.md's benchmark log)
        from lesiondet.oct.classify import read_oct_data
        from lesiondet.oct.segment import read_fluid_data

        rows = [(s.path, s.label) for s in read_oct_data(SHARED / "oct") + read_oct_data(SHARED / "oct_extra")]
        rows += [(s.image, "DME") for s in read_fluid_data(SHARED / "oct_fluid" / "scans.csv")]
        data = out / "oct_train.csv"
        out.mkdir(parents=True, exist_ok=True)
        data.write_text("path,label\n" + "".join(f"{p.resolve()},{lab}\n" for p, lab in rows))
        lesiondet("oct", "train", "--data", str(data), "--val-split", "0", "--head", "linear",
                  "--out", str(oct_run), "--device", "cpu")
    # the fluid run has no held-out subjects, so its last epoch ships (best.pt is chosen on training scans)
    shipped = {}
    if only != "oct":
        shipped[FLUID] = ship_checkpoint(fluid_run / "last.pt", HERE / FLUID)
    if only != "fluid":
        shipped[OCT] = ship_checkpoint(oct_run / "best.pt", HERE / OCT)
    for name, info in shipped.items():
        print(f"{name}: {info['bytes'] / 2**20:.1f} MB, sha256 {info['sha256']}")
    return shipped


def ensemble(names: list[str], k: int = 4) -> dict:
    """Averaged probability maps of several ``cv`` runs (the same folds), against each run alone.

    Each run's fold models never saw that fold's subjects, so the average is a held-out ensemble of
    ``len(names)`` models, scored with the default post-processing.
    """
    from lesiondet.config import load_section
    from lesiondet.fileio import write_json
    from lesiondet.oct.segment import read_fluid_data, read_pair, retina_band

    cfg = load_section("segment", None, "segmentation config", "")
    post = {key: cfg[key] for key in ("threshold", "tta_flip", "retina_only", "min_region_px")}
    scans = read_fluid_data(SHARED / "oct_fluid" / "scans.csv")
    runs: dict[str, list[dict]] = {n: [] for n in [*names, "ensemble"]}
    for f, held in enumerate(subject_folds(scans, k)):
        val = [s for s in scans if s.subject in held]
        retina = [retina_band(read_pair(s)[0]) for s in val]
        zs = [np.load(RUN / "cv" / n / f"fold{f}" / "probs.npz") for n in names]
        assert all(list(z["names"]) == list(zs[0]["names"]) for z in zs), "the runs' folds differ"
        for n, z in zip(names, zs):
            runs[n].append({"held": held, "names": list(z["names"]), "plain": z["plain"], "flip": z["flip"],
                            "truth": z["truth"], "retina": retina})
        avg = {key: np.mean([z[key].astype(np.float32) for z in zs], 0).round().astype(np.uint8)
               for key in ("plain", "flip")}
        runs["ensemble"].append({"held": held, "names": list(zs[0]["names"]), **avg, "truth": zs[0]["truth"],
                                 "retina": retina})
    result = {}
    for n, folds in runs.items():
        pooled, per_fold, _ = pooled_dice(folds, post)
        result[n] = {"pooled_dice": pooled, "fold_dice": per_fold, "fold_mean": float(np.mean(per_fold)),
                     "per_subject_dice": subject_dice(folds, post)}
        print(f"{n:<10} pooled {pooled:.3f}  folds " + " ".join(f"{v:.3f}" for v in per_fold) + "  subjects "
              + " ".join(f"{s}:{v:.3f}" for s, v in result[n]["per_subject_dice"].items()), flush=True)
    write_json(RUN / "cv" / f"ensemble_{'_'.join(names)}.json", {"post": post, "runs": result})
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("segment", "cv", "ensemble", "classifier", "ship"))
    ap.add_argument("--minutes", type=float, default=15)
    ap.add_argument("--name", default="base", help="cv: the recipe's name (its folder under cv/)")
    ap.add_argument("--names", nargs="+", default=["base", "seed1"], help="ensemble: the cv runs to average")
    ap.add_argument("--config", type=Path, help="cv: a YAML with segment: options for this recipe")
    ap.add_argument("--finetune-minutes", type=float, default=0,
                    help="classifier: also fine-tune the network per fold for this long")
    ap.add_argument("--only", choices=("oct", "fluid"), help="ship: train and ship this model alone")
    a = ap.parse_args()
    RUN.mkdir(parents=True, exist_ok=True)
    if a.what == "segment":
        segment(a.minutes)
    elif a.what == "cv":
        cv(a.minutes, a.name, a.config)
    elif a.what == "ensemble":
        ensemble(a.names)
    elif a.what == "ship":
        ship(a.minutes, a.config, a.only)
    else:
        classifier(RUN / "train" / "best.pt", a.finetune_minutes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
