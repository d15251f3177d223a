"""Soak test: a day's screening (1,000 photographs, 5% of them broken) through ``lesiondet detect --grade``.

    python benchmarks/soak.py                  # make the photographs, run, report
    python benchmarks/soak.py --n 200          # a shorter soak

The photographs are made from the shared lesion sets (CODRAS, HEI-MED, IDRiD): each is a source
photograph cropped (85-100% of each side, at a random place), maybe mirrored, shrunk to 1024 px on its
long side and saved at a random JPEG quality (70-95), so no two files are the same. One in twenty is
broken the ways ``tests/cli/test_hardening.py`` knows: a truncated JPEG, an empty file, a 16-bit PNG,
a text file named ``.jpg``.

The run is one ``lesiondet detect DIR --grade`` process with the shipped models, on this machine as it is
(run it alone). While it runs, the process's resident memory (VmRSS) and the rows of its ``summary.csv``
(one is appended as each photograph finishes) are sampled every second. Reported:

* throughput (photographs per minute) of the first 100 photographs against the last 100;
* peak resident memory against the memory after the first 50 photographs;
* that every broken file is in ``failures.txt`` and in ``summary.csv`` as failed, and every good one
  has a grade (or the ungradable verdict);

in ``benchmarks/runs/soak/soak.json`` and ``soak.png`` (memory and throughput over the run).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "fundus"
RUN = ROOT / "benchmarks" / "runs" / "soak"
BROKEN_KINDS = ("truncated", "empty", "16bit", "not_an_image")


def sources() -> list[Path]:
    out = []
    for name in ("codras", "heimed", "idrid"):
        folder = SHARED / name / "JPEGImages"
        out += sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".tif"))
    if not out:
        raise SystemExit(f"no photographs under {SHARED}")
    return out


def make_photographs(folder: Path, n: int, broken_share: float = 0.05, seed: int = 0, side: int = 1024
                     ) -> tuple[list[Path], list[Path]]:
    """``n`` distinct photographs in ``folder`` (``broken_share`` of them broken); returns (good, broken)."""
    rng = random.Random(seed)
    src = sources()
    folder.mkdir(parents=True, exist_ok=True)
    n_broken = round(n * broken_share)
    broken_at = set(rng.sample(range(n), n_broken))
    good, broken = [], []
    for i in range(n):
        base = folder / f"soak_{i:04d}"
        if i in broken_at:
            kind = BROKEN_KINDS[len(broken) % len(BROKEN_KINDS)]
            broken.append(_broken(base, kind, src[i % len(src)]))
            continue
        img = cv2.imread(str(src[i % len(src)]), cv2.IMREAD_COLOR)
        h, w = img.shape[:2]
        ch, cw = int(h * rng.uniform(0.85, 1.0)), int(w * rng.uniform(0.85, 1.0))
        y0, x0 = rng.randint(0, h - ch), rng.randint(0, w - cw)
        img = img[y0:y0 + ch, x0:x0 + cw]
        if rng.random() < 0.5:
            img = img[:, ::-1]
        s = side / max(img.shape[:2])
        img = cv2.resize(np.ascontiguousarray(img), (round(img.shape[1] * s), round(img.shape[0] * s)),
                         interpolation=cv2.INTER_AREA)
        p = base.with_suffix(".jpg")
        cv2.imwrite(str(p), img, [cv2.IMWRITE_JPEG_QUALITY, rng.randint(70, 95)])
        good.append(p)
    return good, broken


def _broken(base: Path, kind: str, src: Path) -> Path:
    if kind == "truncated":
        p = base.with_suffix(".jpg")
        data = src.read_bytes()
        p.write_bytes(data[:len(data) // 3])
    elif kind == "empty":
        p = base.with_suffix(".jpg")
        p.write_bytes(b"")
    elif kind == "16bit":
        p = base.with_suffix(".png")
        img = cv2.resize(cv2.imread(str(src)), (256, 192)).astype(np.uint16) * 257
        cv2.imwrite(str(p), img)
    else:
        p = base.with_suffix(".jpg")
        p.write_text("this is not a photograph\n")
    return p


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def rows_done(summary: Path) -> int:
    try:
        return max(0, summary.read_text(encoding="utf-8").count("\n") - 1)
    except OSError:
        return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--keep-images", action="store_true", help="reuse the photographs of an earlier soak")
    ap.add_argument("--report-only", action="store_true", help="recompute the figures of the last soak")
    a = ap.parse_args()
    images, out = RUN / "images", RUN / "out"
    import shutil

    manifest = RUN / "manifest.json"
    if (a.keep_images or a.report_only) and manifest.is_file():
        m = json.loads(manifest.read_text())
        good, broken = [Path(p) for p in m["good"]], [Path(p) for p in m["broken"]]
    else:
        shutil.rmtree(images, ignore_errors=True)
        good, broken = make_photographs(images, a.n)
        manifest.write_text(json.dumps({"good": [str(p) for p in good], "broken": [str(p) for p in broken]}))
    cmd = [str(Path(sys.executable).parent / "lesiondet"), "detect", str(images), "--grade", "--out", str(out),
           "--exist-ok"]
    if a.report_only:  # the figures again from an earlier run's samples.csv and outputs
        samples = [tuple(map(float, r.values())) for r in csv.DictReader(open(RUN / "samples.csv"))]
        return finish(cmd, samples, samples[-1][0], None, out, good, broken)
    shutil.rmtree(out, ignore_errors=True)
    print("+", " ".join(cmd), flush=True)
    t0 = time.monotonic()
    samples = []  # (seconds, rows in summary.csv, RSS MB)
    with open(RUN / "detect.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        while proc.poll() is None:
            mb = rss_mb(proc.pid)
            if mb is not None:
                samples.append((time.monotonic() - t0, rows_done(out / "summary.csv"), mb))
            time.sleep(1.0)
    wall = time.monotonic() - t0
    np.savetxt(RUN / "samples.csv", np.array(samples), delimiter=",", header="seconds,rows,rss_mb", comments="")
    return finish(cmd, samples, wall, proc.returncode, out, good, broken)


def finish(cmd, samples, wall, rc, out: Path, good: list[Path], broken: list[Path]) -> int:
    """The soak's figures from the sampled (seconds, rows, RSS) and the run's outputs."""
    rows = list(csv.DictReader(open(out / "summary.csv", encoding="utf-8")))
    by_image = {Path(r["image"]).name: r for r in rows}
    failures = (out / "failures.txt").read_text() if (out / "failures.txt").is_file() else ""
    n = len(good) + len(broken)

    def when(k: int) -> float:  # seconds at which the k-th row was first seen
        return next((t for t, r, _ in samples if r >= k), wall)

    first = 100 / ((when(100) - when(1)) / 60) if n >= 200 else None
    last = 100 / ((when(n) - when(n - 100)) / 60) if n >= 200 else None
    # a broken file takes milliseconds, so a window with more of them looks faster: also count good ones only
    status = [r["status"] for r in rows]  # in the order the run finished them
    good_first = sum(st != "failed" for st in status[1:100])
    good_last = sum(st != "failed" for st in status[n - 100:n])
    g_first = good_first / ((when(100) - when(1)) / 60) if n >= 200 else None
    g_last = good_last / ((when(n) - when(n - 100)) / 60) if n >= 200 else None
    after50 = next((m for _, r, m in samples if r >= 50), None)
    peak = max(m for _, _, m in samples)
    result = {
        "command": " ".join(cmd), "photographs": n, "broken": len(broken), "rc": rc,
        "wall_s": round(wall, 1), "rows": len(rows), "rows_unique": len(by_image),
        "photographs_per_min_overall": round(n / (wall / 60), 2),
        "photographs_per_min_first_100": first and round(first, 2),
        "photographs_per_min_last_100": last and round(last, 2),
        "last_vs_first": first and last and round(last / first, 3),
        "good_per_min_first_100": g_first and round(g_first, 2), "good_per_min_last_100": g_last and round(g_last, 2),
        "good_last_vs_first": g_first and g_last and round(g_last / g_first, 3),
        "rss_mb_after_50": after50 and round(after50, 1), "rss_mb_peak": round(peak, 1),
        "peak_vs_after_50": after50 and round(peak / after50, 3),
        "broken_in_failures_txt": sum(p.name in failures for p in broken),
        "broken_failed_in_summary": sum(by_image.get(p.name, {}).get("status") == "failed" for p in broken),
        "good_graded": sum(by_image.get(p.name, {}).get("status") == "ok" and by_image[p.name]["grade"] != ""
                           for p in good),
        "good_ungradable": sum(by_image.get(p.name, {}).get("status") == "ungradable" for p in good),
        "good_failed": [p.name for p in good if by_image.get(p.name, {}).get("status") not in ("ok", "ungradable")],
        "cpus": os.cpu_count(),
    }
    (RUN / "soak.json").write_text(json.dumps(result, indent=1))
    plot(samples, RUN / "soak.png")
    print(json.dumps(result, indent=1))
    ok = (result["rows_unique"] == n == result["rows"] and result["broken_in_failures_txt"] == len(broken)
          and result["broken_failed_in_summary"] == len(broken) and not result["good_failed"])
    return 0 if ok else 1


def plot(samples, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = np.array(samples)
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    a1.plot(s[:, 0] / 60, s[:, 2])
    a1.set_ylabel("resident memory (MB)")
    # photographs per minute over a sliding two-minute window
    t, r = s[:, 0], s[:, 1]
    rate = [(r[i] - r[np.searchsorted(t, t[i] - 120)]) / 2 if t[i] >= 120 else np.nan for i in range(len(t))]
    a2.plot(t / 60, rate)
    a2.set_ylabel("photographs / min (2-min window)")
    a2.set_xlabel("minutes")
    fig.suptitle(f"soak: {int(r[-1])} photographs")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
