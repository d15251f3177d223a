"""A self-contained ``report.html`` for a folder of detections.

One file, no network: images are embedded as base64 JPEG, the style and the
small sort script are inline. Per-image sections are streamed to a temporary
file while the run goes on, so a folder of 10,000 images does not sit in
memory; ``ReportWriter.close()`` assembles the page and renames it into place.
"""
from __future__ import annotations

import base64
import html
import os
import tempfile
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from lesiondet.fileio import atomic_path
from lesiondet.images import shrink
from lesiondet.io.voc import VocRecord
from lesiondet.reporting.draw import colour

if TYPE_CHECKING:  # reporting draws what a task returns; it imports no task to run
    from lesiondet.grading.rules import Grade

#: Longest side of the embedded annotated image and of the thumbnails, in pixels.
VIEW_PX = 1400
THUMB_PX = 220
#: Rows of the lesion table per image; busy images list the highest scores first.
MAX_ROWS = 300

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{margin:.2em 0}h2{margin:.2em 0;font-size:1.15em}
.meta{color:#666;font-size:.9em}
table{border-collapse:collapse;font-size:.9em;background:#fff}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:left}
th{background:#eee}
#summary th{cursor:pointer;user-select:none}
#summary th[aria-sort=ascending]::after{content:" \\25B2"}#summary th[aria-sort=descending]::after{content:" \\25BC"}
td.num{text-align:right}
.grade-0{background:#e8f5e9}.grade-1{background:#fffde7}.grade-2{background:#fff3e0}.grade-3,.grade-4{background:#ffebee}
.legend span{display:inline-block;margin-right:1em}.legend i{display:inline-block;width:1em;height:1em;
 vertical-align:middle;margin-right:.3em;border:1px solid #888}
.grid{display:flex;flex-wrap:wrap;gap:8px}
.grid figure{margin:0;width:%(thumb)dpx;text-align:center;font-size:.8em}
.grid img{max-width:100%%;border:1px solid #ccc}
section.image{background:#fff;border:1px solid #ddd;margin:1.2em 0;padding:.8em}
section.image img.view{max-width:100%%;height:auto;display:block;margin:.5em 0}
.flags li{color:#b71c1c}.failed{color:#b71c1c}
.cols{display:flex;gap:1.5em;flex-wrap:wrap}.cols>div{flex:1 1 380px}
"""

# Click a column header to sort by it; numbers sort as numbers. Runs from file:// with no network.
_SCRIPT = """
document.querySelectorAll('#summary th').forEach(function(th, col){
  th.addEventListener('click', function(){
    var table = th.closest('table'), body = table.tBodies[0];
    var asc = th.getAttribute('aria-sort') !== 'ascending';
    table.querySelectorAll('th').forEach(function(h){ h.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function(a, b){
      var x = a.cells[col].dataset.sort || a.cells[col].textContent;
      var y = b.cells[col].dataset.sort || b.cells[col].textContent;
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return asc ? c : -c;
    });
    rows.forEach(function(r){ body.appendChild(r); });
  });
});
"""


def jpeg_data_uri(rgb: np.ndarray, max_side: int, quality: int = 85) -> str:
    """``data:image/jpeg;base64,…`` of ``rgb`` shrunk to ``max_side`` (never enlarged)."""
    rgb, _ = shrink(rgb, max_side)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def flags_for(record: VocRecord, g: Grade | None, final: dict[str, Any] | None = None) -> list[str]:
    """What a reader should look at before trusting the grade."""
    flags = []
    if final is not None and final.get("status") == "unfamiliar":
        flags.append("Unfamiliar: outside what the model has seen; referred for a grader to read.")
    elif final is not None and final["grade"] is None:
        flags.append("Ungradable: " + "; ".join(final["quality"]["reasons"]) + ".")
    elif final is not None and final.get("referable"):
        flags.append(f"Referable: grade {final['grade']} ({final['grade_name']}) or maculopathy suspected.")
    if final is not None and (final.get("rule_grade") or {}).get("disagreement"):
        flags.append(f"Lesions and grade disagree: {final['rule_grade']['disagreement']}.")
    if g is not None:
        if g.dme_suspect:
            flags.append("Possible diabetic macular oedema: hard exudates near the fovea.")
        if g.fovea_source == "image_centre":
            flags.append("No optic disc found: fovea placed at the image centre; quadrants are approximate.")
        if g.grade >= 2 and final is None:
            flags.append(f"Referable: grade {g.grade} ({g.grade_name}).")
    if not record.objects:
        flags.append("Nothing detected above the score threshold.")
    return flags


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def final_grade_html(final: dict[str, Any]) -> str:
    """The combined answer (``grading.combined.final_grade``): grade or "ungradable", where it came from."""
    if final["grade"] is None:
        reasons = "".join(f"<li>{_e(r)}</li>" for r in final["reasons"])
        if final.get("status") == "unfamiliar":
            return (f"<p class='grade unfamiliar'><b>Unfamiliar photograph</b> · <b>referred</b></p>"
                    f"<p class=meta>from: the familiarity check</p><ul class=reasons>{reasons}</ul>")
        return f"<p class='grade'><b>Ungradable</b></p><ul class=reasons>{reasons}</ul>"
    ref = {True: "referable", False: "not referable", None: ""}[final.get("referable")]
    reasons = "".join(f"<li>{_e(r)}</li>" for r in final["reasons"])
    return (f"<p class='grade grade-{final['grade']}'><b>Grade {final['grade']}</b>: {_e(final['grade_name'])}"
            f" · <b>{ref}</b></p><p class=meta>from: {_e(final['grade_source'])}</p><ul class=reasons>{reasons}</ul>")


def image_section(index: int, name: str, view_uri: str, record: VocRecord, g: Grade | None,
                  flags: Sequence[str], final: dict[str, Any] | None = None) -> str:
    """The HTML of one image: annotated picture, grade and reasons, flags, lesion table."""
    objs = sorted(record.objects, key=lambda o: -(o.score or 0))
    rows = "".join(
        f"<tr><td><i style='display:inline-block;width:.8em;height:.8em;background:rgb{colour(o.label)}'></i> "
        f"{_e(o.label)}</td><td class=num>{'' if o.score is None else f'{o.score:.3f}'}</td>"
        f"<td class=num>{o.width:.0f}×{o.height:.0f}</td><td class=num>{o.area:.0f}</td>"
        f"<td class=num>{', '.join(f'{v:.0f}' for v in o.box)}</td>"
        f"<td>{'shown only' if o.counted is False else 'counted'}</td></tr>"
        for o in objs[:MAX_ROWS]) or "<tr><td colspan=6>none</td></tr>"
    more = f"<p class=meta>… and {len(objs) - MAX_ROWS} more (all are in the .json).</p>" if len(objs) > MAX_ROWS else ""
    if g is not None:
        reasons = "".join(f"<li>{_e(r)}</li>" for r in g.reasons)
        limits = "".join(f"<li>{_e(r)}</li>" for r in g.limitations)
        rule = "The lesions' account (rule grade)" if final is not None else "Grade"
        grade_html = ((final_grade_html(final) if final is not None else "")
                      + f"<p class='grade grade-{g.grade}'><b>{rule} {g.grade}</b>: {_e(g.grade_name)}</p>"
                      f"<ul class=reasons>{reasons}</ul><p class=meta>Cannot assess:</p><ul class=meta>{limits}</ul>")
    else:
        grade_html = "<p class=meta>Not graded.</p>"
    flag_html = "".join(f"<li>{_e(f)}</li>" for f in flags)
    return (f"<section class=image id='img-{index}'><h2>{_e(name)}</h2>"
            f"<p class=meta>{record.width}×{record.height} px · {len(objs)} detection(s) shown, "
            f"{sum(o.counted is not False for o in objs)} counted by the grading rules (solid boxes; dashed: "
            f"shown for the reader only)</p>"
            f"<img class=view alt='{_e(name)} with detections' src='{view_uri}'>"
            f"<div class=cols><div>{grade_html}<ul class=flags>{flag_html}</ul></div>"
            f"<div><table class=lesions><thead><tr><th>class</th><th>score</th><th>size (px)</th><th>area</th>"
            f"<th>box x0, y0, x1, y1</th><th>rules</th></tr></thead><tbody>{rows}</tbody></table>{more}</div></div>"
            f"<p><a href='#top'>back to top</a></p></section>\n")


class ReportWriter:
    """Streams a folder run into ``report.html``.

    >>> w = ReportWriter("runs/detect/report.html", ["MA", "HE", "EX"])   # doctest: +SKIP
    >>> w.add("a.jpg", annotated_rgb, record, grade)                      # doctest: +SKIP
    >>> w.close()                                                          # doctest: +SKIP
    """

    def __init__(self, path: str | Path, classes: Sequence[str], title: str = "lesiondet report",
                 meta: dict[str, Any] | None = None, table: str | None = None) -> None:
        self.table = table  # a CSV beside the report listing every image (the worklist), linked from the top
        self.path = Path(path)
        self.classes = list(classes)
        self.title = title
        self.meta = meta or {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".parts", dir=self.path.parent)
        self._parts_path = Path(tmp)
        self._parts = os.fdopen(fd, "w", encoding="utf-8")
        self._summary: list[str] = []
        self._thumbs: list[str] = []
        self._failures: list[tuple[str, str]] = []
        self._grades: Counter = Counter()
        self.n = 0

    def add(self, name: str, annotated: np.ndarray, record: VocRecord, g: Grade | None = None,
            final: dict[str, Any] | None = None) -> None:
        """One image: ``annotated`` is the RGB picture with boxes drawn (``report.draw``); ``final`` the
        combined grade when an image model graded it too."""
        i = self.n
        self.n += 1
        flags = flags_for(record, g, final)
        self._parts.write(image_section(i, name, jpeg_data_uri(annotated, VIEW_PX), record, g, flags, final))
        counts = Counter(o.label for o in record.objects if o.counted is not False)  # what the grade read
        shown = final["grade"] if final is not None else (None if g is None else g.grade)
        shown_name = final["grade_name"] if final is not None else (None if g is None else g.grade_name)
        grade_cell = ("<td class=num data-sort='-1'>–</td><td>" + _e(shown_name or "") + "</td>" if shown is None else
                      f"<td class='num grade grade-{shown}' data-sort='{shown}'>{shown}</td>"
                      f"<td>{_e(shown_name)}</td>")
        if shown is not None:
            self._grades[shown] += 1
        self._summary.append(
            f"<tr><td data-sort='{_e(name)}'><a href='#img-{i}'>{_e(name)}</a></td>{grade_cell}"
            + "".join(f"<td class=num>{counts.get(c, 0)}</td>" for c in self.classes)
            + f"<td class=num data-sort='{len(flags)}'>{_e(' · '.join(f.split(':')[0].rstrip('.') for f in flags))}</td></tr>")
        caption = f"{_e(name)}" + ("" if shown is None else f" · grade {shown}")
        self._thumbs.append(f"<figure><a href='#img-{i}'><img alt='{_e(name)}' "
                            f"src='{jpeg_data_uri(annotated, THUMB_PX, 80)}'></a><figcaption>{caption}"
                            f"</figcaption></figure>")

    def add_failure(self, name: str, error: str) -> None:
        self._failures.append((name, error))

    def close(self) -> Path:
        """Assemble ``report.html`` (atomically) and remove the temporary parts."""
        self._parts.close()
        legend = "".join(f"<span><i style='background:rgb{colour(c)}'></i>{_e(c)}</span>" for c in self.classes)
        meta = "".join(f"<li>{_e(k)}: {_e(v)}</li>" for k, v in self.meta.items())
        grades = ", ".join(f"grade {k}: {v}" for k, v in sorted(self._grades.items())) or "not graded"
        fails = ""
        if self._failures:
            fails = ("<h2 class=failed>Images that could not be read</h2><ul class=failed>"
                     + "".join(f"<li>{_e(n)}: {_e(e)}</li>" for n, e in self._failures) + "</ul>")
        head = (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{_e(self.title)}</title>"
                f"<meta name=viewport content='width=device-width,initial-scale=1'>"
                f"<style>{_STYLE % {'thumb': THUMB_PX}}</style></head><body><a id=top></a>"
                f"<h1>{_e(self.title)}</h1><p class=meta>{self.n} image(s) · {grades} · "
                f"{len(self._failures)} failed · written {datetime.now():%Y-%m-%d %H:%M}</p><ul class=meta>{meta}</ul>"
                + (f"<p class=meta>Every photograph, one row each, to import: <a href='{_e(self.table)}'>"
                   f"{_e(self.table)}</a></p>" if self.table else "") +
                f"<p class=legend>{legend}</p>{fails}<h2>Summary</h2><p class=meta>Click a column to sort.</p>"
                f"<table id=summary><thead><tr><th>image</th><th>grade</th><th>severity</th>"
                + "".join(f"<th>{_e(c)}</th>" for c in self.classes)
                + "<th>flags</th></tr></thead><tbody>" + "".join(self._summary) + "</tbody></table>"
                f"<h2>Images</h2><div class=grid>{''.join(self._thumbs)}</div>")
        try:
            with atomic_path(self.path) as tmp, open(tmp, "w", encoding="utf-8") as out, \
                    open(self._parts_path, encoding="utf-8") as parts:
                out.write(head)
                out.writelines(iter(lambda: parts.read(1 << 20), ""))
                out.write(f"<script>{_SCRIPT}</script></body></html>\n")
        finally:
            self._parts_path.unlink(missing_ok=True)
        return self.path

    def abort(self) -> None:
        """Drop the temporary parts without writing a report (the run failed)."""
        self._parts.close()
        self._parts_path.unlink(missing_ok=True)
