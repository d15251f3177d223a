"""Detect lesions in a list of image files and write what people look at.

``detect_files`` is what ``lesiondet detect`` runs: per image an annotated PNG,
a JSON, a labelImg XML with ``<score>``, optionally a grade, and optionally one
``report.html`` for the run. Decoding runs ahead on one thread and writing
behind on another, so the model never waits for JPEG or PNG codecs.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from lesiondet.detection.predict import Predictor
from lesiondet.errors import LesiondetError
from lesiondet.fileio import write_json, write_text
from lesiondet.grading.rules import Grade, GradingConfig, grade
from lesiondet.io.voc import VocRecord, write_voc
from lesiondet.progress import progress
from lesiondet.reporting.draw import detections_json, draw, write_png


@dataclass
class DetectRun:
    """What a folder run produced."""

    out: Path
    records: list[VocRecord] = field(default_factory=list)
    grades: list[Grade | None] = field(default_factory=list)
    finals: list[dict | None] = field(default_factory=list)  # the combined grade objects, when an image model ran
    failures: list[LesiondetError] = field(default_factory=list)
    report: Path | None = None


def detect_files(predictor: Predictor, paths: Sequence[str | Path], out: str | Path, *,
                 grading: GradingConfig | None = None, grader=None, report: bool = False,
                 show_progress: bool = True, read_ahead: int = 2) -> DetectRun:
    """Run ``predictor`` over ``paths`` and write results into the existing folder ``out``.

    Args:
        grading: grade each image (ICDR) with these thresholds; None skips grading
            unless ``report`` asks for it (then the defaults are used).
        grader: a ``grading.cnn.GraderCNN``; with ``grading``, each image also gets the imageability check
            and the combined grade (``grading.combined.final_grade``).
        report: also write ``out/report.html``.
        read_ahead: images decoded ahead of the model (0: decode in line).

    A file that cannot be read is recorded in ``failures`` (and ``failures.txt``)
    and the run goes on. Every file is written atomically.
    """
    from lesiondet.grading.anatomy import fov_mask

    out = Path(out)
    paths = [Path(p) for p in paths]
    if report and grading is None:
        grading = GradingConfig()
    writer_report = None
    if report:
        from lesiondet.reporting.html import ReportWriter

        writer_report = ReportWriter(out / "report.html", predictor.classes, "lesiondet detect",
                                     {"weights": predictor.weights, "score threshold": predictor.score,
                                      "images": len(paths)})
    run = DetectRun(out)

    def save(path: Path, img, rec: VocRecord, doc: dict, g: Grade | None) -> None:
        annotated = draw(img, rec)
        write_png(out / f"{path.stem}.png", annotated)
        write_json(out / f"{path.stem}.json", doc)
        write_voc(rec, out / f"{path.stem}.xml")
        if writer_report is not None:
            writer_report.add(path.name, annotated, rec, g, doc["grade"] if grader is not None and g else None)

    items = predictor.predict_paths(paths, depth=read_ahead)
    pending: list = []
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="write") as pool:
            bar = progress(items, total=len(paths), desc="detect", enabled=show_progress and len(paths) > 1)
            for path, img, rec in bar:
                if isinstance(rec, LesiondetError):
                    run.failures.append(rec)
                    if writer_report is not None:
                        writer_report.add_failure(path.name, rec.problem)
                    continue
                doc = detections_json(rec)
                g = final = None
                if grading is not None:
                    g = grade(rec, config=grading, fov_area_px=float(fov_mask(img).sum()))
                    doc["grade"] = g.to_dict()
                    if grader is not None:
                        doc["grade"] = final = grade_photograph(grader, img, g, grading)
                run.records.append(rec)
                run.grades.append(g)
                run.finals.append(final)
                pending.append(pool.submit(save, path, img, rec, doc, g))
                # A bounded queue: at most a few decoded images wait for the writer.
                while len(pending) > 2:
                    pending.pop(0).result()
            for f in pending:
                f.result()
    except BaseException:
        if writer_report is not None:
            writer_report.abort()
        raise
    if writer_report is not None:
        run.report = writer_report.close()
    if run.failures:
        write_text(out / "failures.txt", "".join(f"{e}\n" for e in run.failures))
    return run


def grade_photograph(grader, img, rule: Grade, grading: GradingConfig) -> dict:
    """Imageability, then the grading CNN, then the combined grade object (``grading.combined``)."""
    from lesiondet.grading.combined import final_grade
    from lesiondet.grading.fundus import assess_quality
    from lesiondet.grading.learned import features

    q = assess_quality(img)
    cnn = None
    if q.gradable:
        lesions = features(rule, grading.merged_as_he)[None] if grader.uses_lesions else None
        cnn = grader.predict_images([grader.prepare_array(img)], lesions=lesions)[0]
        cnn.pop("embedding")
    return final_grade(rule, cnn, q)


def count_table(run: DetectRun, classes: Sequence[str]) -> str:
    """One row per image: counts per class, and the grade when graded."""
    rows = [f"{'image':<28}" + "".join(f"{c:>7}" for c in classes)]
    finals = run.finals or [None] * len(run.records)
    for rec, g, final in zip(run.records, run.grades, finals):
        n = Counter(o.label for o in rec.objects)
        row = f"{rec.image_path.name[:27]:<28}" + "".join(f"{n.get(c, 0):>7}" for c in classes)
        if final is not None:
            row += ("  ungradable" if final["grade"] is None else
                    f"  grade {final['grade']} ({final['grade_name']}, {final['grade_source']})"
                    + ("  referable" if final["referable"] else ""))
        elif g is not None:
            row += f"  grade {g.grade} ({g.grade_name})" + ("  DME?" if g.dme_suspect else "")
        rows.append(row)
    return "\n".join(rows)
