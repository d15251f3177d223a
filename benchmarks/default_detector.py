"""Train and score the shipped default detector (lesiondet/weights/detector.pt).

    python benchmarks/default_detector.py --minutes 60            # split, train, evaluate
    python benchmarks/default_detector.py --eval-only              # score an existing run
    python benchmarks/default_detector.py --resume --minutes 120   # continue train/last.pt to 120 min in all
    python benchmarks/default_detector.py --ship [--ship-from X]   # fp16 copy into lesiondet/weights/
    python benchmarks/default_detector.py --run default_detector_retina --start lesiondet/weights/detector.pt \
        --config configs/models/cpu-mixture-retina.yaml --minutes 80   # continue a detector under a new preset

The three shared lesion sets (CODRAS, HEI-MED, IDRiD) are split 80/20 with seed 0, as
``benchmarks/real_data.py`` does (copies of training photographs are left out of val). One
detector trains on the three training parts together, each image teaching only the classes its
set annotates, and is scored on each validation part (AP50 and FROC per class). Everything goes
to ``benchmarks/runs/RUN/`` (``--run``, default ``default_detector``).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETS = ("codras", "heimed", "idrid")
RUN = ROOT / "benchmarks" / "runs" / "default_detector"


def split_yamls(sets: tuple[str, ...] = SETS) -> dict[str, tuple[Path, Path]]:
    """Dataset YAMLs for each set's train and val parts (same classes and aliases as configs/datasets/)."""
    import yaml

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from real_data import make_split

    out = {}
    for name in sets:
        make_split(name, ROOT / "benchmarks" / "runs" / name / "split")
        base = yaml.safe_load((ROOT / "configs" / "datasets" / f"{name}.yaml").read_text())
        pair = []
        for part in ("train", "val"):
            y = RUN / f"{name}_{part}.yaml"
            y.parent.mkdir(parents=True, exist_ok=True)
            folder = ROOT / "benchmarks" / "runs" / name / "split" / part
            y.write_text(yaml.safe_dump({**base, "name": f"{name}_{part}", "path": str(folder)}))
            pair.append(y)
        out[name] = (pair[0], pair[1])
    return out


def lesiondet(*args: str) -> None:
    cmd = [sys.executable, "-m", "lesiondet", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--eval-only", action="store_true")
    ap.add_argument("--resume", action="store_true",
                    help="continue train/last.pt; --minutes is then the whole run's budget (the cosine restarts "
                         "from where the clock stands against the new budget, a warm restart)")
    ap.add_argument("--ship", action="store_true", help="write the fp16 package copy of the run's best.pt")
    ap.add_argument("--ship-from", type=Path, help="ship this checkpoint instead (e.g. the copy with the operating "
                                                  "point that benchmarks/operating_point.py --store writes)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--run", default="default_detector", help="folder under benchmarks/runs/")
    ap.add_argument("--config", default="configs/models/cpu-mixture.yaml", help="training preset")
    ap.add_argument("--start", help="checkpoint a new run starts from (lesiondet train --from)")
    ap.add_argument("--sets", default=",".join(SETS),
                    help="sets whose training parts train the detector (roc: MA only, a partial label set)")
    ap.add_argument("--held-out", default="roc",
                    help="sets left out of training, scored whole: the camera it has never seen (leave-one-camera-out)")
    a = ap.parse_args()
    global RUN
    RUN = ROOT / "benchmarks" / "runs" / a.run
    yamls = split_yamls(tuple(a.sets.split(",")))
    weights = RUN / "train" / "best.pt"
    if a.ship:
        sys.path.insert(0, str(ROOT))
        from lesiondet.detection.predict import checkpoint_tiling
        from lesiondet.engine.checkpoint import load_checkpoint
        from lesiondet.weights import ship_checkpoint

        src = a.ship_from or weights
        # Every inference setting written out, defaults added since training included (merge_pad): what the
        # shipped file does must not change when a default does.
        tiling = checkpoint_tiling(load_checkpoint(src))
        print(ship_checkpoint(src, ROOT / "lesiondet" / "weights" / "detector.pt", {"tiling": tiling}))
        return 0
    if a.resume:
        lesiondet("train", "--resume", str(RUN / "train" / "last.pt"), "--time-limit", str(a.minutes),
                  "--device", a.device)
    elif not a.eval_only:
        args = ["train"]
        for tr, _ in yamls.values():
            args += ["--voc", str(tr)]
        codras_val = ROOT / "benchmarks" / "runs" / "codras" / "split" / "val"
        if a.start:
            args += ["--from", a.start]
        lesiondet(*args, "--val", str(codras_val), "--config", a.config,
                  "--epochs", "1000", "--time-limit", str(a.minutes), "--out", str(RUN / "train"),
                  "--device", a.device)
    results = {}
    for name, (_, val) in yamls.items():
        js = RUN / f"eval_{name}.json"
        folder = ROOT / "benchmarks" / "runs" / name / "split" / "val"
        lesiondet("eval", "--map", "--voc", str(folder), "--labels", f"configs/datasets/{name}.yaml",
                  "--weights", str(weights), "--device", a.device,
                  "--json", str(js), "--out", str(RUN / f"eval_{name}"))
        results[name] = json.loads(js.read_text())
    for name in [n for n in a.held_out.split(",") if n and n not in yamls]:
        js = RUN / f"eval_{name}_all.json"
        lesiondet("eval", "--map", "--voc", str(ROOT.parent / "shared" / "data" / "fundus" / name),
                  "--labels", f"configs/datasets/{name}.yaml", "--weights", str(weights), "--device", a.device,
                  "--json", str(js), "--out", str(RUN / f"eval_{name}_all"))
        results[f"{name}_all"] = json.loads(js.read_text())
    (RUN / "result.json").write_text(json.dumps(results, indent=1))
    print(json.dumps({k: {kk: v.get(kk) for kk in ("map50", "ap50", "froc")} for k, v in results.items()},
                     indent=1, default=str)[:4000])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
