"""How much padding the cross-tile merge needs (``tiling.merge_pad``): one inference, every pad scored.

    python benchmarks/merge_pad.py --detector benchmarks/runs/default_detector/train/best.pt

Each validation part of ``benchmarks/default_detector.py``'s splits (CODRAS, HEI-MED, IDRiD) is run
through sliced inference once, and the detections of every tile and pass are cached *before* the
merge (``benchmarks/runs/merge_pad/raw_<set>.pt``; a killed run resumes). They are then merged at
each pad (model px, divided by the zoom as ``predict.merge_passes`` does; ``sliced_passes`` and
``merge_in_image`` are the two halves of ``sliced_predict``), put through the anatomy
rules as ``lesiondet eval`` does, and scored with the same metrics. The pad row equal to the
checkpoint's own setting reproduces ``lesiondet eval --map`` on that part.

Results: ``benchmarks/runs/merge_pad/result.json`` and ``table.md``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RUN = ROOT / "benchmarks" / "runs" / "merge_pad"
SETS = ("heimed", "codras", "idrid")
PADS = (0.0, 4.0, 6.0, 8.0, 10.0, 12.0)
# other ways to merge, scored on the same cached detections: (row name, tiling overrides)
VARIANTS = (("merge_iou 0.3, no pad", {"merge_pad": 0.0, "merge_iou": 0.3}),
            ("merge_iou 0.2, no pad", {"merge_pad": 0.0, "merge_iou": 0.2}),
            ("pad 8, nested_ios 0 (nested boxes kept)", {"merge_pad": 8.0, "nested_ios": 0.0}),
            ("pad 8, weighted box fusion", {"merge_pad": 8.0, "merge": "wbf"}))
WBF_MAX = 10_000  # candidate boxes per photograph above which the fusion row is left out
# the figures the issue compares against the single-set models: (label, figure)
FIGURES = {"heimed": (("EX", "froc8"), ("EX", "ap50")),
           "codras": (("EX", "ap50"), ("HE_MA", "ap50"), ("HE_MA", "froc8"), ("OD", "ap50")),
           "idrid": (("MA", "froc8"), ("MA", "ap50"), ("HE", "ap50"), ("EX", "ap50"))}


def raw_detections(predictor, gt, cache: Path) -> dict[str, tuple]:
    """Per photograph: every tile's and pass's boxes, scores and labels before the merge, and its size; cached."""
    from lesiondet.detection.predict import read_ahead, sliced_passes
    from lesiondet.fileio import save_torch
    from lesiondet.progress import progress

    if cache.is_file():
        return torch.load(cache)
    raw = {}
    for r, (_, img) in progress(zip(gt, read_ahead(r.image_path for r in gt)), total=len(gt), desc=cache.stem):
        raw[r.stem] = (*sliced_passes(predictor.model, img, predictor.tiling, predictor.device),
                       img.shape[1], img.shape[0])
    save_torch(cache, raw)
    return raw


def score_at(predictor, gt, raw, label_map, overrides: dict) -> dict:
    """``lesiondet eval``'s figures with the merge changed by ``overrides`` (e.g. ``{"merge_pad": 4}``)."""
    from lesiondet.detection.metrics import evaluate_detections
    from lesiondet.detection.predict import detections_from_output, merge_in_image

    tiling = {**predictor.tiling, **overrides}
    preds = []
    for r in gt:
        b, s, lab, w, h = raw[r.stem]
        m = merge_in_image(b, s, lab, tiling, w, h)
        objs, _ = predictor.report(detections_from_output(m, predictor.classes, predictor.network_score))
        preds.append(r.with_objects(objs))
    res = evaluate_detections(gt, preds, predictor.classes, label_map.partial)
    out = {"n_pred": sum(len(p.objects) for p in preds)}
    for label, row in res["per_class"].items():
        out[f"{label} ap50"] = row["AP50"]
    for label, row in res["froc"].items():
        out[f"{label} froc8"] = row["8"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--detector", type=Path, default=ROOT / "benchmarks" / "runs" / "default_detector" / "train" / "best.pt")
    ap.add_argument("--pads", type=float, nargs="+", default=list(PADS), help="pads to score, model px")
    ap.add_argument("--no-variants", action="store_true", help="only the pads (weighted box fusion is slow)")
    a = ap.parse_args()
    from lesiondet.detection.predict import Predictor
    from lesiondet.fileio import write_json, write_text
    from lesiondet.io.labels import load_label_map
    from lesiondet.io.voc import read_voc_dir

    torch.set_grad_enabled(False)
    predictor = Predictor(a.detector, "cpu", 0.001)
    result: dict[str, dict] = {}
    lines = []
    for name in SETS:
        folder = ROOT / "benchmarks" / "runs" / name / "split" / "val"
        label_map = load_label_map(ROOT / "configs" / "datasets" / f"{name}.yaml")
        gt = read_voc_dir(folder, label_map)
        raw = raw_detections(predictor, gt, RUN / f"raw_{name}.pt")
        rows = [(f"pad {p:g}", {"merge_pad": p}) for p in a.pads] + ([] if a.no_variants else list(VARIANTS))
        per_photo = sum(len(v[0]) for v in raw.values()) / max(len(raw), 1)
        if per_photo > WBF_MAX:  # fusion visits boxes one by one in Python: hours on IDRiD's candidates
            print(f"{name}: weighted box fusion not scored ({per_photo:.0f} candidate boxes per photograph)")
            rows = [r for r in rows if r[1].get("merge") != "wbf"]
        result[name] = {row: score_at(predictor, gt, raw, label_map, over) for row, over in rows}
        cols = [f"{lab} {fig}" for lab, fig in FIGURES[name]]
        lines += [f"\n{name} ({len(gt)} validation photographs; zoom {predictor.tiling['zoom']}; "
                  f"the checkpoint's own merge: pad {predictor.tiling['merge_pad']:g}, "
                  f"merge_iou {predictor.tiling['merge_iou']:g}, nested_ios {predictor.tiling['nested_ios']:g})\n",
                  "| merge (pad in model px) | " + " | ".join(c.replace("froc8", "FROC at 8").replace("ap50", "AP50")
                                                            for c in cols) + " | boxes |",
                  "|---" * (len(cols) + 2) + "|"]
        for row, fig in result[name].items():
            lines.append(f"| {row} | " + " | ".join(f"{fig.get(c, float('nan')):.3f}" for c in cols)
                         + f" | {fig['n_pred']} |")
        print("\n".join(lines[-len(rows) - 3:]), flush=True)
    write_json(RUN / "result.json", result)
    write_text(RUN / "table.md", "\n".join(lines).strip() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
