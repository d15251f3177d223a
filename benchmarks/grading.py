"""Grading against ophthalmologists: patient-grouped 5-fold cross-validation on the shared graded photographs.

    python benchmarks/grading.py --aptos-minutes 30 --ship     # every row below, then the shipped grader
    python benchmarks/grading.py --aptos-init W --aptos-minutes 50 --ship   # continue network W's APTOS training
    python benchmarks/grading.py --check other_patients.csv    # shipped detect --grade on other patients
    python benchmarks/grading.py --cnn lesiondet/weights/grader.pt --lesions DIR --ship   # refit on new lesions

Rows, all scored on the same out-of-fold photographs (``../shared/data/grading/srahim``, 450
photographs of 225 patients; folds keep a patient's two eyes together):

* **rules**: ``lesiondet detect --grade --grader none`` on the default detector's boxes;
* **ordinal on lesions**: the learned ordinal grader (``grading.learned``) on the same boxes'
  features, fitted on the training folds;
* **CNN**: the network pre-trained on APTOS (``grader train --preprocessed``), its features read at
  the sizes of ``grader.readout_sizes`` (224 and 512 px by default), and the readout (``grader fit``, ``grading.readout``) fitted on the training
  folds, cut points and threshold tuned on their own out-of-fold predictions;
* **CNN + lesions**: the same readout with the lesion-feature block beside it (late fusion): what
  ``grader fit --lesions`` ships and ``detect --grade`` runs;
* with ``--finetune-minutes M``: the whole network fine-tuned per fold at 224 px from the same
  APTOS network (the previous release's recipe).

Plus the APTOS row: the CNN trained on 80% of ``aptos224`` (stratified, seed 0) and scored on the
other 20%, as seed 002 reports. Columns: QWK, accuracy, referable sensitivity / specificity / AUC
with patient-bootstrap 95% intervals, maculopathy sensitivity / specificity. Everything goes to
``benchmarks/runs/grading/`` (``result.json``, ``table.md``); a killed run resumes from what it cached.
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
LESIONS: Path | None = None  # --lesions: rule-grade JSONs written elsewhere, instead of running detect here


def write_csv(path: Path, items) -> Path:
    from lesiondet.grading.cnn import write_split_csv

    write_split_csv(path, items)
    return path


def detections(detector: str, images: list[Path]) -> dict[str, dict]:
    """Rule-grade objects of every photograph (``detect --grade --grader none``), cached by file stem."""
    if LESIONS is not None:  # --lesions: evidence written elsewhere (benchmarks/operating_point.py)
        return {Path(p).stem: json.loads((LESIONS / f"{Path(p).stem}.json").read_text())["grade"] for p in images}
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


def score_row(name: str, items, pred, called, ref_score, mac_score=None, mac_threshold=0.5) -> dict[str, Any]:
    from lesiondet.grading.metrics import grading_metrics

    m = grading_metrics([i.grade for i in items], pred, referable_true=[i.referable for i in items],
                        referable_called=called, referable_score=ref_score,
                        maculopathy_true=[i.maculopathy for i in items], maculopathy_score=mac_score,
                        maculopathy_threshold=mac_threshold, patients=[i.patient for i in items])
    m["name"] = name
    return m


def aptos_row(minutes: float, init: Path | None = None) -> tuple[dict, Path]:
    from sklearn.model_selection import train_test_split

    from lesiondet import api
    from lesiondet.grading.cnn import read_grading_csv

    items = read_grading_csv(APTOS)
    tr, te = train_test_split(items, test_size=0.2, random_state=0, stratify=[i.grade for i in items])
    run = RUN / "aptos"
    weights = run / "train" / "best.pt"
    if not weights.is_file():
        # --aptos-init continues a trained network on the same split: no head-only stage, half the rate
        recipe = "grader-aptos-continue.yaml" if init else "grader-aptos.yaml"
        api.grader_train(write_csv(RUN / "aptos_train.csv", tr), preprocessed=True, time_limit=minutes, init=init,
                         config=CONFIG or ROOT / "configs" / "models" / recipe,
                         out=run / "train", device="cpu", log=print)
    m = api.grader_evaluate(write_csv(RUN / "aptos_test.csv", te), weights, out=run / "eval", device="cpu")
    m["name"] = "CNN, APTOS only (its own 20% split)"
    return m, weights


def cnn_outputs(weights: Path, items) -> list[dict]:
    from lesiondet.grading.cnn import GraderCNN

    g = GraderCNN(weights, "cpu")
    out = g.predict([i.path for i in items])
    for o in out:
        o.pop("embedding")
    return out


def cnn_copy(weights: Path) -> Path:
    """The fp16 copy of the APTOS network that ships: features for the readout are read from it."""
    from lesiondet.weights import ship_checkpoint

    dst = RUN / "aptos_cnn_fp16.pt"
    if not dst.is_file() or dst.stat().st_mtime < weights.stat().st_mtime:
        ship_checkpoint(weights, dst)
    return dst


def embeddings(cnn: Path, items, sizes: list[int], tta: bool = True) -> np.ndarray:
    """Multi-scale features of every graded photograph, cached (``features.npz``) for the network's digest;
    ``--ship``'s ``grader fit`` reads the same cache."""
    from lesiondet.grading.cnn import GraderCNN, embed_photographs
    from lesiondet.grading.readout import cached_features

    paths = [i.path for i in items]
    return cached_features(features_cache(tta), cnn, paths, sizes, False,
                           lambda: embed_photographs(GraderCNN(cnn, "cpu", backend="auto"), paths, sizes, progress=True,
                                                     tta=tta),
                           tta)


def view_embeddings(cnn: Path, items, sizes: list[int], k: int, seed: int, tta: bool = True) -> np.ndarray | None:
    """``[n, k, d]`` features of each photograph's ``k`` camera-shifted views, in the caches ``grader fit
    --features-cache`` reads (``features.view<c>.npz``), or None when ``k`` is 0."""
    from lesiondet.grading.cnn import GraderCNN, cached_views

    g = GraderCNN(cnn, "cpu", backend="auto") if k else None
    return cached_views(features_cache(tta), cnn, g, [i.path for i in items], sizes, k, seed, tta=tta)


def features_cache(tta: bool) -> Path:
    return RUN / ("features.npz" if tta else "features_no_mirrors.npz")


def cross_validate(dets: dict[str, dict], cnn: Path, cfg: dict, finetune_minutes: float, k: int = 5
                   ) -> dict[str, list]:
    """Out-of-fold predictions of every grader, in the order of the shared labels."""
    from lesiondet import api
    from lesiondet.grading.cnn import read_grading_csv
    from lesiondet.grading.learned import OrdinalGrader, features
    from lesiondet.grading.readout import fit_readout
    from lesiondet.grading.rules import Grade
    from lesiondet.io.splits import group_folds

    items = read_grading_csv(SRAHIM)
    rules = [Grade.from_dict(dets[i.path.stem]) for i in items]
    X = np.stack([features(g) for g in rules])
    sizes = [int(s) for s in cfg["readout_sizes"]]
    tta = bool(cfg["readout_mirrors"])
    E = embeddings(cnn, items, sizes, tta)
    V = view_embeddings(cnn, items, sizes, int(cfg["readout_views"]), int(cfg["seed"]), tta)
    names = ["rules", "ordinal", "cnn", "cnn+lesions"] + (["finetuned"] if finetune_minutes else [])
    oof: dict[str, list] = {n: [None] * len(items) for n in names}
    for f, (tr, te) in enumerate(group_folds([i.patient for i in items], [i.grade for i in items], k, 0)):
        # rules need no fitting; the ordinal grader fits on the training folds' boxes
        ordinal = OrdinalGrader().fit(X[tr], [items[i].grade for i in tr])
        p_ord = np.zeros((len(te), 5))
        p_ord[:, ordinal.grades_] = ordinal.predict_proba(X[te])
        for j, i in enumerate(te):
            g = rules[i]
            oof["rules"][i] = (g.grade, g.grade >= 2 or g.dme_suspect, g.grade + 0.5 * g.dme_suspect,
                               float(g.dme_suspect))
            pred = int(np.clip(np.rint(p_ord[j] @ np.arange(5)), 0, 4))
            oof["ordinal"][i] = (pred, pred >= 2 or g.dme_suspect, float(p_ord[j, 2:].sum()), float(g.dme_suspect))
        # the readout: fitted (and its cut points tuned, out of fold) on the training folds only
        tr_items = [items[i] for i in tr]
        readout, _ = fit_readout(E[tr], X[tr], [i.grade for i in tr_items], [i.referable for i in tr_items],
                                 [i.maculopathy for i in tr_items], [i.patient for i in tr_items], sizes, cfg, tta,
                                 None if V is None else V[tr])
        for name, L in (("cnn", None), ("cnn+lesions", X[te])):
            d = readout.predict(E[te], L)
            for j, i in enumerate(te):
                oof[name][i] = (int(d["grade"][j]), bool(d["referable"][j]), float(d["p_referable"][j]),
                                float(d["p_maculopathy"][j]))
        if finetune_minutes:  # the previous release's recipe: the whole network fine-tuned per fold at 224 px
            run = RUN / f"fold{f}"
            if not (run / "best.pt").is_file():
                api.grader_train(write_csv(RUN / f"fold{f}_train.csv", tr_items), init=cnn, config=CONFIG,
                                 time_limit=finetune_minutes, out=run, device="cpu", log=print)
            for o, i in zip(cnn_outputs(run / "best.pt", [items[i] for i in te]), te):
                oof["finetuned"][i] = (o["grade"], o["referable"], o["p_referable"], o["p_maculopathy"])
        print(f"fold {f}: done", flush=True)
    return oof


def ship_grader(cnn: Path, config: Path | None) -> dict[str, Any]:
    """``lesiondet grader fit`` on all shared graded photographs, with the cached lesion detections, and its
    copy to lesiondet/weights/grader.pt."""
    from lesiondet import api
    from lesiondet.config import load_section
    from lesiondet.weights import GRADER, HERE, ship_checkpoint

    cache = features_cache(bool(load_section("grader", config, "", "")["readout_mirrors"]))
    print(f"+ lesiondet grader fit --data {SRAHIM} --weights {cnn} --lesions {LESIONS or RUN / 'detect'} "
          f"--out {RUN / 'ship'} --features-cache {cache}" + (f" --config {config}" if config else ""), flush=True)
    lesions = LESIONS or RUN / "detect"
    r = api.grader_fit(SRAHIM, cnn, lesions=lesions, config=config, out=RUN / "ship", device="cpu", log=print,
                       features_cache=cache)
    return ship_checkpoint(r["weights"], HERE / GRADER)


def check(csv: Path) -> dict[str, Any]:
    """``lesiondet detect --grade`` with the shipped models (no --weights) on a graded CSV of other patients,
    scored like the rows."""
    from lesiondet.grading.cnn import read_grading_csv

    items = read_grading_csv(csv)
    out = RUN / "shipped_detect"
    cmd = [sys.executable, "-m", "lesiondet", "detect", *[str(i.path) for i in items], "--grade", "--out", str(out),
           "--exist-ok"]
    print(f"+ lesiondet detect ({len(items)} photographs) --grade --out {out} --exist-ok", flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    docs = [json.loads((out / f"{i.path.stem}.json").read_text())["grade"] for i in items]
    pred = [d["grade"] if d["grade"] is not None else 0 for d in docs]
    m = score_row(f"shipped detect --grade on {csv.name}", items, pred, [bool(d["referable"]) for d in docs],
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
    global SRAHIM, APTOS, RUN, CONFIG, LESIONS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--detector", default=str(ROOT / "lesiondet" / "weights" / "detector.pt"))
    ap.add_argument("--aptos-minutes", type=float, default=30)
    ap.add_argument("--aptos-init", type=Path, metavar="W",
                    help="start the APTOS training from this grading network (e.g. a shipped grader.pt) and "
                         "continue it for --aptos-minutes (configs/models/grader-aptos-continue.yaml)")
    ap.add_argument("--finetune-minutes", type=float, default=0,
                    help="also fine-tune the whole network per fold for this long (the previous release's recipe)")
    ap.add_argument("--ship", action="store_true", help="also fit the shipped grader on all photographs")
    ap.add_argument("--srahim", type=Path, default=SRAHIM, help="graded CSV for the cross-validation")
    ap.add_argument("--aptos", type=Path, default=APTOS, help="APTOS CSV (preprocessed photographs)")
    ap.add_argument("--run", type=Path, default=RUN, help="output folder")
    ap.add_argument("--config", type=Path, help="grader config YAML for every CNN and readout here (smoke runs)")
    ap.add_argument("--check", type=Path, metavar="CSV",
                    help="only run detect --grade with the shipped models on this graded CSV (other patients)")
    ap.add_argument("--cnn", type=Path, help="use this trained grading network (e.g. lesiondet/weights/grader.pt) "
                                               "instead of training one on APTOS; the APTOS row is then left out")
    ap.add_argument("--lesions", type=Path, metavar="DIR",
                    help="rule-grade JSONs of the photographs (e.g. benchmarks/runs/operating_point/evidence) "
                         "instead of running --detector here")
    a = ap.parse_args()
    SRAHIM, APTOS, RUN, CONFIG, LESIONS = a.srahim, a.aptos, a.run, a.config, a.lesions
    import torch

    torch.manual_seed(0)
    from lesiondet.config import load_section
    from lesiondet.grading.cnn import read_grading_csv

    RUN.mkdir(parents=True, exist_ok=True)
    if a.check:
        check(a.check)
        return 0
    cfg = load_section("grader", CONFIG, "grader config", "pass a YAML with a grader: section")
    dets = detections(a.detector, [i.path for i in read_grading_csv(SRAHIM)])
    aptos, cnn = (None, a.cnn) if a.cnn else aptos_row(a.aptos_minutes, a.aptos_init)
    cnn = cnn if a.cnn else cnn_copy(cnn)
    oof = cross_validate(dets, cnn, cfg, a.finetune_minutes)
    items = read_grading_csv(SRAHIM)
    names = {"rules": "rules on default-detector lesions", "ordinal": "learned ordinal on detector features",
             "cnn": "CNN (APTOS network, readout on its features)",
             "cnn+lesions": "CNN + lesions (readout on both, late fusion)",
             "finetuned": "CNN fine-tuned end to end per fold (previous recipe)"}
    rows = []
    for key in oof:
        pred, called, score, mac = zip(*oof[key])
        rows.append(score_row(names[key], items, pred, called, score, mac))
    if aptos:
        rows.append(aptos)
    RUN.joinpath("result.json").write_text(json.dumps(
        {"rows": [{k: v for k, v in r.items() if k not in ("per_image",) and not k.endswith("_png")} for r in rows],
         "oof": {k: [list(map(float, t)) for t in v] for k, v in oof.items()}}, indent=1))
    md = table(rows)
    RUN.joinpath("table.md").write_text(md + "\n")
    print(md, flush=True)
    if a.ship:
        print("shipped grader:", ship_grader(cnn, CONFIG), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
