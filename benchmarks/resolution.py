"""The same eyes at fewer pixels: what the detector draws on IDRiD photographs at native, 1/2 and 1/4 size.

    python benchmarks/resolution.py                                  # shipped detector, IDRiD validation part
    python benchmarks/resolution.py --weights W.pt --retina-px 1400  # a checkpoint, another working scale
    python benchmarks/resolution.py --report-only                    # recompute from the saved detections

The IDRiD validation photographs of the developer split (``benchmarks/real_data.py``, 80/20, seed 0)
are resized with ``cv2.INTER_AREA`` (their boxes with them) and detected with no other change. Per
class and size it prints the boxes drawn (at the display threshold, and at the counted one), the
share of them that are right and the share of lesions found (the FROC hit rule of ``lesiondet eval``:
centre inside a same-class box, or IoU >= 0.2), MA FROC, and seconds per photograph. Detections
at score 0.001 are saved, so thresholds can be re-read without rerunning (``--report-only``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RUN = ROOT / "benchmarks" / "runs" / "resolution"
CLASSES = ("MA", "HE", "EX")


def scaled_set(records, factor: float, folder: Path):
    """``records`` with their photographs resized by ``factor`` into ``folder`` (made once)."""
    from lesiondet.detection.scale import scale_record
    from lesiondet.fileio import write_bytes
    from lesiondet.images import read_rgb

    out = []
    for r in records:
        if factor == 1:
            out.append(r)
            continue
        w, h = round(r.width * factor), round(r.height * factor)
        p = folder / f"{r.image_path.stem}.png"
        if not p.exists():
            folder.mkdir(parents=True, exist_ok=True)
            small = cv2.resize(read_rgb(r.image_path), (w, h), interpolation=cv2.INTER_AREA)
            write_bytes(p, cv2.imencode(".png", cv2.cvtColor(small, cv2.COLOR_RGB2BGR))[1].tobytes())
        out.append(replace(scale_record(r, w, h, w / r.width, h / r.height), image_path=p))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", help="checkpoint (default: the shipped detector)")
    ap.add_argument("--retina-px", type=float, help="override the checkpoint's working field-of-view diameter")
    ap.add_argument("--sizes", default="1,0.5,0.25")
    ap.add_argument("--name", default="shipped", help="results go to benchmarks/runs/resolution/NAME/")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--threads", type=int)
    a = ap.parse_args()

    from real_data import make_split

    from lesiondet.detection.metrics import drawn_stats, froc
    from lesiondet.detection.predict import Predictor
    from lesiondet.io.sources import parse_source
    from lesiondet.io.voc import VocObject, VocRecord, read_voc_dir
    from lesiondet.weights import default_detector

    _, val_dir, yaml_path = make_split("idrid", ROOT / "benchmarks" / "runs" / "idrid" / "split")
    records = read_voc_dir(val_dir, parse_source(yaml_path).label_map())
    weights = a.weights or str(default_detector())
    out_dir = RUN / a.name
    out_dir.mkdir(parents=True, exist_ok=True)
    over = {"retina_px": a.retina_px} if a.retina_px else {}
    pred = Predictor(weights, score=0.001, threads=a.threads, backend="torch" if a.report_only else "auto", **over)
    if a.report_only:
        ops = json.loads((out_dir / "thresholds.json").read_text())
    else:  # the thresholds the checkpoint stores: what the rules count, and what is drawn
        ops = {"counted": dict(pred.stored_operating_point.thresholds),
               "display": dict(pred.display_point.thresholds) if pred.display_point else {}}
        (out_dir / "thresholds.json").write_text(json.dumps(ops, indent=1))
    rows = {}
    for f in (float(x) for x in a.sizes.split(",")):
        gt = scaled_set(records, f, RUN / f"images_{f:g}")
        js = out_dir / f"preds_{f:g}.json"
        if a.report_only:
            saved = json.loads(js.read_text())
            preds = [VocRecord(Path(d["image"]), d["w"], d["h"],
                               tuple(VocObject(o[0], tuple(o[1]), False, o[2]) for o in d["objects"]))
                     for d in saved["preds"]]
            secs = saved["seconds_per_photo"]
        else:
            pred.predict(gt[0].image_path)  # warm-up (and the ONNX copy)
            t0 = time.perf_counter()
            preds = [pred.predict(g.image_path) for g in gt]
            secs = (time.perf_counter() - t0) / len(gt)
            js.write_text(json.dumps({"seconds_per_photo": secs, "preds": [
                {"image": str(p.image_path), "w": p.width, "h": p.height,
                 "objects": [[o.label, [round(v, 2) for v in o.box], round(o.score, 4)] for o in p.objects]}
                for p in preds]}))
        preds = [p.__class__(g.image_path, g.width, g.height, p.objects, g.xml_path) for g, p in zip(gt, preds)]
        fr = froc(gt, preds, list(CLASSES))
        row = {"seconds_per_photo": round(secs, 2), "size": f"{gt[0].width}x{gt[0].height}"}
        for c in CLASSES:
            row[c] = {"froc_mean": round(fr[c]["mean"], 3), "froc_8": round(fr[c]["8"], 3)}
            for kind, th in ops.items():
                if c in th:
                    row[c][kind] = {k: (round(v, 3) if isinstance(v, float) else v)
                                    for k, v in drawn_stats(gt, preds, c, th[c]).items()}
        rows[f"{f:g}"] = row
        print(json.dumps({f"{f:g}": row}), flush=True)
    (out_dir / "result.json").write_text(json.dumps(rows, indent=1))
    print(f"{'size':>6} {'class':5} {'FROC@8':>7} {'mean':>6} | " + " | ".join(
        f"{k}: boxes right found" for k in ops if ops[k]))
    for f, row in rows.items():
        for c in CLASSES:
            cells = [f"{row[c][k]['boxes']:5d} {row[c][k]['right']:.2f} {row[c][k]['found']:.2f}"
                     for k in ops if k in row[c]]
            print(f"{f:>6} {c:5} {row[c]['froc_8']:7.3f} {row[c]['froc_mean']:6.3f} | " + " | ".join(cells))
        print(f"{f:>6} {row['size']}: {row['seconds_per_photo']} s per photograph")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
