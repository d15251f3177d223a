"""``detect --grade`` per 1024-px photograph: this checkout against a release, same photographs, same machine.

    python benchmarks/screening_speed.py --release 0726d5c        # the release's git commit or tag
    python benchmarks/screening_speed.py --release 0726d5c --profile
    python benchmarks/screening_speed.py --release 93e91ae --sizes   # 1024 px against 12 megapixels

Makes 20 photographs of 1024 px (long side) from the shared CODRAS set, then runs, one after the
other and each as its own process with the machine's default threads:

1. a warm-up of each on two photographs (page cache, and this checkout's ONNX copies, made on
   first use, so their one-off export is not timed);
2. the release: ``git worktree`` of ``--release`` with its own shipped models, run from its source;
3. this checkout, ``--backend auto`` (onnxruntime on the CPU) and ``--backend torch``.

Seconds per photograph are the steady state: the time between the first and the last photograph's
JSON being written, over n-1 (model loading and start-up are left out); the whole process's wall
time per photograph is given too. It also checks that onnxruntime and PyTorch give this checkout's
models the same grades. ``--profile`` adds a cProfile of this checkout on 5 photographs (top lines
by own time). ``--sizes`` times instead whole ``detect --grade`` processes (start-up included) on 3
photographs of 1024 px and 3 of 4288 x 2848 (IDRiD validation part), for the release and this checkout,
and gives the ratio of the two sizes. Results in ``benchmarks/runs/screening_speed/``.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "fundus" / "codras" / "JPEGImages"
RUN = ROOT / "benchmarks" / "runs" / "screening_speed"


def make_images(folder: Path, n: int = 20, side: int = 1024) -> list[Path]:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for src in sorted(SHARED.glob("*.jpg"))[::7][:n]:
        p = folder / src.name
        if not p.is_file():
            img = cv2.imread(str(src))
            s = side / max(img.shape[:2])
            cv2.imwrite(str(p), cv2.resize(img, (round(img.shape[1] * s), round(img.shape[0] * s)),
                                           interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC),
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
        out.append(p)
    return out


def run(name: str, source: Path, images: list[Path], extra: list[str]) -> dict:
    out = RUN / name
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(source)}
    cmd = [sys.executable, "-m", "lesiondet", "detect", *map(str, images), "--grade", "--out", str(out),
           "--exist-ok", *extra]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=source, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{name} failed:\n{r.stderr[-2000:]}")
    stamps = sorted((out / f"{p.stem}.json").stat().st_mtime for p in images)
    steady = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else wall
    return {"name": name, "seconds_per_photograph": round(steady, 3),
            "wall_per_photograph": round(wall / len(images), 3),
            "wall_s": round(wall, 1), "out": str(out)}


def grades(folder: str, images: list[Path]) -> list[tuple]:
    docs = [json.loads((Path(folder) / f"{p.stem}.json").read_text()) for p in images]
    return [(d["grade"]["grade"], d["grade"]["referable"], (d["grade"].get("model_probabilities") or {})
             .get("p_referable"), d["counts"]) for d in docs]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--release", required=True, help="git commit or tag of the release to time against")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--sizes", action="store_true", help="1024-px against 12-megapixel photographs, whole processes")
    a = ap.parse_args()
    RUN.mkdir(parents=True, exist_ok=True)
    images = make_images(RUN / "images", a.n)
    release = RUN / f"release_{a.release}"
    if not release.is_dir():
        subprocess.run(["git", "worktree", "add", "--detach", str(release), a.release], cwd=ROOT, check=True)
    if a.sizes:
        return sizes(release, images[:3])
    runs = [("release", release, []), ("this_onnx", ROOT, ["--backend", "auto"]),
            ("this_torch", ROOT, ["--backend", "torch"])]
    for name, src, extra in runs:  # warm-up
        run(f"warmup_{name}", src, images[:2], extra)
    result = {"release": a.release, "n": len(images), "cpus": os.cpu_count(),
              "runs": [run(name, src, images, extra) for name, src, extra in runs]}
    base = result["runs"][0]["seconds_per_photograph"]
    for r in result["runs"]:
        r["vs_release"] = round(r["seconds_per_photograph"] / base, 3)
    fast, eager = (grades(r["out"], images) for r in result["runs"][1:])
    result["onnx_vs_torch"] = {
        "same_grade": sum(f[0] == e[0] for f, e in zip(fast, eager)),
        "same_referable": sum(f[1] == e[1] for f, e in zip(fast, eager)),
        "max_p_referable_diff": max(abs((f[2] or 0) - (e[2] or 0)) for f, e in zip(fast, eager)),
        "same_counts": sum(f[3] == e[3] for f, e in zip(fast, eager)), "n": len(images)}
    if a.profile:
        result["profile"] = profile(images[:5])
    (RUN / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "profile"}, indent=1))
    if a.profile:
        print(result["profile"])
    return 0


def sizes(release: Path, small: list[Path]) -> int:
    """Process wall time per photograph of ``detect --grade`` on 3 photographs of 1024 px and 3 of 12 megapixels."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from real_data import make_split

    _, val, _ = make_split("idrid", ROOT / "benchmarks" / "runs" / "idrid" / "split")
    big = sorted((val / "JPEGImages").glob("*.jpg"))[:3]
    result: dict = {}
    for name, src in (("release", release), ("this", ROOT)):
        run(f"warmup_{name}", src, small[:1], [])
        result[name] = {size: run(f"{name}_{size}", src, imgs, [])["wall_per_photograph"]
                        for size, imgs in (("1024px", small), ("12MP", big))}
        result[name]["ratio"] = round(result[name]["12MP"] / result[name]["1024px"], 2)
    (RUN / "sizes.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


def profile(images: list[Path]) -> str:
    """cProfile of this checkout's ``api.detect(..., grade=True)`` on ``images`` (after a warm-up photograph)."""
    sys.path.insert(0, str(ROOT))
    from lesiondet import api

    api.detect(images[:1], out=RUN / "profile_warmup", exist_ok=True, grade=True)
    pr = cProfile.Profile()
    pr.enable()
    api.detect(images, out=RUN / "profile", exist_ok=True, grade=True)
    pr.disable()
    buf = io.StringIO()
    pstats.Stats(pr, stream=buf).sort_stats("tottime").print_stats(18)
    (RUN / "profile.txt").write_text(buf.getvalue())
    return buf.getvalue()


if __name__ == "__main__":
    raise SystemExit(main())
