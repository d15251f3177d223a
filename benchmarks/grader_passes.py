"""What each of the grading CNN's passes is worth: input sizes x mirrors, by patient-grouped cross-validation.

    python benchmarks/grader_passes.py --lesions benchmarks/runs/operating_point/evidence

``detect --grade`` reads the grading CNN's features at 224, 384 and 512 px, each on the photograph and
its two mirrors: 9 network passes per photograph. This benchmark fits the grade readout
(``grading.readout``, the one ``grader fit`` ships) on every subset of the sizes, with and without the
mirrors, and scores each by the same 5-fold patient-grouped cross-validation as
``benchmarks/grading.py`` (the readout and its cut points fitted on the training folds only) on the
shared graded photographs (``../shared/data/grading/srahim``). It also times each pass on this
machine (onnxruntime and PyTorch, one photograph at a time).

Features are cached in ``benchmarks/runs/grader_passes/`` (per network digest); results go to
``result.json`` and ``table.md`` there.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SRAHIM = ROOT.parent / "shared" / "data" / "grading" / "srahim" / "labels.csv"
RUN = ROOT / "benchmarks" / "runs" / "grader_passes"
SIZES = [224, 384, 512]


def features(cnn: Path, items, tta: bool) -> np.ndarray:
    from lesiondet.grading.cnn import GraderCNN, embed_photographs
    from lesiondet.grading.readout import cached_features

    paths = [i.path for i in items]
    cache = RUN / ("features.npz" if tta else "features_no_mirrors.npz")
    return cached_features(cache, cnn, paths, SIZES, False,
                           lambda: embed_photographs(GraderCNN(cnn, "cpu", backend="auto"), paths, SIZES,
                                                     progress=True, tta=tta), tta)


def outer_cv(E: np.ndarray, X: np.ndarray | None, items, sizes, cfg, k: int = 5) -> dict[str, list]:
    """Out-of-fold (grade, referable, P(referable)) of the readout, fitted on the training folds only."""
    from lesiondet.grading.readout import fit_readout
    from lesiondet.io.splits import group_folds

    names = ["cnn"] + (["cnn+lesions"] if X is not None else [])
    oof = {n: [None] * len(items) for n in names}
    for tr, te in group_folds([i.patient for i in items], [i.grade for i in items], k, 0):
        t = [items[i] for i in tr]
        readout, _ = fit_readout(E[tr], None if X is None else X[tr], [i.grade for i in t],
                                 [i.referable for i in t], [i.maculopathy for i in t], [i.patient for i in t],
                                 sizes, cfg)
        for name in names:
            d = readout.predict(E[te], X[te] if name == "cnn+lesions" else None)
            for j, i in enumerate(te):
                oof[name][i] = (int(d["grade"][j]), bool(d["referable"][j]), float(d["p_referable"][j]))
    return oof


def time_passes(cnn: Path, items, n: int = 8) -> dict[str, float]:
    """Seconds per photograph of one pass at each size (no mirrors) and of the three mirrors together."""
    from lesiondet.grading.cnn import GraderCNN, load_input

    imgs = [load_input(i.path, max(SIZES), False) for i in items[:n]]
    out = {}
    for backend in ("auto", "torch"):
        g = GraderCNN(cnn, "cpu", backend=backend)
        g.embed(imgs[:1], [224], tta=False)  # warm-up
        for s in SIZES:
            for tta in (False, True):
                t0 = time.perf_counter()
                for im in imgs:
                    g.embed([im], [s], tta=tta)
                out[f"{g.backend} {s}px {'x3 mirrors' if tta else 'x1'}"] = round((time.perf_counter() - t0) / n, 4)
    return out


def main() -> int:
    import torch

    from lesiondet.config import load_section
    from lesiondet.grading.cnn import read_grading_csv
    from lesiondet.grading.learned import features as lesion_features
    from lesiondet.grading.metrics import grading_metrics
    from lesiondet.grading.rules import Grade

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cnn", type=Path, default=ROOT / "lesiondet" / "weights" / "grader.pt")
    ap.add_argument("--lesions", type=Path, help="detect --grade JSONs of the graded photographs (rule grades)")
    ap.add_argument("--no-timing", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(2)
    RUN.mkdir(parents=True, exist_ok=True)
    items = read_grading_csv(SRAHIM)
    cfg = load_section("grader", None, "", "")
    X = None
    if a.lesions:
        X = np.stack([lesion_features(Grade.from_dict(json.loads((a.lesions / f"{i.path.stem}.json").read_text())
                                                      ["grade"])) for i in items])
    E = {True: features(a.cnn, items, True), False: features(a.cnn, items, False)}
    dim = E[True].shape[1] // len(SIZES)
    rows = []
    y = [i.grade for i in items]
    for r in range(1, len(SIZES) + 1):
        for sizes in itertools.combinations(SIZES, r):
            cols = np.concatenate([np.arange(SIZES.index(s) * dim, (SIZES.index(s) + 1) * dim) for s in sizes])
            for tta in (True, False):
                oof = outer_cv(E[tta][:, cols], X, items, list(sizes), cfg)
                for name, o in oof.items():
                    m = grading_metrics(y, [g for g, _, _ in o], referable_true=[i.referable for i in items],
                                        referable_called=[c for _, c, _ in o], referable_score=[p for _, _, p in o],
                                        patients=[i.patient for i in items], n_boot=200)
                    rows.append({"sizes": list(sizes), "mirrors": tta, "passes": len(sizes) * (3 if tta else 1),
                                 "variant": name, "qwk": m["qwk"], "qwk_ci95": m.get("qwk_ci95"),
                                 "referable_auc": m["referable"].get("auc"),
                                 "referable_auc_ci95": m["referable"].get("ci95", {}).get("auc"),
                                 "sensitivity": m["referable"]["sensitivity"],
                                 "specificity": m["referable"]["specificity"]})
                    print(json.dumps(rows[-1]), flush=True)
    result = {"rows": rows, "n": len(items), "patients": len({i.patient for i in items}),
              "lesions": str(a.lesions) if a.lesions else None}
    if not a.no_timing:
        result["seconds_per_photograph"] = time_passes(a.cnn, items)
    (RUN / "result.json").write_text(json.dumps(result, indent=1))
    lines = ["| sizes (px) | mirrors | passes | variant | QWK (95% CI) | referable AUC (95% CI) | sens / spec |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        ci = r["qwk_ci95"] or [float("nan")] * 2
        aci = r["referable_auc_ci95"] or [float("nan")] * 2
        lines.append(f"| {', '.join(map(str, r['sizes']))} | {'yes' if r['mirrors'] else 'no'} | {r['passes']} | "
                     f"{r['variant']} | {r['qwk']:.3f} ({ci[0]:.2f}-{ci[1]:.2f}) | {r['referable_auc']:.3f} "
                     f"({aci[0]:.2f}-{aci[1]:.2f}) | {r['sensitivity']:.3f} / {r['specificity']:.3f} |")
    (RUN / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps(result.get("seconds_per_photograph"), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
