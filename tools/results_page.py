"""Render docs/results.md and the README's models table from benchmarks/results/*.json.

    python tools/results_page.py            # rewrite both
    python tools/results_page.py --check    # exit 1 when either is stale (tests/test_readme.py runs it)

Each figure lives in one result file, written by the benchmark named in it; the pages quote from
there and nowhere else.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
PAGE = ROOT / "docs" / "results.md"
BEGIN, END = "<!-- models-table: tools/results_page.py -->", "<!-- /models-table -->"
GRADER_ROWS = ("results", "shipped: 3 camera views, ridge 3600, C 0.001", "rows")


def load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def fig(name: str, key: str) -> float:
    """One figure of a result file (``figures.KEY.value``, or a dotted path into the grading table)."""
    doc = load(name)
    if name == "grading_cameras.json":
        node = doc
        for k in (*GRADER_ROWS, *key.split("|")):
            node = node[k]
        return node
    return doc["figures"][key]["value"]


def f3(v: float) -> str:
    return f"{v:.3f}"


def models_table() -> str:
    """The README's table of shipped models, every figure from a result file."""
    mb = lambda f: f"{(ROOT / 'lesiondet' / 'weights' / f).stat().st_size / 1e6:.1f} MB"  # noqa: E731
    own = lambda k: fig("grading_cameras.json", f"own camera, CNN + lesions|{k}")  # noqa: E731
    small = lambda k: fig("grading_cameras.json", f"fov400_q70|{k}")  # noqa: E731
    rows = [
        ("`detector.pt`: MA, HE, EX, SE and OD boxes",
         f"CODRAS EX AP50 {f3(fig('detector.json', 'codras_EX_AP50'))}, HE+MA AP50 "
         f"{f3(fig('detector.json', 'codras_HE_MA_AP50'))}; IDRiD MA FROC at 8 "
         f"{f3(fig('detector.json', 'idrid_MA_FROC8'))}; ROC (a camera it never saw) MA FROC mean "
         f"{f3(fig('detector.json', 'roc_MA_FROC_mean'))}",
         f"{fig('speed.json', 'process_1024_s'):.2f} s per 1024-px photograph, "
         f"{fig('speed.json', 'process_12mp_s'):.2f} s per 12 MP (with the grade)", mb("detector.pt"),
         "`python benchmarks/default_detector.py --eval-only`"),
        ("`grader.pt`: ICDR grade 0-4, referable",
         f"QWK {f3(own('qwk'))}, referable sensitivity {f3(own('sensitivity'))} at specificity "
         f"{f3(own('specificity'))}, AUC {f3(own('auc'))} (450 photographs, patient-grouped CV); at a 400-px "
         f"field of view through JPEG 70: QWK {f3(small('qwk'))}",
         "included above", mb("grader.pt"), "`python benchmarks/grading_cameras.py`"),
        ("`oct.pt`: CNV / DME / DRUSEN / NORMAL",
         f"accuracy {f3(fig('oct_classifier.json', 'kermany_accuracy'))} on 318 Kermany scans, "
         f"{f3(fig('oct_classifier.json', 'four_class_accuracy'))} on the 46 four-class ones (patient-grouped CV)",
         f"{fig('oct_classifier.json', 'seconds_per_scan'):.2f} s per scan in a folder run", mb("oct.pt"),
         "`python benchmarks/oct_classifier.py`"),
        ("`fluid.pt`: DME fluid outline",
         f"Dice {f3(fig('oct_fluid.json', 'pooled_dice'))} pooled, worst subject "
         f"{fig('oct_fluid.json', 'worst_subject_dice'):.2f} (8 subjects, subject-grouped CV)",
         f"{fig('oct_fluid.json', 'seconds_per_scan'):.1f} s per 768x496 scan", mb("fluid.pt"),
         "`python benchmarks/oct_fluid.py cv`"),
    ]
    out = ["| model | on data it was not tuned on | time on 2 cores | size | measured by |", "|---|---|---|---|---|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def page() -> str:
    """docs/results.md: every result file's figures, with the command, machine and date that produced them."""
    lines = ["# Results", "",
             "Rendered by `python tools/results_page.py` from `benchmarks/results/*.json`: each figure has one",
             "value, in one file, written by the command beside it. Other pages quote from here.", ""]
    for path in sorted(RESULTS.glob("*.json")):
        doc = json.loads(path.read_text())
        if "figures" not in doc:
            continue
        lines += [f"## {doc['title']}", "", f"`benchmarks/results/{path.name}`, {doc['date']}, {doc['machine']}.", "",
                  "```bash", doc["command"], "```", "", "| figure | value |", "|---|---|"]
        for f in doc["figures"].values():
            v = f["value"]
            lines.append(f"| {f['what']} | {'-' if v is None else v} |")
        lines.append("")
    disp = load("detector_display.json")
    lines += ["## The shipped detector's drawing (display thresholds)", "",
              "`benchmarks/results/detector_display.json`, 2026-12-07, the 2-core development machine.", "",
              "```bash", disp["command"], "```", "",
              "| class | per validation set: lowest score drawing half the boxes right | drawn from |", "|---|---|---|"]
    th, small = disp["thresholds"]["thresholds"], disp["thresholds"].get("small", {})
    for c, per in disp["per_set_thresholds"].items():
        sets = ", ".join(f"{n} {'never' if t >= 1 else f'{t:.3f}'}" for n, t in per.items())
        drawn = f"{th[c]:.3f}" + (f"; on photographs read below the working scale {'only what is counted' if small[c] >= 1 else small[c]}"
                                  if c in small else "")
        lines.append(f"| {c} | {sets} | {drawn} |")
    lines += ["", "| set | class | boxes drawn | share right | lesions found |", "|---|---|---|---|---|"]
    for name, per in disp["sets"].items():
        for c, kinds in per.items():
            d = kinds["display"]
            if d["lesions"] >= 20 and d["boxes"]:
                lines.append(f"| {name} | {c} | {d['boxes']} | {d['right']:.2f} | {d['found']:.2f} |")
    lines.append("")
    lines += ["## Grading on any camera", "",
              "`benchmarks/results/grading_cameras.json` and its table `benchmarks/results/grading_cameras.md`, written by",
              "`python benchmarks/grading_cameras.py` (command in the file); [grading.md](grading.md) explains the rows.", ""]
    return "\n".join(lines)


def readme_with_table(text: str) -> str:
    block = f"{BEGIN}\n{models_table()}\n{END}"
    if BEGIN not in text:
        raise SystemExit(f"README.md has no {BEGIN} ... {END} block")
    return re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda m: block, text, flags=re.S)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args()
    readme, want_readme, want_page = README.read_text(), None, page()
    want_readme = readme_with_table(readme)
    if a.check:
        stale = [n for n, ok in (("README.md's models table", want_readme == readme),
                                 ("docs/results.md", PAGE.is_file() and PAGE.read_text() == want_page)) if not ok]
        if stale:
            print(f"stale: {', '.join(stale)}; run python tools/results_page.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(want_readme)
    PAGE.write_text(want_page)
    print(f"wrote {PAGE} and the models table of {README}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
