"""Microaneurysms where screening photographs have them: does the drawing show an MA on the eyes
graded mild or worse, and not on the healthy ones?

    python benchmarks/screening_ma.py --zoom 1.3 2.0 2.75 [--detector W] [--run NAME]

A third of the 450 ophthalmologist-graded srahim photographs (1024-px, field of view about 810 px;
patient-grouped: fold 0 of 3, about 150), none of which any detector here trained on, are read at each
``--zoom`` (the most a small field of view is enlarged towards ``tiling.retina_px``), down to a score of
0.05, with the anatomy rules at the detector's operating point. Per zoom and per grade: the share of
eyes with at least one MA drawn (the display threshold) and counted, and the seconds per photograph
(onnxruntime; only meaningful when nothing else ran). Detections are cached per zoom, so a killed run
resumes. Writes ``benchmarks/runs/NAME/result.json``; ``benchmarks/results/screening_ma.json`` with
``--record``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SRAHIM = ROOT.parent / "shared" / "data" / "grading" / "srahim" / "labels.csv"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoom", type=float, nargs="+", default=[1.3])
    ap.add_argument("--detector", type=Path, default=ROOT / "lesiondet" / "weights" / "detector.pt")
    ap.add_argument("--display", type=float, nargs="*", default=[],
                    help="also count MAs drawn at these MA display thresholds (what a per-scale threshold would show)")
    ap.add_argument("--run", default="screening_ma")
    ap.add_argument("--record", action="store_true", help="also write benchmarks/results/screening_ma.json")
    a = ap.parse_args()
    from lesiondet.detection.operating import OperatingPoint, apply_anatomy
    from lesiondet.detection.predict import Predictor
    from lesiondet.engine.checkpoint import load_checkpoint
    from lesiondet.fileio import write_json
    from lesiondet.grading.cnn import read_grading_csv
    from lesiondet.io.splits import group_folds
    from lesiondet.io.voc import VocObject
    from lesiondet.progress import progress

    run = ROOT / "benchmarks" / "runs" / a.run
    run.mkdir(parents=True, exist_ok=True)
    items = read_grading_csv(SRAHIM)
    held = group_folds([i.patient for i in items], [i.grade for i in items], k=3, seed=0)[0][1]
    items = [items[k] for k in held]
    ck = load_checkpoint(a.detector)
    counted = OperatingPoint.from_dict(ck.get("operating_point"))
    shown = OperatingPoint.from_dict(ck.get("display_point")) if ck.get("display_point") else counted
    result = {"detector": str(a.detector), "photographs": len(items),
              "grades": np.bincount([i.grade for i in items], minlength=5).tolist(), "zoom": {}}
    for z in a.zoom:
        cache = run / f"detections_z{z:g}.json"
        done = json.loads(cache.read_text()) if cache.is_file() else {}
        todo = [i for i in items if i.path.stem not in done]
        if todo:
            p = Predictor(a.detector, score=0.05, disc_core=0, backend="auto", zoom=z)
            t0, since = time.perf_counter(), 0
            for n, (path, img, rec, _) in enumerate(progress(p.predict_paths([i.path for i in todo]),
                                                             total=len(todo), desc=f"zoom {z:g}"), 1):
                done[path.stem] = [[o.label, list(o.box), o.score] for o in rec.objects]
                since += 1
                if n % 25 == 0 or n == len(todo):  # checkpoint, with the seconds spent on these photographs
                    s, k = done.get("_time", [0.0, 0])
                    done["_time"] = [s + time.perf_counter() - t0, k + since]
                    t0, since = time.perf_counter(), 0
                    write_json(cache, done)
        s, k = done.get("_time", [0.0, 0])
        row = {"seconds_per_photograph": round(s / max(k, 1), 2)}
        thresholds = {"display": shown.threshold("MA"), "counted": counted.threshold("MA"),
                      **{f"display_{t:g}": t for t in a.display}}
        for name, t in thresholds.items():
            has = {}
            for i in items:
                objs = [VocObject(lab, tuple(b), False, s) for lab, b, s in done[i.path.stem]]
                kept = apply_anatomy(objs, counted)[0]
                has[i.path.stem] = sum(o.label == "MA" and o.score >= t for o in kept)
            g0 = [has[i.path.stem] > 0 for i in items if i.grade == 0]
            g1 = [has[i.path.stem] > 0 for i in items if i.grade >= 1]
            mild = [has[i.path.stem] > 0 for i in items if i.grade == 1]
            row[name] = {"threshold": round(t, 4), "grade0_with_ma": round(float(np.mean(g0)), 3),
                         "mild_or_worse_with_ma": round(float(np.mean(g1)), 3),
                         "mild_with_ma": round(float(np.mean(mild)), 3) if mild else None,
                         "ma_boxes": int(sum(has.values()))}
        result["zoom"][f"{z:g}"] = row
        print(f"zoom {z:g}: {json.dumps(row)}", flush=True)
    write_json(run / "result.json", result)
    if a.record:
        write_json(ROOT / "benchmarks" / "results" / "screening_ma.json",
                   {**result, "command": "python benchmarks/screening_ma.py " + " ".join(sys.argv[1:])})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
