"""Where the imageability limits sit: the sharpness of every shared photograph, at its own size and through the
renderings of ``camera.RENDERINGS``, against the same photographs defocused.

    python benchmarks/quality_limits.py [--every 3]

A defocus of 1% of the field of view's diameter (a Gaussian sigma of 8 px on a 1024-px photograph
whose field of view is 810 px: the larger vessels are still there, everything a grader reads for DR is gone)
is what "too blurred" must catch; every shared photograph at any rendering must pass. Writes ``benchmarks/results/quality_limits.json``: per set and rendering the minimum, 1st
percentile and median sharpness, the least colour, and how many are called ungradable at the shipped limits.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
SETS = {"srahim": DATA / "grading/srahim/images", "codras": DATA / "fundus/codras/JPEGImages",
        "heimed": DATA / "fundus/heimed/JPEGImages", "idrid": DATA / "fundus/idrid/JPEGImages",
        "roc": DATA / "fundus/roc/JPEGImages"}
RENDER = ("native", "fov400_q70", "square400_q75", "squash400_q90", "fov300_q50")


def defocus(img: np.ndarray, share: float = 0.01) -> np.ndarray:
    import cv2

    from lesiondet.images import fov_diameter

    return cv2.GaussianBlur(img, (0, 0), share * fov_diameter(img))


def main() -> int:
    from lesiondet.camera import render
    from lesiondet.fileio import write_json
    from lesiondet.grading.fundus import QualityLimits, assess_quality
    from lesiondet.images import list_images, read_rgb

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--every", type=int, default=3, help="every n-th photograph of each set")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "quality_limits.json")
    a = ap.parse_args()
    lim = QualityLimits()
    rows: dict[str, dict] = {}
    for name, folder in SETS.items():
        paths = list_images(folder)[::a.every]
        sharp: dict[str, list[float]] = {r: [] for r in (*RENDER, "defocused")}
        bad: dict[str, int] = dict.fromkeys(sharp, 0)
        colour: dict[str, list[float]] = {r: [] for r in sharp}
        for p in paths:
            img = read_rgb(p)
            for r in sharp:
                v = defocus(img) if r == "defocused" else render(img, r)
                q = assess_quality(v, lim)
                sharp[r].append(q.measures["sharpness"])
                colour[r].append(q.measures["colour"])
                bad[r] += not q.gradable
        rows[name] = {r: {"n": len(v), "min": round(min(v), 3), "p01": round(float(np.quantile(v, 0.01)), 3),
                          "median": round(float(np.median(v)), 3), "ungradable": bad[r],
                          "min_colour": round(min(colour[r]), 3)} for r, v in sharp.items()}
        print(name, {r: (x["min"], x["median"], x["ungradable"]) for r, x in rows[name].items()}, flush=True)
    write_json(a.out, {"command": "python benchmarks/quality_limits.py --every %d" % a.every,
                       "min_sharpness": lim.min_sharpness, "min_colour": lim.min_colour, "sets": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
