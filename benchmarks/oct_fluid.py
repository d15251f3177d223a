"""OCT fluid U-Net on the shared Duke DME scans, and what helps the OCT classifier, measured.

    python benchmarks/oct_fluid.py segment --minutes 15      # train on 6 subjects, score the other 2
    python benchmarks/oct_fluid.py classifier                # patient-grouped CV of the OCT classifier

``segment``: ``lesiondet oct segment train --data scans.csv --val-split 0.2 --time-limit M`` (the
subject split of ``oct_segment_train``, seed 0), then ``lesiondet oct segment eval`` on the
validation subjects' scans. Results in ``benchmarks/runs/oct_fluid/`` (``eval.json``, pictures).

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


def classifier(seg_weights: Path) -> dict:
    import torch
    from sklearn.model_selection import StratifiedGroupKFold

    from lesiondet.oct.classify import OctNet, fit_linear_head, linear_proba, read_oct_data, read_scan, transforms
    from lesiondet.oct.segment import FluidSegmenter, read_fluid_data

    torch.manual_seed(0)
    samples = read_oct_data(SHARED / "oct")
    classes = sorted({s.label for s in samples})
    duke = read_fluid_data(SHARED / "oct_fluid" / "scans.csv")
    net = OctNet("efficientnet_lite0", len(classes)).eval()
    tf = transforms(224, False)
    seg = FluidSegmenter(seg_weights, "cpu") if seg_weights.is_file() else None

    @torch.inference_mode()
    def feats(imgs, flip: bool) -> np.ndarray:
        x = torch.stack([torch.from_numpy(tf(image=im)["image"]).permute(2, 0, 1).float() for im in imgs])
        f = net.features(x)
        return ((f + net.features(x.flip(3))) / 2 if flip else f).numpy()

    k_imgs = [read_scan(s.path) for s in samples]
    d_imgs = [read_scan(s.image) for s in duke]
    F = {flip: (feats(k_imgs, flip), feats(d_imgs, flip)) for flip in (False, True)}
    fluid_k = np.array([[seg.mask(im).mean() * 100] for im in k_imgs]) if seg else None
    fluid_d = np.array([[seg.mask(im).mean() * 100] for im in d_imgs]) if seg else None
    y = np.array([classes.index(s.label) for s in samples])
    groups = [s.patient for s in samples]
    folds = list(StratifiedGroupKFold(5, shuffle=True, random_state=0).split(np.zeros(len(y)), y, groups))

    def run(extra_dme: bool, fluid: bool, flip: bool) -> dict:
        fk, fd = F[flip]
        if fluid:
            fk, fd = np.hstack([fk, fluid_k]), np.hstack([fd, fluid_d])
        proba = np.zeros((len(y), len(classes)))
        for tr, te in folds:
            X, labels = fk[tr], [classes[i] for i in y[tr]]
            if extra_dme:
                X, labels = np.vstack([X, fd]), labels + ["DME"] * len(fd)
            clf = fit_linear_head(X, labels, classes)
            proba[te] = linear_proba(clf, fk[te], len(classes))
        pred = proba.argmax(1)
        return {"accuracy": float((pred == y).mean()),
                "sensitivity": {c: float((pred[y == i] == i).mean()) for i, c in enumerate(classes)}}

    variants = {"linear head (baseline)": (False, False, False),
                "+ 88 Duke B-scans as DME": (True, False, False),
                "+ test-time flip": (False, False, True)}
    if seg:
        variants["+ fluid area feature"] = (False, True, False)
        variants["+ Duke DME + fluid area + flip"] = (True, True, True)
    else:
        variants["+ Duke DME + flip"] = (True, False, True)
    out = {name: run(*v) for name, v in variants.items()}
    out["_meta"] = {"n": len(y), "patients": len(set(groups)), "folds": 5, "classes": classes}
    (RUN / "classifier.json").write_text(json.dumps(out, indent=1))
    for name, r in out.items():
        if not name.startswith("_"):
            print(f"{name:<34} accuracy {r['accuracy']:.3f}  " +
                  "  ".join(f"{c} {v:.2f}" for c, v in r["sensitivity"].items()))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("segment", "classifier"))
    ap.add_argument("--minutes", type=float, default=15)
    a = ap.parse_args()
    RUN.mkdir(parents=True, exist_ok=True)
    if a.what == "segment":
        segment(a.minutes)
    else:
        classifier(RUN / "train" / "best.pt")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
