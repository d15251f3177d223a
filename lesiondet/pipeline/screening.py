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
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lesiondet.detection.predict import Predictor
from lesiondet.errors import LesiondetError
from lesiondet.fileio import atomic_path, write_json, write_text
from lesiondet.grading.combined import grade_photograph
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
    kept: bool = True  # False: too many photographs to keep in memory; ``records`` etc. are empty, see summary.csv


#: A run of more photographs than this keeps no records in memory (a national day's worth would not fit):
#: ``summary.csv`` and the per-photograph JSON hold everything.
KEEP_MAX = 10_000


@dataclass(frozen=True)
class Models:
    """What a folder run loads, as plain settings: the serial run loads them once, each Ray worker once more.

    ``grader`` None grades by the lesion rules alone; ``threads`` caps the CPU threads the networks use
    (onnxruntime's intra-op threads, PyTorch's), default all.
    """

    weights: str
    device: str = "auto"
    score: float | None = None
    trust_legacy: bool = False
    backend: str = "auto"
    tiling: tuple[tuple[str, Any], ...] = ()
    grader: str | None = None

    def driver_copy(self) -> Models:
        """The detector alone, on PyTorch on the CPU: what a Ray driver needs (classes, operating point)."""
        return Models(self.weights, "cpu", self.score, self.trust_legacy, "torch", self.tiling)

    def load(self, threads: int | None = None):
        """``(Predictor, GraderCNN or None)``."""
        if threads:
            import torch

            torch.set_num_threads(threads)
        predictor = Predictor(self.weights, self.device, self.score, trust_legacy=self.trust_legacy,
                              backend=self.backend, threads=threads, **dict(self.tiling))
        image_model = None
        if self.grader is not None:
            from lesiondet.grading.cnn import GraderCNN

            image_model = GraderCNN(self.grader, self.device, backend=self.backend, threads=threads)
        return predictor, image_model


def summary_columns(classes: Sequence[str]) -> list[str]:
    """The worklist's columns (documented in the README)."""
    return ["image", "status", "error", "grade", "grade_name", "referable", "p_referable", "grade_source",
            "review", "rule_grade", *[f"n_{c}" for c in classes]]


def summary_row(image: str, classes: Sequence[str], doc: dict | None = None, error: str = "") -> dict[str, Any]:
    """One worklist row: from a photograph's JSON document, or from the error that stopped it."""
    row: dict[str, Any] = {"image": image, "status": "failed" if doc is None else "ok", "error": error}
    if doc is None:
        return row
    g = doc.get("grade") or {}
    if g and g.get("status") == "unfamiliar":
        row["status"] = "unfamiliar"  # outside what the model has seen: referred, with the reasons
        row["error"] = "; ".join(g.get("reasons", [])[:2])
    elif g and g.get("grade") is None:
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
               review="" if "review" not in g else int(bool(g["review"])),
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
        rows = self._complete_rows() if resume and path.is_file() else []
        self._rewrite(rows)
        self.done = {r["image"]: r for r in rows}
        self._fh = open(path, "a", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._fh, self.columns)

    def add(self, row: dict[str, Any]) -> None:
        self._writer.writerow({c: row.get(c, "") for c in self.columns})
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def sort(self, order: Sequence[str]) -> None:
        """Rewrite the closed worklist in ``order`` (the input order), one row per image.

        Rows arrive in the order photographs finish, which on several workers is not the input's.
        """
        rank = {image: k for k, image in enumerate(order)}
        rows = list({r["image"]: r for r in self._complete_rows()}.values())
        self._rewrite(sorted(rows, key=lambda r: rank.get(r["image"], len(rank))))

    def _complete_rows(self) -> list[dict[str, str]]:
        text = self.path.read_text(encoding="utf-8")
        if not text.endswith("\n"):
            text = text[:text.rfind("\n") + 1]  # drop a row the kill cut short
        reader = csv.DictReader(text.splitlines())
        if reader.fieldnames and list(reader.fieldnames) != self.columns:
            raise LesiondetError(self.path, "was written with other columns (another model's classes?)",
                                 "resume with the same --weights, or use a new --out")
        return [r for r in reader if r.get("image")]

    def _rewrite(self, rows: Sequence[dict[str, str]]) -> None:
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, self.columns)
            w.writeheader()
            w.writerows(rows)


def _record_from_doc(doc: dict) -> VocRecord:
    objs = tuple(VocObject(d["label"], tuple(d["box"]), False, d["score"], d.get("counted"), d.get("shown"))
                 for d in doc["detections"])
    return VocRecord(Path(doc["image"]), int(doc["width"]), int(doc["height"]), objs)


@dataclass
class Screened:
    """One photograph through the run: its JSON document and files, or the error that stopped it."""

    path: Path
    doc: dict | None = None                  # what ``<stem>.json`` holds; None when the photograph failed
    error: LesiondetError | None = None
    record: VocRecord | None = None
    grade: Grade | None = None
    final: dict | None = None                # the combined grade object, when an image model ran
    annotated: Any = None                    # the drawn RGB array (for report.html); None when not kept


def check_names(paths: Sequence[Path]) -> None:
    """Outputs are named by the photograph's stem, so two inputs with one stem would overwrite each other."""
    seen: dict[str, Path] = {}
    for p in paths:
        if p.stem in seen and seen[p.stem] != p:
            raise LesiondetError(p, f"has the same name as {seen[p.stem]}, and both would write {p.stem}.json",
                                 "rename one, or run them into separate --out folders")
        seen[p.stem] = p


def screen_paths(predictor: Predictor, paths: Sequence[str | Path], out: Path, *,
                 grading: GradingConfig | None = None, grader=None, read_ahead: int = 2,
                 keep_images: bool = False) -> Iterator[Screened]:
    """Detect, grade and write each photograph's PNG, JSON and labelImg XML (atomically) into ``out``.

    Yields each ``Screened`` in input order once its files are on disk, so a worklist row written
    after it never points at missing files. Decoding runs ahead on one thread and writing behind on
    another. A file that cannot be read yields its error and the run goes on. ``keep_images`` keeps
    the annotated array on each result (for report.html).
    """
    from lesiondet.grading.anatomy import fov_mask

    def save(s: Screened, img) -> Screened:
        annotated = draw(img, s.record)
        write_png(out / f"{s.path.stem}.png", annotated)
        write_json(out / f"{s.path.stem}.json", s.doc)
        write_voc(s.record, out / f"{s.path.stem}.xml")
        s.annotated = annotated if keep_images else None
        return s

    pending: deque = deque()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="write") as pool:
        for path, img, rec, disc in predictor.predict_paths(paths, depth=read_ahead):
            if isinstance(rec, LesiondetError):
                done = Future()
                done.set_result(Screened(path, error=rec))
                pending.append(done)
            else:
                doc = {**detections_json(rec), "operating_point": predictor.operating_point.to_dict(),
                       "display_point": predictor.shown_point.to_dict(), "optic_disc": disc.to_dict()}
                g = final = None
                if grading is not None:
                    g = grade(rec, config=grading, fov_area_px=float(fov_mask(img).sum()))
                    doc["grade"] = g.to_dict()
                    if grader is not None:
                        doc["grade"] = final = grade_photograph(grader, img, g, grading.merged_as_he)
                pending.append(pool.submit(save, Screened(path, doc, None, rec, g, final), img))
            # A bounded queue: at most a few decoded images wait for the writer.
            while len(pending) > 2:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


class Collector:
    """Where finished photographs go: the worklist row, report.html and the run's lists.

    Both engines feed it, the serial one from ``screen_paths`` and the Ray one from its workers'
    documents (``finished``); so the outputs are the same whichever ran.
    """

    def __init__(self, run: DetectRun, worklist: Worklist, classes: Sequence[str], report=None,
                 graded_by_model: bool = False) -> None:
        self.run, self.worklist, self.classes, self.report = run, worklist, list(classes), report
        self.graded_by_model = graded_by_model

    def add(self, s: Screened) -> None:
        """A photograph this run did (its files are written): its row, its report entry, the run's lists."""
        if s.error is not None:
            self.run.failures.append(s.error)
            if self.report is not None:
                self.report.add_failure(s.path.name, s.error.problem)
            self.worklist.add(summary_row(str(s.path), self.classes, error=s.error.problem))
            return
        if self.run.kept:
            self.run.records.append(s.record)
            self.run.grades.append(s.grade)
            self.run.finals.append(s.final)
        if self.report is not None:
            self._report(s)
        self.worklist.add(summary_row(str(s.path), self.classes, s.doc))  # last: the row says the files are there

    def finished(self, path: Path, doc: dict | None, error: LesiondetError | None) -> None:
        """``add`` for a photograph known by its document alone (another process wrote its files)."""
        self.add(self.from_doc(path, doc, error))

    def from_doc(self, path: Path, doc: dict | None, error: LesiondetError | None = None) -> Screened:
        if doc is None:
            return Screened(path, error=error)
        g = Grade.from_dict(doc["grade"]) if "grade" in doc else None
        final = doc["grade"] if self.graded_by_model and g is not None else None
        return Screened(path, doc, None, _record_from_doc(doc), g, final)

    def _report(self, s: Screened) -> None:
        from lesiondet.images import read_rgb

        annotated = s.annotated if s.annotated is not None else read_rgb(self.run.out / f"{s.path.stem}.png")
        self.report.add(s.path.name, annotated, s.record, s.grade, s.final)

    def earlier(self, path: Path, row: dict[str, str]) -> None:
        """A photograph an earlier, killed run did: into this run's report (its row is already kept)."""
        if self.report is None:
            return
        if row["status"] == "failed":
            self.report.add_failure(path.name, row["error"])
        else:
            doc = json.loads((self.run.out / f"{path.stem}.json").read_text(encoding="utf-8"))
            self._report(self.from_doc(path, doc))


@dataclass
class Prepared:
    """A folder run set up in ``out``: what is left to do, and where each finished photograph goes."""

    todo: list[Path]
    collect: Collector
    earlier_failures: list[str]


def prepare(predictor: Predictor, paths: Sequence[Path], out: Path, *, grading: GradingConfig | None,
            graded_by_model: bool, report: bool, resume: bool) -> Prepared:
    """The worklist (kept rows on ``resume``), the report and the photographs still to do."""
    check_names(paths)
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
    run = DetectRun(out, operating_point=predictor.operating_point, summary=worklist.path, skipped=len(done),
                    kept=len(paths) - len(done) <= KEEP_MAX)
    collect = Collector(run, worklist, predictor.classes, writer_report, graded_by_model)
    for p in paths:  # what an earlier, killed run did goes into this run's report too
        if p in done:
            collect.earlier(p, worklist.done[str(p)])
    earlier = [f"{p}: {worklist.done[str(p)]['error']}" for p in paths
               if p in done and worklist.done[str(p)]["status"] == "failed"]
    return Prepared([p for p in paths if p not in done], collect, earlier)


def finish(prep: Prepared, paths: Sequence[Path], ok: bool) -> DetectRun:
    """Close the worklist (in input order), the report and ``failures.txt``; ``ok`` False aborts the report."""
    c = prep.collect
    c.worklist.close()
    if c.report is not None and not ok:
        c.report.abort()
    if not ok:
        return c.run
    c.worklist.sort([str(p) for p in paths])
    if c.report is not None:
        c.run.report = c.report.close()
    if c.run.failures or prep.earlier_failures:
        write_text(c.run.out / "failures.txt", "".join(f"{e}\n" for e in [*prep.earlier_failures, *c.run.failures]))
    return c.run


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
    and the run goes on. Every file is written atomically. ``pipeline.distributed`` runs the same
    on a Ray cluster.
    """
    out = Path(out)
    paths = [Path(p) for p in paths]
    if report and grading is None:
        grading = GradingConfig()
    prep = prepare(predictor, paths, out, grading=grading, graded_by_model=grader is not None, report=report,
                   resume=resume)
    ok = False
    try:
        with progress(total=len(prep.todo), desc="detect", enabled=show_progress and len(prep.todo) > 1) as bar:
            for s in screen_paths(predictor, prep.todo, out, grading=grading, grader=grader, read_ahead=read_ahead,
                                  keep_images=report):
                prep.collect.add(s)
                bar.update()
            bar.refresh()  # the last photographs come in a burst from the writer: show them before the bar goes
        ok = True
    finally:
        finish(prep, paths, ok)
    return prep.collect.run


def operating_point_text(op) -> str:
    """One line for a report header: the thresholds per class and why."""
    per = ", ".join(f"{c} {t:.2f}" for c, t in op.thresholds.items())
    return f"{per}; other classes {op.default:.2f} ({op.purpose})" if per else f"{op.default:.2f} ({op.purpose})"


def count_table(run: DetectRun, classes: Sequence[str]) -> str:
    """One row per image: counts per class, and the grade when graded."""
    rows = [f"{'image':<28}" + "".join(f"{c:>7}" for c in classes)]
    finals = run.finals or [None] * len(run.records)
    for rec, g, final in zip(run.records, run.grades, finals):
        n = Counter(o.label for o in rec.objects if o.counted is not False)
        row = f"{rec.image_path.name[:27]:<28}" + "".join(f"{n.get(c, 0):>7}" for c in classes)
        if final is not None:
            row += ("  unfamiliar: read the photograph (referred)" if final.get("status") == "unfamiliar" else
                    "  ungradable" if final["grade"] is None else
                    f"  grade {final['grade']} ({final['grade_name']}, {final['grade_source']})"
                    + ("  referable" if final["referable"] else ""))
        elif g is not None:
            row += f"  grade {g.grade} ({g.grade_name})" + ("  DME?" if g.dme_suspect else "")
        rows.append(row)
    return "\n".join(rows)
