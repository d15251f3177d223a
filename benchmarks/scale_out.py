"""Photographs per minute of ``detect --grade``: serial against Ray, same photographs, one run, this machine.

    python benchmarks/scale_out.py                 # 30 photographs of 1024 px; serial, Ray 1x2, Ray 2x1
    python benchmarks/scale_out.py --n 60 --repeat 2

Makes ``--n`` photographs of 1024 px (long side) from the shared CODRAS set (``screening_speed.make_images``)
and lists them in a manifest (``day.txt``), then runs, one after the other and each as its own process with
the shipped models:

1. a warm-up (2 photographs: page cache and the ONNX copies, so their one-off export is not timed);
2. ``lesiondet detect day.txt --grade`` (serial: this process, the machine's default threads);
3. the same with ``--engine ray --workers 1 --threads 2``;
4. the same with ``--engine ray --workers 2 --threads 1``.

Each run starts its own local Ray instance, as a user's first command does. Reported per run:

- wall time of the whole process (start-up, model loading and Ray's start included), against serial;
- photographs per minute once started: from the first to the last photograph's JSON (file times),
  ``(n - 1) / span``, against serial;
- the time Ray adds per photograph once started, and at start-up.

``--repeat`` runs the three again in turn and keeps each run's best. Run it alone on the machine: it is
timed. Results in ``benchmarks/runs/scale_out/result.json``.
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RUN = ROOT / "benchmarks" / "runs" / "scale_out"

RUNS = {
    "serial": [],
    "ray, 1 worker x 2 threads": ["--engine", "ray", "--workers", "1", "--threads", "2"],
    "ray, 2 workers x 1 thread": ["--engine", "ray", "--workers", "2", "--threads", "1"],
}


def detect(listing: Path, out: Path, extra: list[str]) -> dict:
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        import shutil

        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "lesiondet", "detect", str(listing), "--grade", "--out", str(out), *extra]
    t0 = time.time()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    wall = time.time() - t0
    with open(out / "summary.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    times = sorted(p.stat().st_mtime for p in out.glob("*.json"))
    n = len(times)
    span = times[-1] - times[0]
    return {"wall_s": round(wall, 2), "photographs": n, "per_min_started": round(60 * (n - 1) / span, 2),
            "s_per_photograph_started": round(span / (n - 1), 3), "rows": len(rows),
            "grades": [r["grade"] for r in rows]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args()
    from benchmarks.screening_speed import make_images
    from lesiondet.fileio import write_json

    images = make_images(RUN / "images", n=a.n)
    listing = RUN / "day.txt"
    listing.write_text("".join(f"images/{p.name}\n" for p in images))
    (RUN / "warm.txt").write_text("".join(f"images/{p.name}\n" for p in images[:2]))
    detect(RUN / "warm.txt", RUN / "out" / "warm", [])
    best: dict[str, dict] = {}
    for _ in range(a.repeat):
        for name, extra in RUNS.items():
            r = detect(listing, RUN / "out" / "".join(c if c.isalnum() else "_" for c in name), extra)
            print(f"{name:<28} wall {r['wall_s']:6.1f} s   {r['per_min_started']:5.1f} photographs/min once started",
                  flush=True)
            if name not in best or r["wall_s"] < best[name]["wall_s"]:
                best[name] = r
    base = best["serial"]
    for name, r in best.items():
        r["wall_vs_serial"] = round(r["wall_s"] / base["wall_s"], 3)
        r["rate_vs_serial"] = round(r["per_min_started"] / base["per_min_started"], 3)
        r["added_s_per_photograph_started"] = round(r["s_per_photograph_started"] - base["s_per_photograph_started"], 3)
        r["added_s_start_up"] = round((r["wall_s"] - r["s_per_photograph_started"] * (a.n - 1))
                                      - (base["wall_s"] - base["s_per_photograph_started"] * (a.n - 1)), 2)
        r["same_grades_as_serial"] = r["grades"] == base["grades"]
    print(f"\n{'run':<28} {'wall s':>7} {'x serial':>9} {'/min started':>13} {'x serial':>9} "
          f"{'+s/photo':>9} {'+s start':>9}  same grades")
    for name, r in best.items():
        print(f"{name:<28} {r['wall_s']:7.1f} {r['wall_vs_serial']:9.3f} {r['per_min_started']:13.1f} "
              f"{r['rate_vs_serial']:9.3f} {r['added_s_per_photograph_started']:9.3f} {r['added_s_start_up']:9.1f}"
              f"  {r['same_grades_as_serial']}")
    write_json(RUN / "result.json", {"photographs": a.n, "repeat": a.repeat, "runs": best})
    print(json.dumps({k: {x: v[x] for x in ('wall_s', 'per_min_started')} for k, v in best.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
