"""Inference speed: the raw torchvision call, lesiondet's pipeline, and sliced inference, side by side.

    python benchmarks/bench_infer.py                        # shared CODRAS images if present, else synthetic
    python benchmarks/bench_infer.py DIR --weights best.pt --n 12 --threads 2

One run, one model, one thread count, the same image files for every row:

1. **raw**: ``model([tensor])`` on tensors decoded beforehand, at the image's native size
   (the transform's min/max size set to the image), one image per call.
2. **pipeline**: ``lesiondet.pipeline.screening.detect_files`` on the same files with slicing off (the same
   model call): decode, preprocessing, detections, annotated PNG, JSON and XML written.
   Target: pipeline <= 1.05 x raw + decode, where decode is the time to decode the files
   one after another. Also run with decoding in line (``read_ahead=0``) to show the overlap,
   and the process CPU time / wall time (about 2.0 when both cores are busy).
3. **sliced**: ``sliced_predict`` on decoded images divided by the same tiles (and the
   whole-image pass) run through the model as plain batches. Target <= 1.3.
4. **onnxruntime**: the per-tile network exported by ``lesiondet export`` and run by onnxruntime
   on the CPU with the same thread count: the same tiles one by one against eager PyTorch one by
   one, and sliced inference end to end (``Predictor`` on the ``.onnx`` against the ``.pt``).

Without ``--weights`` the model is the default architecture with the offline ImageNet backbone
and untrained heads: every tile then returns its maximum of boxes, the worst case for merging.
Writes ``benchmarks/runs/bench_infer/result.json`` and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch

from lesiondet.detection.data import to_tensor
from lesiondet.detection.export import OnnxDetector, export
from lesiondet.detection.predict import Predictor, sliced_predict, tile_windows
from lesiondet.images import IMAGE_SUFFIXES, read_rgb, shrink
from lesiondet.pipeline.screening import detect_files


def default_images() -> Path:
    shared = ROOT.parent / "shared" / "data" / "fundus" / "codras" / "JPEGImages"
    return shared if shared.is_dir() else ROOT / "annotations" / "sample" / "test" / "JPEGImages"


def fresh_checkpoint(path: Path, tile: int) -> Path:
    """The default detector (ImageNet backbone, untrained heads) saved as a lesiondet checkpoint."""
    from lesiondet.detection.model import CHECKPOINT_FORMAT, build_detector, resolve_arch
    from lesiondet.detection.slicing import resolve_tiling
    from lesiondet.io.labels import default_label_map

    lm = default_label_map()
    arch = resolve_arch(None)
    model = build_detector(len(lm.classes) + 1, arch, input_size=tile)
    torch.save({"format": CHECKPOINT_FORMAT, "classes": list(lm.classes), "label_map": lm.to_dict(), "arch": arch,
                "tiling": resolve_tiling({"tile": tile, "zoom": 1}), "model": model.state_dict()}, path)
    return path


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(fn) -> tuple[float, float, object]:
    """(wall seconds, process CPU seconds, result)."""
    c0, t0 = cpu_seconds(), time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, cpu_seconds() - c0, out


@torch.inference_mode()
def raw_calls(network, tensors) -> None:
    """One call per image at its native size (the inference network does not resize)."""
    for x in tensors:
        network([x])


@torch.inference_mode()
def tile_batches(network, batches) -> None:
    for b in batches:
        network(b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("images", nargs="?", type=Path, default=default_images())
    ap.add_argument("--weights", type=Path, help="a lesiondet best.pt (default: fresh default model)")
    ap.add_argument("--n", type=int, default=12, help="images to time (default 12)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    ap.add_argument("--tile", type=int, default=512, help="tile side for the fresh model (default 512)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "runs" / "bench_infer")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    files = sorted(p for p in a.images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[: a.n]
    if not files:
        sys.exit(f"bench_infer: no images in {a.images}")
    tmp = Path(tempfile.mkdtemp(prefix="bench_infer_"))
    weights = a.weights or fresh_checkpoint(tmp / "fresh.pt", a.tile)

    plain = Predictor(weights, "cpu", score=0.3, slice=False)  # the same single call as the raw row
    sliced = Predictor(weights, "cpu", score=0.3)
    network, model, t = plain.network, sliced.model, sliced.tiling
    print(f"{len(files)} images from {a.images} ({read_rgb(files[0]).shape[1]}x{read_rgb(files[0]).shape[0]} "
          f"first), {a.threads} torch threads, tile {t['tile']}, weights {a.weights or 'fresh (untrained heads)'}",
          file=sys.stderr)

    # warm-up: allocator, kernels, file cache
    img0 = read_rgb(files[0])
    raw_calls(network, [to_tensor(img0)])
    sliced_predict(model, img0, t, torch.device("cpu"))

    decode_s, _, imgs = timed(lambda: [read_rgb(p) for p in files])
    tensors = [to_tensor(im) for im in imgs]
    raw_s, raw_cpu, _ = timed(lambda: raw_calls(network, tensors))
    outs = []
    for name, ahead in (("pipeline", 2), ("pipeline_inline", 0)):
        out = tmp / name
        out.mkdir()
        wall, cpu, run = timed(lambda: detect_files(plain, files, out, read_ahead=ahead, show_progress=False))
        assert not run.failures and len(list(out.glob("*.json"))) == len(files)
        outs.append((wall, cpu))
        n_det = sum(len(r.objects) for r in run.records)
    (pipe_s, pipe_cpu), (inline_s, inline_cpu) = outs

    sliced_s, _, _ = timed(lambda: [sliced_predict(model, im, t, torch.device("cpu")) for im in imgs])
    batches, n_tiles = [], 0
    for im in imgs:
        full = to_tensor(im)
        tiles = [full[:, y0:y1, x0:x1] for x0, y0, x1, y1 in tile_windows(im, t)]
        n_tiles += len(tiles)
        batches += [tiles[i:i + int(t["batch"])] for i in range(0, len(tiles), int(t["batch"]))]
        batches.append([to_tensor(shrink(im, t["tile"])[0])])  # the whole-image pass
    tiles_s, _, _ = timed(lambda: tile_batches(network, batches))

    # 4. onnxruntime against eager PyTorch: the same tiles one at a time (the exported graph takes one
    # image), then sliced inference end to end through the same Predictor code
    onnx_path = export(weights, "onnx", tmp / "net.onnx")
    ort_net = OnnxDetector(onnx_path, score=0.3, threads=a.threads)
    singles = [[x] for b in batches for x in b]
    ort_net(singles[0]), network(singles[0])  # warm-up
    eager1_s, _, _ = timed(lambda: tile_batches(network, singles))
    ort1_s, _, _ = timed(lambda: tile_batches(ort_net, singles))
    onnx_pred = Predictor(onnx_path, score=0.3, threads=a.threads)  # the same thread count as torch
    ort_sliced_s, _, _ = timed(lambda: [onnx_pred.predict_array(im) for im in imgs])
    pt_sliced_s, _, _ = timed(lambda: [sliced.predict_array(im) for im in imgs])

    res = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "images": len(files), "folder": str(a.images), "threads": a.threads,
        "weights": str(a.weights) if a.weights else "fresh default model (untrained heads)",
        "decode_s": decode_s, "raw_s": raw_s, "raw_cpu_per_wall": raw_cpu / raw_s,
        "pipeline_s": pipe_s, "pipeline_cpu_per_wall": pipe_cpu / pipe_s,
        "pipeline_inline_s": inline_s, "pipeline_inline_cpu_per_wall": inline_cpu / inline_s,
        "pipeline_over_raw_plus_decode": pipe_s / (raw_s + decode_s),
        "pipeline_target": 1.05 * raw_s + decode_s, "pipeline_met": pipe_s <= 1.05 * raw_s + decode_s,
        "sliced_s": sliced_s, "tiles_s": tiles_s, "tiles": n_tiles, "sliced_over_tiles": sliced_s / tiles_s,
        "sliced_met": sliced_s <= 1.3 * tiles_s, "detections_written": n_det,
        "eager_tiles_one_by_one_s": eager1_s, "onnxruntime_tiles_one_by_one_s": ort1_s,
        "onnxruntime_over_eager_tiles": ort1_s / eager1_s,
        "eager_sliced_predict_s": pt_sliced_s, "onnxruntime_sliced_predict_s": ort_sliced_s,
        "onnxruntime_over_eager_sliced": ort_sliced_s / pt_sliced_s,
    }
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "result.json").write_text(json.dumps(res, indent=2) + "\n")
    n = len(files)
    print(f"| what | total s | per image s | ratio | target |\n|---|---|---|---|---|\n"
          f"| decode only (serial) | {decode_s:.2f} | {decode_s / n:.3f} | | |\n"
          f"| 1. raw `model([tensor])` | {raw_s:.2f} | {raw_s / n:.3f} | 1.00 | |\n"
          f"| 2. pipeline (`detect_files`, read-ahead) | {pipe_s:.2f} | {pipe_s / n:.3f} | "
          f"{pipe_s / raw_s:.3f} x raw | <= 1.05 x raw + decode = {res['pipeline_target']:.2f} s: "
          f"{'met' if res['pipeline_met'] else 'MISSED'} |\n"
          f"| 2b. pipeline, decode in line | {inline_s:.2f} | {inline_s / n:.3f} | {inline_s / raw_s:.3f} x raw | |\n"
          f"| 3. sliced inference | {sliced_s:.2f} | {sliced_s / n:.3f} | {res['sliced_over_tiles']:.3f} x tiles | "
          f"<= 1.3: {'met' if res['sliced_met'] else 'MISSED'} |\n"
          f"| 3b. its {n_tiles} tiles + {n} whole-image passes as plain batches | {tiles_s:.2f} | {tiles_s / n:.3f} "
          f"| 1.00 | |\n"
          f"| 4a. the same {len(singles)} inputs one by one, eager PyTorch | {eager1_s:.2f} | {eager1_s / n:.3f} | 1.00 | |\n"
          f"| 4b. the same, onnxruntime (CPU, {a.threads} threads) | {ort1_s:.2f} | {ort1_s / n:.3f} | "
          f"{ort1_s / eager1_s:.3f} x eager | |\n"
          f"| 4c. sliced `Predictor` on best.pt | {pt_sliced_s:.2f} | {pt_sliced_s / n:.3f} | 1.00 | |\n"
          f"| 4d. sliced `Predictor` on the exported .onnx | {ort_sliced_s:.2f} | {ort_sliced_s / n:.3f} | "
          f"{ort_sliced_s / pt_sliced_s:.3f} x eager | |\n\n"
          f"Detections written (score >= 0.3): {n_det} ({n_det / n:.0f} per image). "
          f"CPU time / wall time: raw {res['raw_cpu_per_wall']:.2f}, pipeline {res['pipeline_cpu_per_wall']:.2f}, "
          f"in line {res['pipeline_inline_cpu_per_wall']:.2f} (of {os.cpu_count()} cores)")
    print(f"wrote {a.out / 'result.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
