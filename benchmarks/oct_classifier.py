"""The OCT classifier on every Kermany scan we have, by patient-grouped cross-validation.

    python benchmarks/oct_classifier.py                 # features once (cached), then every variant
    python benchmarks/oct_classifier.py --report-only   # reprint from benchmarks/runs/oct_classifier/result.json

Scans: ``../shared/data/oct`` (46, four classes, 512-768 px wide) and ``../shared/data/oct_extra``
(272 CNV and NORMAL, 1024-1536 px wide), 5 folds grouped by patient (``io.splits.group_folds``,
seed 0). The 88 Duke DME B-scans (``oct_fluid``) only ever join the training folds, three ways:
out, in as they are, and made to look like Kermany scans (``oct.classify.kermany_like``).

Per variant: pooled accuracy, per-class sensitivity, the share of CNV and NORMAL scans called DME or
DRUSEN, accuracy on the 46 four-class scans, and a *width shift*: the wide oct_extra scans resized to
512 px across, as a 512-px camera export would store them, so a classifier that learnt "narrow scan
means DME or DRUSEN" shows it. Then, for the chosen recipe, temperature scaling fitted out of fold
(expected calibration error before and after) and the coverage and accuracy of the "uncertain" cut.
Linear heads on frozen EfficientNet-Lite0 features (the recipe ``lesiondet oct train --head linear``
runs); ``--finetune-minutes M`` adds the fine-tuned network per fold for comparison.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"
RUN = ROOT / "benchmarks" / "runs" / "oct_classifier"
SIZES = (224, 320, 448)


def narrow(img: np.ndarray, width: int = 512) -> np.ndarray:
    """A wide scan as a 512-px-wide export of the same B-scan would store it."""
    return cv2.resize(img, (width, img.shape[0]), interpolation=cv2.INTER_AREA) if img.shape[1] > width else img


def features(images: list[np.ndarray], interp: str) -> dict[str, np.ndarray]:
    """Frozen Lite0 features per input size, plain and mirrored: ``{"224": .., "224f": ..}``."""
    import torch

    from lesiondet.oct.classify import OctNet, transforms

    torch.manual_seed(0)
    net = OctNet("efficientnet_lite0", 4).eval()
    out = {}
    with torch.inference_mode():
        for z in SIZES:
            tf = transforms(z, False, interp)
            x = torch.stack([torch.from_numpy(tf(image=im)["image"]).permute(2, 0, 1).float() for im in images])
            out[str(z)] = torch.cat([net.features(x[i:i + 32]) for i in range(0, len(x), 32)]).numpy()
            out[f"{z}f"] = torch.cat([net.features(x[i:i + 32].flip(3)) for i in range(0, len(x), 32)]).numpy()
            print(f"  features at {z} px ({interp}) for {len(images)} scans", flush=True)
    return out


def cached_features(name: str, images_fn, interp: str) -> dict[str, np.ndarray]:
    path = RUN / f"features_{name}_{interp}.npz"
    if path.is_file():
        return dict(np.load(path))
    f = features(images_fn(), interp)
    RUN.mkdir(parents=True, exist_ok=True)
    np.savez(path, **f)
    return f


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--report-only", action="store_true")
    a = ap.parse_args()
    if a.report_only:
        print((RUN / "result.json").read_text())
        return 0

    from lesiondet.fileio import write_json
    from lesiondet.io.splits import group_folds
    from lesiondet.oct.calibrate import expected_calibration_error, fit_temperature, uncertain_cut, with_temperature
    from lesiondet.oct.classify import (
        classification_metrics,
        fit_linear_head,
        kermany_like,
        linear_proba,
        read_oct_data,
        read_scan,
    )
    from lesiondet.oct.segment import read_fluid_data
    from lesiondet.reporting.plots import plot_confusion_matrix

    samples = read_oct_data(SHARED / "oct") + read_oct_data(SHARED / "oct_extra")
    classes = ["CNV", "DME", "DRUSEN", "NORMAL"]
    y = np.array([classes.index(s.label) for s in samples])
    groups = [s.patient for s in samples]
    four = np.array([SHARED / "oct" in s.path.parents for s in samples])
    wide = np.array([read_scan(s.path).shape[1] > 768 for s in samples])
    duke = read_fluid_data(SHARED / "oct_fluid" / "scans.csv")
    folds = group_folds(groups, [s.label for s in samples], k=5, seed=0, items="scans")
    print(f"{len(samples)} Kermany scans of {len(set(groups))} patients "
          f"({', '.join(f'{c} {int((y == i).sum())}' for i, c in enumerate(classes))}); "
          f"{len(duke)} Duke DME scans; {len(folds)} folds", flush=True)

    F, Fn, Fd, Fdk = {}, {}, {}, {}
    for interp in ("linear", "area"):
        F[interp] = cached_features("kermany", lambda: [read_scan(s.path) for s in samples], interp)
        Fn[interp] = cached_features("kermany_narrow", lambda: [narrow(read_scan(s.path)) for s in samples], interp)
        Fd[interp] = cached_features("duke", lambda: [read_scan(s.image) for s in duke], interp)
        Fdk[interp] = cached_features("duke_kermany_like", lambda: [kermany_like(read_scan(s.image)) for s in duke],
                                      interp)

    def oof(interp="area", sizes=SIZES, duke_mode="out", weight="balanced", tta=False, C=0.1, flip_aug=False):
        """Out-of-fold probabilities on the scans as stored and on their narrow copies."""
        keys = [str(z) for z in sizes]
        p, pn = np.zeros((len(y), 4)), np.zeros((len(y), 4))
        for k in keys:
            for tr, te in folds:
                X, labels = F[interp][k][tr], [classes[i] for i in y[tr]]
                if flip_aug:
                    X, labels = np.vstack([X, F[interp][k + "f"][tr]]), labels * 2
                if duke_mode != "out":
                    src = (Fd if duke_mode == "in" else Fdk)[interp]
                    fd = np.vstack([src[k], src[k + "f"]]) if flip_aug else src[k]
                    X, labels = np.vstack([X, fd]), labels + ["DME"] * len(fd)
                clf = fit_linear_head(X, labels, classes, class_weight=weight, C=C)
                for src, dst in ((F, p), (Fn, pn)):
                    q = linear_proba(clf, src[interp][k][te], 4)
                    if tta:
                        q = (q + linear_proba(clf, src[interp][k + "f"][te], 4)) / 2
                    dst[te] += q / len(keys)
        return p, pn

    def summary(name: str, p: np.ndarray, pn: np.ndarray) -> dict:
        m = classification_metrics(y, p, classes)
        pred, predn = p.argmax(1), pn.argmax(1)
        cn = np.isin(y, [0, 3])
        r = {"accuracy": m["accuracy"],
             "sensitivity": {c: m["per_class"][c]["sensitivity"] for c in classes},
             "cnv_normal_called_dme_drusen": float(np.isin(pred[cn], [1, 2]).mean()),
             "four_class_accuracy": float((pred[four] == y[four]).mean()),
             "wide_narrowed_accuracy": float((predn[wide] == y[wide]).mean()),
             "wide_narrowed_called_dme_drusen": float(np.isin(predn[wide], [1, 2]).mean()),
             "confusion": m["confusion"]}
        print(f"{name:<44} acc {r['accuracy']:.3f}  " + " ".join(f"{c} {v:.2f}" for c, v in r["sensitivity"].items())
              + f"  CN->DME/DRU {r['cnv_normal_called_dme_drusen']:.3f}  four-class {r['four_class_accuracy']:.3f}"
              f"  narrowed: acc {r['wide_narrowed_accuracy']:.3f}, ->DME/DRU {r['wide_narrowed_called_dme_drusen']:.3f}",
              flush=True)
        return r

    variants = {
        "224 px, linear resize, Duke out": dict(interp="linear", sizes=(224,)),
        "224+320+448, linear resize, Duke out": dict(interp="linear"),
        "224+320+448, area resize, Duke out": dict(),
        "area, Duke in (as stored)": dict(duke_mode="in"),
        "area, Duke in (Kermany-like)": dict(duke_mode="kermany"),
        "area, Duke out, class weights none": dict(weight="none"),
        "area, Duke out, class weights sqrt": dict(weight="sqrt"),
        "area, Duke Kermany-like, weights sqrt": dict(duke_mode="kermany", weight="sqrt"),
        "area, Duke out, C 0.03": dict(C=0.03),
        "area, Duke out, C 0.3": dict(C=0.3),
        "area, Duke out, + mirrored copies in training": dict(flip_aug=True),
        "area, Duke out, test-time flip": dict(tta=True),
        "area, Duke out, flip training + test": dict(flip_aug=True, tta=True),
        "area, Duke in, + mirrored copies in training": dict(duke_mode="in", flip_aug=True),
        "area, Duke in, flip training + test": dict(duke_mode="in", flip_aug=True, tta=True),
        "area, Duke in, flip training, C 0.3": dict(duke_mode="in", flip_aug=True, C=0.3),
        "area, Duke in, flip training, weights sqrt": dict(duke_mode="in", flip_aug=True, weight="sqrt"),
    }
    results, probs = {}, {}
    for name, kw in variants.items():
        probs[name] = oof(**kw)
        results[name] = {**summary(name, *probs[name]), "settings": {k: list(v) if isinstance(v, tuple) else v
                                                                     for k, v in kw.items()}}
    RUN.mkdir(parents=True, exist_ok=True)
    write_json(RUN / "result.json", {"variants": results})

    # the chosen recipe: best mean of pooled accuracy, four-class accuracy and narrowed accuracy
    def score(r):
        return (r["accuracy"] + r["four_class_accuracy"] + r["wide_narrowed_accuracy"]) / 3
    chosen = max(results, key=lambda n: score(results[n]))
    p = probs[chosen][0]
    # temperature fitted out of fold: for each fold, on the other folds' out-of-fold probabilities
    pt = np.zeros_like(p)
    temps = []
    for tr, te in folds:
        t = fit_temperature(p[tr], y[tr])
        temps.append(t)
        pt[te] = with_temperature(p[te], t)
    t_all = fit_temperature(p, y)
    cuts = {f"{a:.2f}": uncertain_cut(pt, y, target_accuracy=a) for a in (0.95, 0.97, 0.98, 0.99)}
    for a, c in cuts.items():
        print(f"  'uncertain' below {c['threshold']:.3f}: coverage {c['coverage']:.3f}, accuracy of the answered "
              f"{c['accuracy']:.3f} (target {a})")
    cut = cuts["0.98"]
    conf = pt.max(1) >= cut["threshold"]
    calib = {"chosen": chosen, "temperature_per_fold": temps, "temperature_all": t_all,
             "ece_before": expected_calibration_error(p, y), "ece_after": expected_calibration_error(pt, y),
             "uncertain_cut": cut, "uncertain_cuts": cuts,
             "confident_accuracy": float((pt.argmax(1)[conf] == y[conf]).mean()),
             "uncertain_accuracy": float((pt.argmax(1)[~conf] == y[~conf]).mean()) if (~conf).any() else None}
    print(json.dumps(calib, indent=1))
    m = classification_metrics(y, p, classes)
    plot_confusion_matrix(RUN / "confusion.png", np.array(m["confusion"]), classes,
                          f"{chosen}\nCV accuracy {m['accuracy']:.3f} (n={len(y)})")
    write_json(RUN / "result.json", {"variants": results, "calibration": calib,
                                     "meta": {"n": len(y), "patients": len(set(groups)), "folds": len(folds)}})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
