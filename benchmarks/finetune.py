"""Your camera, your labels: fine-tuning the shipped detector on a camera none of its sets has (ROC).

    python benchmarks/finetune.py                      # shipped as-is; from shipped 5, 10, 20 min; from ImageNet 10 min
    python benchmarks/finetune.py --minutes 5 10       # fewer runs
    python benchmarks/finetune.py --seed 1 --minutes 10  # the second split: shipped as-is, shipped 10, ImageNet 10
    python benchmarks/finetune.py --minutes 10 --imagenet-minutes 0 --tag standard \
        --config configs/models/finetune-standard.yaml   # another fine-tuning schedule, same split
    python benchmarks/finetune.py --report-only        # reprint benchmarks/runs/finetune/result.json

The 50 ROC photographs (one per patient, microaneurysms only) are split by ``split_records``
(``--seed``, 0 by default; seed N > 0 writes to ``benchmarks/runs/finetune_seedN``): 25 to fine-tune on (``lesiondet train`` holds a fifth of them out for its validation and
its operating points) and 25 of other patients to score on. Each run is what a user types:
``lesiondet train --voc ft/ --labels configs/datasets/roc.yaml --from shipped|imagenet --time-limit M``,
then ``lesiondet eval --map`` on the 25 others: MA FROC mean (1/8 to 8 false positives per
photograph), FROC at 8 and AP50. A finished run is not run again. Run it alone on the machine:
the runs are cut by the clock.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RUN = ROOT / "benchmarks" / "runs" / "finetune"
LABELS = ROOT / "configs" / "datasets" / "roc.yaml"
ROC = ROOT.parent / "shared" / "data" / "fundus" / "roc"


def lesiondet(*args: str, log: Path | None = None) -> None:
    cmd = [sys.executable, "-m", "lesiondet", *args]
    print("+", " ".join(cmd), flush=True)
    with open(log, "w") if log else open("/dev/null", "w") as fh:
        subprocess.run(cmd, check=True, cwd=ROOT, stderr=fh if log else None)


def split(seed: int) -> tuple[Path, Path]:
    """Symlinked ``ft/`` (25 photographs) and ``test/`` (25 of other patients) labelImg folders."""
    from lesiondet.detection.data import split_records
    from lesiondet.io.labels import load_label_map
    from lesiondet.io.voc import read_voc_dir

    records = read_voc_dir(ROC, load_label_map(LABELS))
    from benchmarks.real_data import link_folders

    ft, test = split_records(records, 0.5, seed=seed)
    link_folders(RUN, {"ft": ft, "test": test})
    return RUN / "ft", RUN / "test"


def score(weights: Path | None, test: Path, name: str) -> dict:
    out = RUN / f"eval_{name}.json"
    if not out.is_file():
        lesiondet("eval", "--map", "--voc", str(test), "--labels", str(LABELS), "--json", str(out),
                  "--out", str(RUN / f"eval_{name}"), "--device", "cpu", "--weights",
                  str(weights or ROOT / "lesiondet" / "weights" / "detector.pt"))
    m = json.loads(out.read_text())
    froc = m["froc"]["MA"]
    return {"froc_mean": froc["mean"], "froc_8": froc["8"], "ap50": m["per_class"]["MA"]["AP50"], "froc": froc}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, nargs="+", default=[5, 10, 20])
    ap.add_argument("--imagenet-minutes", type=float, default=10)
    ap.add_argument("--seed", type=int, default=0, help="which patient split (0: the first one)")
    ap.add_argument("--config", type=Path, help="a train: schedule for the runs from the shipped detector")
    ap.add_argument("--tag", default="", help="with --config: the runs' name suffix")
    ap.add_argument("--report-only", action="store_true")
    a = ap.parse_args()
    global RUN
    if a.seed:
        RUN = RUN.with_name(f"finetune_seed{a.seed}")
    if a.report_only:
        print((RUN / "result.json").read_text())
        return 0
    from lesiondet.fileio import write_json

    ft, test = split(a.seed)
    rows = {"shipped, as it is": score(None, test, "shipped")}
    short = [m for m in a.minutes if m <= a.imagenet_minutes]  # the long run last: it is the one to cut
    plan = ([("shipped", m) for m in short] + ([("imagenet", a.imagenet_minutes)] if a.imagenet_minutes else [])
            + [("shipped", m) for m in a.minutes if m not in short])
    for start, minutes in plan:
        tagged = start == "shipped" and a.tag
        name = f"{start}_{minutes:g}min" + (f"_{a.tag}" if tagged else "")
        run = RUN / name
        if not (run / "best.pt").is_file():
            lesiondet("train", "--voc", str(ft), "--labels", str(LABELS), "--from", start, "--epochs", "1000",
                      "--time-limit", str(minutes), "--out", str(run), "--device", "cpu",
                      *(["--config", str(a.config)] if tagged and a.config else []), log=RUN / f"{name}.log")
        rows[f"from {start}, {minutes:g} min" + (f", {a.tag}" if tagged else "")] = {**score(run / "best.pt", test, name),
                                                   "log": (RUN / f"{name}.log").read_text().splitlines()[-12:]}
    print(f"{'run':<28} {'MA FROC mean':>12} {'FROC@8':>7} {'AP50':>6}")
    for k, v in rows.items():
        f = (lambda x: f"{x:.3f}" if isinstance(x, (int, float)) else "  -  ")
        print(f"{k:<28} {f(v['froc_mean']):>12} {f(v['froc_8']):>7} {f(v['ap50']):>6}")
    write_json(RUN / (f"result_{a.tag}.json" if a.tag else "result.json"), {"seed": a.seed, "split": {"fine_tune": len(list((ft / 'Annotations').glob('*.xml'))),
                                               "test": len(list((test / 'Annotations').glob('*.xml')))},
                                     "runs": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
