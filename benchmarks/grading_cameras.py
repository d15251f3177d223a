"""The grade on cameras it was not fitted on: leave-one-source-out, the resolution check and the familiarity check.

    python benchmarks/grading_cameras.py --lesions DIR           # the table, with the shipped recipe and others
    python benchmarks/grading_cameras.py --lesions DIR --quick    # two candidates only

Every row is scored on photographs the readout was not fitted on, with the shipped grading network
(``lesiondet/weights/grader.pt``'s CNN; only the readout is refitted per candidate):

* **own camera**: patient-grouped 5-fold cross-validation on ``../shared/data/grading/srahim`` (450
  photographs of 225 patients), at the photographs' own size (CNN alone and CNN + lesions);
* **the same eyes through other cameras' changes** (``camera.RENDERINGS``, never used for fitting; the
  readout's camera views are drawn from ``camera.CameraShift`` instead): a 400-px field of view, JPEG
  70; a 400 x 400 centre square, JPEG 75; the field of view's box stretched to 400 x 400, JPEG 90; a
  300-px field of view, JPEG 50. Same folds, CNN alone (no lesion evidence below ``lesion_min_fov``).
  Agreement with the same eye's native grade is reported beside them;
* **leave one source out**: fitted on all of srahim, scored on APTOS's held-out 20% (586 photographs of
  another camera, 224 px, preprocessed by its source, which the network never trained on); and fitted on
  those APTOS photographs, scored on srahim;
* **unfamiliar**: the share of photographs of other cameras (ROC, HEI-MED, IDRiD, CODRAS; no grades) the
  familiarity check refuses, at their own size and at a 400-px field of view through JPEG 70.

Candidates: ``--candidates`` names of ``CANDIDATES`` (readout settings laid over the defaults).
Features are cached under ``--run`` (a killed run resumes); results go to
``benchmarks/results/grading_cameras.json`` and the markdown table beside it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
SRAHIM = DATA / "grading" / "srahim" / "labels.csv"
APTOS = DATA / "grading" / "aptos224" / "labels.csv"
OTHER = {"roc": DATA / "fundus/roc/JPEGImages", "heimed": DATA / "fundus/heimed/JPEGImages",
         "idrid": DATA / "fundus/idrid/JPEGImages", "codras": DATA / "fundus/codras/JPEGImages"}
TESTS = ("fov400_q70", "square400_q75", "squash400_q90", "fov300_q50")
RESULTS = ROOT / "benchmarks" / "results"
#: readout settings compared on the same folds (``None``: the defaults, i.e. what ships)
CANDIDATES: dict[str, dict[str, Any]] = {
    "shipped: 3 camera views, ridge 3600, C 0.001": {},
    "no camera views": {"readout_views": 0},
    "3 camera views, previous penalties (ridge 600, C 0.005)": {"readout_ridge": 600, "readout_C": 0.005},
    "previous readout: no views, ridge 600, C 0.005": {"readout_views": 0, "readout_ridge": 600, "readout_C": 0.005},
}


def features(grader, weights: Path, run: Path, name: str, paths, preprocessed: bool = False,
             rendering: str | None = None) -> np.ndarray:
    """Mirror-averaged 224/512-px features of ``paths`` (as they are, or as rendered), cached in ``run``."""
    from lesiondet.camera import render
    from lesiondet.grading.cnn import embed_photographs, to_input
    from lesiondet.grading.readout import cached_features
    from lesiondet.images import read_rgb
    from lesiondet.progress import progress

    sizes = grader.readout.sizes

    def compute() -> np.ndarray:
        if rendering is None:
            return embed_photographs(grader, paths, sizes, preprocessed, progress=True)
        top = max(sizes)
        return np.vstack([grader.embed([to_input(render(read_rgb(p), rendering), top, preprocessed)], sizes)
                          for p in progress(list(paths), desc=f"{name}: {rendering}")])

    extra = {"rendering": rendering} if rendering else {}
    return cached_features(run / f"{name}.npz", weights, list(paths), sizes, preprocessed, compute, True, extra)


def metrics(y: np.ndarray, referable: np.ndarray, d: dict, patients=None) -> dict[str, Any]:
    from lesiondet.grading.metrics import grading_metrics

    fam = np.asarray(d["familiar"], bool)
    if not fam.any():  # every photograph refused: nothing graded to score
        return {"n": int(len(y)), "graded": 0, "unfamiliar": 1.0, "qwk": None, "qwk_ci95": None, "accuracy": None,
                "sensitivity": None, "specificity": None, "auc": None, "auc_ci95": None}
    m = grading_metrics(list(y[fam]), list(d["grade"][fam]), referable_true=list(referable[fam]),
                        referable_called=list(d["referable"][fam]), referable_score=list(d["p_referable"][fam]),
                        patients=None if patients is None else [p for p, f in zip(patients, fam) if f])
    r = m["referable"]
    return {"n": int(len(y)), "graded": int(fam.sum()), "unfamiliar": round(float(1 - fam.mean()), 4),
            "qwk": m["qwk"], "qwk_ci95": m.get("qwk_ci95"), "accuracy": m["accuracy"],
            "sensitivity": r["sensitivity"], "specificity": r["specificity"], "auc": r.get("auc"),
            "auc_ci95": r.get("ci95", {}).get("auc")}


def review_cost(d: dict, rule: np.ndarray, ref: np.ndarray) -> dict[str, Any]:
    """How many graded photographs the lesion rules and the final grade put two or more grades apart
    (``combined.final_grade`` flags them ``review``), and the referable call if they were referred too."""
    fam = np.asarray(d["familiar"], bool)
    apart = (np.abs(d["grade"] - rule) >= 2) & fam
    called = np.asarray(d["referable"], bool)
    referred = called | apart

    def sens_spec(c):
        return round(float(c[ref & fam].mean()), 4), round(float((~c)[~ref & fam].mean()), 4)

    return {"two_grades_apart": round(float(apart[fam].mean()), 4),
            "referring_them_too": dict(zip(("sensitivity", "specificity"), sens_spec(referred))),
            "flagged_only": dict(zip(("sensitivity", "specificity"), sens_spec(called)))}


def run_candidate(cfg: dict, E, V, L, T, items, aptos, other, rule=None) -> dict[str, Any]:
    from lesiondet.grading.readout import fit_readout
    from lesiondet.io.splits import group_folds

    y = np.array([i.grade for i in items])
    ref = np.array([bool(i.referable) for i in items])
    mac = [i.maculopathy for i in items]
    pat = [i.patient for i in items]
    k = int(cfg["readout_views"])
    Vk = V[:, :k] if k else None
    rows: dict[str, dict] = {}
    preds: dict[str, dict[str, np.ndarray]] = {}
    for tr, te in group_folds(pat, y, 5, 0, "photographs"):
        r, _ = fit_readout(E[tr], L[tr], y[tr], ref[tr], [mac[i] for i in tr], [pat[i] for i in tr],
                           [224, 512], cfg, True, None if Vk is None else Vk[tr])
        for name, X, les in [("own camera, CNN", E, None), ("own camera, CNN + lesions", E, L),
                             *[(t, T[t], None) for t in TESTS]]:
            d = r.predict(X[te], None if les is None else les[te])
            for key, v in d.items():
                if key != "variant":
                    arr = preds.setdefault(name, {}).setdefault(key, np.zeros((len(y),) + np.shape(v)[1:],
                                                                               np.asarray(v).dtype))
                    arr[te] = v
    for name, d in preds.items():
        rows[name] = metrics(y, ref, d, pat)
    if rule is not None:
        rows["own camera, CNN + lesions"].update(review_cost(preds["own camera, CNN + lesions"], rule, ref))
    base = preds["own camera, CNN"]["grade"]
    for t in TESTS:
        both = preds["own camera, CNN"]["familiar"] & preds[t]["familiar"]
        gap = np.abs(preds[t]["grade"] - base)[both]
        rows[t]["within_one_grade_of_native"] = round(float((gap <= 1).mean()), 4) if len(gap) else None
        rows[t]["mean_score_shift"] = round(float((preds[t]["score"] - preds["own camera, CNN"]["score"]).mean()), 3)
    # leave one source out
    Ea, ya = aptos
    r_all, _ = fit_readout(E, L, y, ref, mac, pat, [224, 512], cfg, True, Vk)
    rows["APTOS held-out, fitted on srahim"] = metrics(ya, ya >= 2, {**r_all.predict(Ea), "familiar": np.ones(len(ya),
                                                                                                              bool)})
    rows["APTOS held-out, fitted on srahim"]["unfamiliar"] = round(float(1 - r_all.predict(Ea)["familiar"].mean()), 4)
    r_ap, _ = fit_readout(Ea, None, ya, ya >= 2, [None] * len(ya), [f"a{i}" for i in range(len(ya))], [224, 512],
                          {**cfg, "familiar_components": 0}, True, None)
    rows["srahim, fitted on APTOS held-out"] = metrics(y, ref, r_ap.predict(E), pat)
    unfamiliar = {name: round(float(1 - r_all.predict(X)["familiar"].mean()), 4) for name, X in other.items()}
    return {"rows": rows, "unfamiliar_other_cameras": unfamiliar}


def table(results: dict[str, Any]) -> str:
    def f(v):
        return "–" if v is None else f"{v:.3f}"

    lines = ["| candidate | photographs | n | unfamiliar | QWK | referable sens / spec | referable AUC | within one "
             "grade of native |", "|---|---|---|---|---|---|---|---|"]
    for cand, res in results.items():
        for name, m in res["rows"].items():
            lines.append(f"| {cand} | {name} | {m['n']} | {m['unfamiliar']:.3f} | {f(m['qwk'])} | "
                         f"{f(m['sensitivity'])} / {f(m['specificity'])} | {f(m['auc'])} | "
                         f"{f(m.get('within_one_grade_of_native'))} |")
        rv = res["rows"].get("own camera, CNN + lesions", {})
        if "two_grades_apart" in rv:
            t, f_ = rv["referring_them_too"], rv["flagged_only"]
            lines.append(f"| {cand} | own camera: lesions and grade two or more apart (flagged for review) | | "
                         f"{rv['two_grades_apart']:.3f} | | flagged only {f_['sensitivity']:.3f} / "
                         f"{f_['specificity']:.3f}; referred too {t['sensitivity']:.3f} / {t['specificity']:.3f} | | |")
        lines.append(f"| {cand} | unfamiliar share of other cameras (no grades) | | "
                     + ", ".join(f"{k} {v:.2f}" for k, v in res["unfamiliar_other_cameras"].items()) + " | | | | |")
    return "\n".join(lines)


def main() -> int:
    from sklearn.model_selection import train_test_split

    from lesiondet.config import defaults
    from lesiondet.fileio import write_json, write_text
    from lesiondet.grading.cnn import GraderCNN, read_grading_csv
    from lesiondet.grading.learned import read_lesion_features
    from lesiondet.grading.cnn import cached_views
    from lesiondet.images import list_images
    from lesiondet.weights import default_grader

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lesions", type=Path, required=True,
                    help="detect --grade --grader none JSONs of the srahim photographs (shipped detector)")
    ap.add_argument("--weights", type=Path, help="grader whose network is read (default: the shipped one)")
    ap.add_argument("--run", type=Path, default=ROOT / "benchmarks" / "runs" / "grading_cameras",
                    help="feature caches")
    ap.add_argument("--candidates", nargs="*", default=list(CANDIDATES), help="which of CANDIDATES to compare")
    ap.add_argument("--out", type=Path, default=RESULTS / "grading_cameras.json")
    a = ap.parse_args()
    weights = a.weights or default_grader()
    a.run.mkdir(parents=True, exist_ok=True)
    g = GraderCNN(weights, "cpu", backend="auto")
    base = defaults("grader")
    items = read_grading_csv(SRAHIM)
    paths = [i.path for i in items]
    L = read_lesion_features(a.lesions, paths, ("HE_MA",))
    rule = np.array([json.loads((a.lesions / f"{Path(p).stem}.json").read_text())["grade"]["grade"] for p in paths])
    E = features(g, weights, a.run, "srahim", paths)
    most = max(int({**base, **CANDIDATES[c]}["readout_views"]) for c in a.candidates)
    V = cached_views(a.run / "srahim.npz", weights, g, paths, g.readout.sizes, most, int(base["seed"]))
    V = np.zeros((len(paths), 0, E.shape[1])) if V is None else V
    T = {t: features(g, weights, a.run, f"srahim.{t}", paths, rendering=t) for t in TESTS}
    ap_items = read_grading_csv(APTOS)
    _, te = train_test_split(ap_items, test_size=0.2, random_state=0, stratify=[i.grade for i in ap_items])
    aptos = (features(g, weights, a.run, "aptos_test", [i.path for i in te], preprocessed=True),
             np.array([i.grade for i in te]))
    other = {}
    for name, folder in OTHER.items():
        ps = list_images(folder)
        for r in ("native", "fov400_q70"):
            other[f"{name} {r}"] = features(g, weights, a.run, f"{name}.{r}", ps, rendering=r)
    results = {}
    for cand in a.candidates:
        cfg = {**base, **CANDIDATES[cand]}
        print(f"candidate: {cand}", flush=True)
        results[cand] = run_candidate(cfg, E, V, L, T, items, aptos, other, rule)
    md = table(results)
    command = f"python benchmarks/grading_cameras.py --lesions {a.lesions}" + (f" --weights {a.weights}" if a.weights
                                                                                 else "")
    write_json(a.out, {"command": command,
                       "network": str(weights), "candidates": {c: CANDIDATES[c] for c in a.candidates},
                       "results": results})
    write_text(a.out.with_suffix(".md"), md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
