"""``lesiondet detect``: boxes, pictures, JSON, labelImg XML and optionally grades and report.html."""
from __future__ import annotations

import argparse

from lesiondet.cli.common import add_device, add_tiling_args, add_trust_legacy, error, positive_int, say, score, tiling_overrides


def add(sub) -> None:
    d = sub.add_parser("detect", help="detect lesions in images")
    d.add_argument("images", nargs="+",
                   help="image files, folders, or list files (.csv with an 'image' column, or .txt: one path per "
                        "line; relative to the list's folder)")
    d.add_argument("--weights", help="best.pt from 'lesiondet train', or its exported .onnx "
                                      "(default: the shipped detector, docs/models.md)")
    d.add_argument("--score", type=score, default=None,
                   help="one minimum score for every class (default: the model's per-class operating point)")
    d.add_argument("--out", default="runs/detect", help="output folder; numbered if it exists")
    d.add_argument("--exist-ok", action="store_true", help="write into --out even if it exists")
    d.add_argument("--resume", action="store_true",
                   help="continue a killed run in --out: photographs its summary.csv lists are kept, the rest done")
    add_device(d)
    d.add_argument("--backend", choices=("auto", "torch", "onnx"), default="auto",
                   help="what runs the networks: auto (onnxruntime on the CPU when installed, from an ONNX copy "
                        "made once into ~/.cache/lesiondet or $LESIONDET_CACHE; else PyTorch), torch or onnx")
    d.add_argument("--grade", action="store_true",
                   help="grade each photograph (ICDR 0-4, referable): imageability check, image model and lesions")
    d.add_argument("--grader", metavar="W",
                   help="grading-CNN best.pt for --grade (default: the shipped one; 'none': lesion rules only)")
    d.add_argument("--grading", help="grading thresholds YAML (defaults: grading: in lesiondet/config/defaults.yaml)")
    d.add_argument("--report", action="store_true",
                   help="also write a self-contained report.html (images, lesion tables, grades, flags)")
    d.add_argument("--engine", choices=("serial", "ray"), default="serial",
                   help="serial: this process; ray: a pool of Ray workers (pip install -e '.[ray]' in a clone), "
                        "same outputs; docs/cluster.md")
    d.add_argument("--address", help="with --engine ray: an existing cluster ('auto', or ray://HOST:PORT); "
                                     "default: a local instance on this machine's CPUs")
    d.add_argument("--workers", type=positive_int, help="with --engine ray: workers (default: the cluster's CPUs / --threads)")
    d.add_argument("--threads", type=positive_int, help="CPU threads per worker (default: 1 on Ray; all cores when serial)")
    add_tiling_args(d)
    add_trust_legacy(d)
    d.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from lesiondet import api
    from lesiondet.grading.rules import PDR_SENTENCE
    from lesiondet.pipeline.screening import count_table, operating_point_text

    r = api.detect(a.images, a.weights, score=a.score, out=a.out, exist_ok=a.exist_ok, grade=a.grade,
                   grading=a.grading, grader=a.grader, report=a.report, device=a.device,
                   trust_legacy=a.trust_legacy, resume=a.resume, backend=a.backend, engine=a.engine,
                   address=a.address, workers=a.workers, threads=a.threads, **tiling_overrides(a))
    if r.kept:
        print(count_table(r, r.classes))
    else:
        say(f"{r.n_images} photographs: counts and grades are in {r.summary} (not printed)")
    if a.grade:
        for rec, g, final in zip(r.records, r.grades, r.finals):
            if final is None:
                print(f"{rec.image_path.name}: grade {g.grade} – {g.grade_name}")
            elif final["grade"] is None:
                print(f"{rec.image_path.name}: ungradable")
            else:
                print(f"{rec.image_path.name}: grade {final['grade']} – {final['grade_name']} "
                      f"({'referable' if final['referable'] else 'not referable'}; {final['grade_source']})")
            for reason in (final or {}).get("reasons") or g.reasons:
                print(f"  - {reason}")
        if r.records:
            print(f"Note: {PDR_SENTENCE}")
    if r.report:
        say(f"report {r.report}")
    if r.skipped:
        say(f"{r.skipped} photograph(s) were done by the earlier run and kept")
    say(f"results in {r.out} (annotated .png, .json, labelImg .xml with <score>; worklist {r.summary.name}); "
        f"operating point: {operating_point_text(r.operating_point)}")
    for f in r.failures:
        error(f)
    if r.failures:
        say(f"{len(r.failures)} of {r.n_images} image(s) failed; list in {r.out / 'failures.txt'}")
        return 1
    return 0
