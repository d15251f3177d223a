"""The screening run: a folder of photographs through detection, grading and reporting, resumable.

The task packages return data (``detection`` boxes, ``grading`` grades) and ``reporting`` draws;
this module composes them for ``lesiondet detect``. Per photograph: decode once (ahead, on a
thread), detect at the detector's operating point, grade (the ICDR rules; with an image model also
the imageability check and the combined grade), then write what people look at: an annotated PNG,
a JSON, a labelImg XML with ``<score>``, and one row of the worklist ``summary.csv``. Writing runs
behind on another thread, so the model never waits for codecs.

``summary.csv`` gets a row per photograph as it finishes, failed ones included, after the
photograph's files are written (each atomically). ``resume=True`` continues a killed run in the
same folder: a photograph with a row is done (its files exist), anything else is done again, and
every photograph ends with exactly one row.
"""
from __future__ import annotations

import csv
import json
import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lesiondet.detection.predict import Predictor
from lesiondet.errors import LesiondetError
from lesiondet.fileio import atomic_path, write_json, write_text
from lesiondet.grading.rules import Grade, GradingConfig, grade
from lesiondet.io.voc import VocObject, VocRecord, write_voc
from lesiondet.progress import progress
from lesiondet.reporting.draw import detections_json, draw, write_png

SUMMARY = "summary.csv"


@dataclass
class DetectRun:
    """What a folder run produced (this invocation's photographs; ``skipped`` were done by an earlier one)."""

    out: Path
    records: list[VocRecord] = field(default_factory=list)
    grades: list[Grade | None] = field(default_factory=list)
    finals: list[dict | None] = field(default_factory=list)  # the combined grade objects, when an image model ran
    failures: list[LesiondetError] = field(default_factory=list)
    report: Path | None = None
    operating_point: Any = None  # the detection.operating.OperatingPoint the counts come from
    summary: Path | None = None
    skipped: int = 0


def summary_columns(classes: Sequence[str]) -> list[str]:
    """The worklist's columns (documented in the README)."""
    return ["image", "status", "error", "grade", "grade_name", "referable", "p_referable", "grade_source",
            "rule_grade", *[f"n_{c}" for c in classes]]


def summary_row(image: str, classes: Sequence[str], doc: dict | None = None, error: str = "") -> dict[str, Any]:
    """One worklist row: from a photograph's JSON document, or from the error that stopped it."""
    row: dict[str, Any] = {"image": image, "status": "failed" if doc is None else "ok", "error": error}
    if doc is None:
        return row
    g = doc.get("grade") or {}
    if g and g.get("grade") is None:
        row["status"] = "ungradable"
        row["error"] = "; ".join(g.get("quality", {}).get("reasons", []))
    probs = g.get("model_probabilities") or {}
    referable = g.get("referable")
    if "referable" not in g and g:  # the lesion rules alone: ICDR 2 or worse, or possible macular oedema
        referable = g["grade"] >= 2 or bool(g.get("dme_suspect"))
    row.update(grade=g.get("grade", ""), grade_name=g.get("grade_name", ""),
               referable="" if referable is None else int(bool(referable)),
               p_referable="" if "p_referable" not in probs else round(float(probs["p_referable"]), 4),
               grade_source=g.get("grade_source", "rules" if g else ""),
               rule_grade=(g.get("rule_grade") or {}).get("grade", g.get("grade", "")))
    counts = doc.get("counts", {})
    row.update({f"n_{c}": counts.get(c, 0) for c in classes})
    return row


class Worklist:
    """``summary.csv``: one row per photograph, appended (flushed to disk) as each one finishes.

    A killed run can leave half a row at the end; ``resume`` keeps the complete rows (rewritten
    atomically) and ``done`` says which photographs they cover.
    """

    def __init__(self, path: Path, columns: Sequence[str], resume: bool) -> None:
        self.path, self.columns = path, list(columns)
        rows: list[dict[str, str]] = []
        if resume and path.is_file():
            text = path.read_text(encoding="utf-8")
            if not text.endswith("\n"):
                text = text[:text.rfind("\n") + 1]  # drop a row the kill cut short
            reader = csv.DictReader(text.splitlines())
            if reader.fieldnames and list(reader.fieldnames) != self.columns:
                raise LesiondetError(path, "was written with other columns (another model's classes?)",
                                     "resume with the same --weights, or use a new --out")
            rows = [r for r in reader if r.get("image")]
        with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, self.columns)
            w.writeheader()
            w.writerows(rows)
        self.done = {r["image"]: r for r in rows}
        self._fh = open(path, "a", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._fh, self.columns)

    def add(self, row: dict[str, Any]) -> None:
        self._writer.writerow({c: row.get(c, "") for c in self.columns})
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()


def _record_from_doc(doc: dict) -> VocRecord:
    objs = tuple(VocObject(d["label"], tuple(d["box"]), False, d["score"], d.get("counted"), d.get("shown"))
                 for d in doc["detections"])
    return VocRecord(Path(doc["image"]), int(doc["width"]), int(doc["height"]), objs)


def detect_files(predictor: Predictor, paths: Sequence[str | Path], out: str | Path, *,
                 grading: GradingConfig | None = None, grader=None, report: bool = False,
                 show_progress: bool = True, read_ahead: int = 2, resume: bool = False) -> DetectRun:
    """Run ``predictor`` over ``paths`` and write results into the existing folder ``out``.

    Args:
        grading: grade each image (ICDR) with these thresholds; None skips grading
            unless ``report`` asks for it (then the defaults are used).
        grader: a ``grading.cnn.GraderCNN``; with ``grading``, each image also gets the imageability check
            and the combined grade (``grading.combined.final_grade``).
        report: also write ``out/report.html`` (it links to ``summary.csv``).
        read_ahead: images decoded ahead of the model (0: decode in line).
        resume: keep the photographs ``out/summary.csv`` already lists and do only the rest.

    A file that cannot be read is recorded in ``failures``, ``failures.txt`` and the worklist,
    and the run goes on. Every file is written atomically.
    """
    from lesiondet.grading.anatomy import fov_mask
    from lesiondet.images import read_rgb

    out = Path(out)
    paths = [Path(p) for p in paths]
    if report and grading is None:
        grading = GradingConfig()
    worklist = Worklist(out / SUMMARY, summary_columns(predictor.classes), resume)
    done = {p for p in paths if str(p) in worklist.done and (
        worklist.done[str(p)]["status"] == "failed" or (out / f"{p.stem}.json").is_file())}
    writer_report = None
    if report:
        from lesiondet.reporting.html import ReportWriter

        writer_report = ReportWriter(out / "report.html", predictor.classes, "lesiondet detect",
                                     {"weights": predictor.weights,
                                      "operating point": operating_point_text(predictor.operating_point),
                                      "display thresholds": operating_point_text(predictor.shown_point),
                                      "images": len(paths)}, table=SUMMARY)
    run = DetectRun(out, operating_point=predictor.operating_point, summary=worklist.path, skipped=len(done))
    earlier_failures = [f"{p}: {worklist.done[str(p)]['error']}" for p in paths
                        if p in done and worklist.done[str(p)]["status"] == "failed"]
    if writer_report is not None:  # what an earlier, killed run did goes into this run's report too
        for p in paths:
            if p not in done:
                continue
            row = worklist.done[str(p)]
            if row["status"] == "failed":
                writer_report.add_failure(p.name, row["error"])
                continue
            doc = json.loads((out / f"{p.stem}.json").read_text(encoding="utf-8"))
            g = Grade.from_dict(doc["grade"]) if "grade" in doc else None
            final = doc["grade"] if grader is not None and g is not None else None
            writer_report.add(p.name, read_rgb(out / f"{p.stem}.png"), _record_from_doc(doc), g, final)

    def save(path: Path, img, rec: VocRecord, doc: dict, g: Grade | None) -> None:
        annotated = draw(img, rec)
        write_png(out / f"{path.stem}.png", annotated)
        write_json(out / f"{path.stem}.json", doc)
        write_voc(rec, out / f"{path.stem}.xml")
        if writer_report is not None:
            writer_report.add(path.name, annotated, rec, g, doc["grade"] if grader is not None and g else None)
        worklist.add(summary_row(str(path), predictor.classes, doc))  # last: the row says the files are there

    todo = [p for p in paths if p not in done]
    items = predictor.predict_paths(todo, depth=read_ahead)
    pending: list = []
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="write") as pool:
            bar = progress(items, total=len(todo), desc="detect", enabled=show_progress and len(todo) > 1)
            for path, img, rec, disc in bar:
                if isinstance(rec, LesiondetError):
                    run.failures.append(rec)
                    if writer_report is not None:
                        writer_report.add_failure(path.name, rec.problem)
                    pending.append(pool.submit(worklist.add, summary_row(str(path), predictor.classes,
                                                                         error=rec.problem)))
                    continue
                doc = {**detections_json(rec), "operating_point": predictor.operating_point.to_dict(),
                       "display_point": predictor.shown_point.to_dict(), "optic_disc": disc.to_dict()}
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
    finally:
        worklist.close()
    if writer_report is not None:
        run.report = writer_report.close()
    if run.failures or earlier_failures:
        write_text(out / "failures.txt", "".join(f"{e}\n" for e in [*earlier_failures, *run.failures]))
    return run


def operating_point_text(op) -> str:
    """One line for a report header: the thresholds per class and why."""
    per = ", ".join(f"{c} {t:.2f}" for c, t in op.thresholds.items())
    return f"{per}; other classes {op.default:.2f} ({op.purpose})" if per else f"{op.default:.2f} ({op.purpose})"


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
        n = Counter(o.label for o in rec.objects if o.counted is not False)
        row = f"{rec.image_path.name[:27]:<28}" + "".join(f"{n.get(c, 0):>7}" for c in classes)
        if final is not None:
            row += ("  ungradable" if final["grade"] is None else
                    f"  grade {final['grade']} ({final['grade_name']}, {final['grade_source']})"
                    + ("  referable" if final["referable"] else ""))
        elif g is not None:
            row += f"  grade {g.grade} ({g.grade_name})" + ("  DME?" if g.dme_suspect else "")
        rows.append(row)
    return "\n".join(rows)
