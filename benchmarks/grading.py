"""Grading against ophthalmologists: patient-grouped 5-fold cross-validation on the shared graded photographs.

    python benchmarks/grading.py --detector lesiondet/weights/detector.pt     # everything below
    python benchmarks/grading.py --aptos-minutes 10 --fold-minutes 3 --ship   # and the shipped grader

Rows, all scored on the same out-of-fold photographs (``../shared/data/grading/srahim``, 450
photographs of 225 patients; folds keep a patient's two eyes together):

* **rules**: ``lesiondet detect --grade --grader none`` on the default detector's boxes;
* **ordinal on lesions**: the learned ordinal grader (``grading.learned``) on the same boxes'
  features, fitted on the training folds;
* **CNN**: ``lesiondet grader train --init APTOS`` on the training folds (its own 20% of patients
  held out for early stopping and the cut points), scored on the test fold;
* **CNN + lesions**: the ordinal stacker (``grading.combined``) on the CNN's score and the lesion
  counts, fitted on that held-out 20%, never on the test fold.

Plus the APTOS row: the CNN trained on 80% of ``aptos224`` (stratified, seed 0) and scored on the
other 20%, as seed 002 reports. Columns: QWK, accuracy, referable sensitivity / specificity / AUC
with patient-bootstrap 95% intervals, maculopathy sensitivity / specificity. Everything goes to
``benchmarks/runs/grading/`` (``result.json``, ``table.md``).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SRAHIM = ROOT.parent / "shared" / "data" / "grading" / "srahim" / "labels.csv"
APTOS = ROOT.parent / "shared" / "data" / "grading" / "aptos224" / "labels.csv"
RUN = ROOT / "benchmarks" / "runs" / "grading"
CONFIG: Path | None = None  # --config: a grader config for smoke runs


def write_csv(path: Path, items) -> Path:
    from lesiondet.grading.cnn import write_split_csv

    write_split_csv(path, items)
    return path


def detections(detector: str, images: list[Path]) -> dict[str, dict]:
    """Rule-grade objects of every photograph (``detect --grade --grader none``), cached by file stem."""
    out = RUN / "detect"
    todo = [p for p in images if not (out / f"{Path(p).stem}.json").is_file()]  # a killed run resumes
    if todo:
        images = todo
        cmd = [sys.executable, "-m", "lesiondet", "detect", *map(str, images), "--weights", detector, "--grade",
               "--grader", "none", "--out", str(out), "--exist-ok"]
        print(f"+ lesiondet detect ({len(images)} photographs) --weights {detector} --grade --grader none "
              f"--out {out} --exist-ok", flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return {p.stem: json.loads(p.read_text())["grade"] for p in out.glob("*.json")}


def rule_grade(doc: dict):
    from lesiondet.grading.rules import Grade

    fields = Grade.__dataclass_fields__
    d = {k: v for k, v in doc.items() if k in fields}
    d["fovea"] = tuple(d["fovea"])
    return Grade(**d)


def score_row(name: str, items, pred, called, ref_score, mac_score=None, mac_threshold=0.5) -> dict[str, Any]:
    from lesiondet.grading.metrics import grading_metrics

    m = grading_metrics([i.grade for i in items], pred, referable_true=[i.referable for i in items],
                        referable_called=called, referable_score=ref_score,
                        maculopathy_true=[i.maculopathy for i in items], maculopathy_score=mac_score,
                        maculopathy_threshold=mac_threshold, patients=[i.patient for i in items])
    m["name"] = name
    return m


def aptos_row(minutes: float) -> tuple[dict, Path]:
    from sklearn.model_selection import train_test_split

    from lesiondet import api
    from lesiondet.grading.cnn import read_grading_csv

    items = read_grading_csv(APTOS)
    tr, te = train_test_split(items, test_size=0.2, random_state=0, stratify=[i.grade for i in items])
    run = RUN / "aptos"
    weights = run / "train" / "best.pt"
    if not weights.is_file():
        api.grader_train(write_csv(RUN / "aptos_train.csv", tr), preprocessed=True, time_limit=minutes,
                         config=CONFIG or ROOT / "configs" / "models" / "grader-aptos.yaml",
                         out=run / "train", device="cpu", log=print)
    m = api.grader_evaluate(write_csv(RUN / "aptos_test.csv", te), weights, out=run / "eval", device="cpu")
    m["name"] = "CNN, APTOS only (its own 20% split)"
    return m, weights


def folds(items, k: int = 5, seed: int = 0):
    from sklearn.model_selection import StratifiedGroupKFold

    sgk = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return list(sgk.split(np.zeros(len(items)), [i.grade for i in items], [i.patient for i in items]))


def cnn_outputs(weights: Path, items) -> list[dict]:
    from lesiondet.grading.cnn import GraderCNN

    g = GraderCNN(weights, "cpu")
    out = g.predict([i.path for i in items])
    for o in out:
        o.pop("embedding")
        o["referable_threshold"] = g.referable_threshold
    return out


def cross_validate(dets: dict[str, dict], init: Path, minutes: float, k: int = 5) -> dict[str, list]:
    """Out-of-fold predictions of every grader, in the order of the shared labels."""
    from lesiondet import api
    from lesiondet.grading.cnn import read_grading_csv
    from lesiondet.grading.combined import combiner_features, final_grade, fit_combiner
    from lesiondet.grading.learned import OrdinalGrader, features

    items = read_grading_csv(SRAHIM)
    rules = [rule_grade(dets[i.path.stem]) for i in items]
    oof: dict[str, list] = {n: [None] * len(items) for n in ("rules", "ordinal", "cnn", "combined")}
    for f, (tr, te) in enumerate(folds(items, k)):
        # rules need no fitting; the ordinal grader fits on the training folds' boxes
        X = np.stack([features(g) for g in rules])
        ordinal = OrdinalGrader().fit(X[tr], [items[i].grade for i in tr])
        p_ord = np.zeros((len(te), 5))
        p_ord[:, ordinal.grades_] = ordinal.predict_proba(X[te])
        for j, i in enumerate(te):
            g = rules[i]
            oof["rules"][i] = (g.grade, g.grade >= 2 or g.dme_suspect, g.grade + 0.5 * g.dme_suspect,
                               float(g.dme_suspect))
            pred = int(np.clip(np.rint(p_ord[j] @ np.arange(5)), 0, 4))
            oof["ordinal"][i] = (pred, pred >= 2 or g.dme_suspect, float(p_ord[j, 2:].sum()), float(g.dme_suspect))
        run = RUN / f"fold{f}"
        weights = run / "best.pt"
        if not weights.is_file():
            api.grader_train(write_csv(RUN / f"fold{f}_train.csv", [items[i] for i in tr]), init=init, config=CONFIG,
                             time_limit=minutes, out=run, device="cpu", log=print)
        inner = read_grading_csv(run / "val.csv")
        inner_out = cnn_outputs(weights, inner)
        stack = fit_combiner(np.stack([combiner_features(o, rule_grade(dets[i.path.stem]))
                                       for o, i in zip(inner_out, inner)]), [i.grade for i in inner])
        test_out = cnn_outputs(weights, [items[i] for i in te])
        for o, i in zip(test_out, te):
            oof["cnn"][i] = (o["grade"], o["referable"], o["p_referable"], o["p_maculopathy"])
            d = final_grade(rules[i], o, None, stack)
            oof["combined"][i] = (d["grade"], d["referable"], o["p_referable"], o["p_maculopathy"])
        print(f"fold {f}: done", flush=True)
    return oof


def ship_grader(dets: dict[str, dict], init: Path, minutes: float, combine: bool) -> dict[str, Any]:
    """Train the shipped grader on all shared graded photographs (20% of patients held out for the cut points
    and, with ``combine``, the stacker), and write its fp16 copy to lesiondet/weights/grader.pt."""
    from lesiondet import api
    from lesiondet.engine.checkpoint import load_checkpoint, save_checkpoint
    from lesiondet.grading.cnn import read_grading_csv
    from lesiondet.grading.combined import combiner_features, fit_combiner
    from lesiondet.weights import GRADER, HERE, ship_checkpoint

    run = RUN / "ship"
    best = run / "best.pt"
    if not best.is_file():
        api.grader_train(SRAHIM, init=init, time_limit=minutes, out=run, device="cpu", log=print, config=CONFIG)
    ck = load_checkpoint(best)
    ck.pop("combiner", None)
    if combine:
        inner = read_grading_csv(run / "val.csv")
        outs = cnn_outputs(best, inner)
        stack = fit_combiner(np.stack([combiner_features(o, rule_grade(dets[i.path.stem]))
                                       for o, i in zip(outs, inner)]), [i.grade for i in inner])
        ck["combiner"] = stack.to_dict()
    save_checkpoint(best, ck)
    return ship_checkpoint(best, HERE / GRADER)


def check_shipped() -> dict[str, Any]:
    """``lesiondet detect --grade`` with the shipped models (no --weights) on the shipped grader's validation
    patients (held out from its weights; its cut points and stacker were tuned on them), scored like the rows."""
    from lesiondet.grading.cnn import read_grading_csv

    items = read_grading_csv(RUN / "ship" / "val.csv")
    out = RUN / "shipped_detect"
    cmd = [sys.executable, "-m", "lesiondet", "detect", *[str(i.path) for i in items], "--grade", "--out", str(out),
           "--exist-ok"]
    print(f"+ lesiondet detect ({len(items)} photographs) --grade --out {out} --exist-ok", flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    docs = [json.loads((out / f"{i.path.stem}.json").read_text())["grade"] for i in items]
    pred = [d["grade"] if d["grade"] is not None else 0 for d in docs]
    m = score_row("shipped detect --grade (grader's validation patients)", items, pred,
                  [bool(d["referable"]) for d in docs],
                  [d["model_probabilities"]["p_referable"] if d["model_probabilities"] else 0.0 for d in docs],
                  [d["model_probabilities"]["p_maculopathy"] if d["model_probabilities"] else 0.0 for d in docs])
    m["ungradable"] = sum(d["grade"] is None for d in docs)
    (RUN / "shipped_check.json").write_text(json.dumps({k: v for k, v in m.items()}, indent=1))
    print(table([m]), f"\nungradable: {m['ungradable']}")
    return m


def table(rows: list[dict]) -> str:
    def f(v):
        return "–" if v is None else f"{v:.3f}"

    def ci(m, k):
        c = m["referable"].get("ci95", {}).get(k)
        return f" ({c[0]:.2f}–{c[1]:.2f})" if c else ""

    lines = ["| grader | n | QWK | accuracy | referable sens | referable spec | referable AUC | maculopathy sens "
             "| maculopathy spec |", "|---|---|---|---|---|---|---|---|---|"]
    for m in rows:
        r, mac = m["referable"], m.get("maculopathy", {})
        qci = m.get("qwk_ci95")
        lines.append(f"| {m['name']} | {m['n']} | {f(m['qwk'])}{f' ({qci[0]:.2f}–{qci[1]:.2f})' if qci else ''} "
                     f"| {f(m['accuracy'])} | {f(r['sensitivity'])}{ci(m, 'sensitivity')} "
                     f"| {f(r['specificity'])}{ci(m, 'specificity')} | {f(r.get('auc'))}{ci(m, 'auc')} "
                     f"| {f(mac.get('sensitivity'))} | {f(mac.get('specificity'))} |")
    return "\n".join(lines)


def main() -> int:
    global SRAHIM, APTOS, RUN, CONFIG
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--detector", default=str(ROOT / "lesiondet" / "weights" / "detector.pt"))
    ap.add_argument("--aptos-minutes", type=float, default=10)
    ap.add_argument("--fold-minutes", type=float, default=3)
    ap.add_argument("--ship-minutes", type=float, default=4)
    ap.add_argument("--ship", action="store_true", help="also train the shipped grader on all photographs")
    ap.add_argument("--srahim", type=Path, default=SRAHIM, help="graded CSV for the cross-validation")
    ap.add_argument("--aptos", type=Path, default=APTOS, help="APTOS CSV (preprocessed photographs)")
    ap.add_argument("--run", type=Path, default=RUN, help="output folder")
    ap.add_argument("--config", type=Path, help="grader config YAML for every CNN trained here (smoke runs)")
    ap.add_argument("--check-shipped", action="store_true",
                    help="only run detect --grade with the shipped models on the shipped grader's validation patients")
    a = ap.parse_args()
    SRAHIM, APTOS, RUN, CONFIG = a.srahim, a.aptos, a.run, a.config
    import torch

    torch.manual_seed(0)
    from lesiondet.grading.cnn import read_grading_csv

    RUN.mkdir(parents=True, exist_ok=True)
    if a.check_shipped:
        check_shipped()
        return 0
    dets = detections(a.detector, [i.path for i in read_grading_csv(SRAHIM)])
    aptos, init = aptos_row(a.aptos_minutes)
    oof = cross_validate(dets, init, a.fold_minutes)
    items = read_grading_csv(SRAHIM)
    names = {"rules": "rules on default-detector lesions", "ordinal": "learned ordinal on detector features",
             "cnn": "CNN (APTOS init, fine-tuned per fold)", "combined": "CNN + lesions (stacked)"}
    rows = []
    for key, name in names.items():
        pred, called, score, mac = zip(*oof[key])
        rows.append(score_row(name, items, pred, called, score, mac))
    rows.append(aptos)
    RUN.joinpath("result.json").write_text(json.dumps(
        {"rows": [{k: v for k, v in r.items() if k not in ("per_image",) and not k.endswith("_png")} for r in rows],
         "oof": {k: [list(map(float, t)) for t in v] for k, v in oof.items()}}, indent=1))
    if a.ship:
        combine = rows[3]["qwk"] > rows[2]["qwk"]
        print("shipped grader:", ship_grader(dets, init, a.ship_minutes, combine), "combiner:", combine, flush=True)
    md = table(rows)
    RUN.joinpath("table.md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
