"""What ``lesiondet data stats`` shows: the object-size histogram and the one-page HTML of the figures
``io.stats.dataset_stats`` returns (``io`` counts; ``reporting`` draws)."""
from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lesiondet.io.stats import PERCENTILES
from lesiondet.io.voc import VocRecord
from lesiondet.reporting.draw import colour
from lesiondet.reporting.plots import pyplot, save_figure


def plot_sizes(path: str | Path, records: Sequence[VocRecord], title: str = "") -> Path:
    """A histogram of object size (sqrt of box area, log scale) per class."""
    classes = sorted({o.label for r in records for o in r.objects})
    fig, ax = pyplot().subplots(figsize=(7, 3.8))
    sizes = {c: [math.sqrt(max(o.area, 1e-6)) for r in records for o in r.objects if o.label == c] for c in classes}
    hi = max((max(s) for s in sizes.values() if s), default=2.0)
    bins = np.geomspace(0.5, max(hi, 2.0) * 1.1, 40)
    for c in classes:
        ax.hist(sizes[c], bins=bins, histtype="step", lw=2, color=np.array(colour(c)) / 255 * 0.85,
                label=f"{c} (n={len(sizes[c])}, median {np.median(sizes[c]):.1f} px)")
    ax.set_xscale("log"), ax.set_xlabel("object size: sqrt(box area), px"), ax.set_ylabel("objects")
    ax.axvline(8, color="grey", ls=":", lw=1)
    ax.set_title(title or "object sizes", fontsize=10), ax.legend(fontsize=7), ax.grid(alpha=0.3)
    return save_figure(fig, path)


def stats_html(stats: dict[str, Any], png_src: str, title: str) -> str:
    """One page: tables, warnings and the size histogram (``png_src``: a data URI keeps it self-contained)."""
    rows = "".join(
        f"<tr><td>{html.escape(c)}</td><td>{v['images']}</td><td>{v['objects']}</td>"
        + "".join(f"<td>{v['size_px'][f'p{p}']}</td>" for p in PERCENTILES)
        + f"<td>{v['touching_border']}</td></tr>" for c, v in stats["classes"].items())
    warn = "".join(f"<li>{html.escape(w)}</li>" for w in stats["warnings"]) or "<li>none</li>"
    sizes = ", ".join(f"{k}: {n}" for k, n in stats["image_sizes"].items())
    dup = stats["duplicates"] + stats.get("against", {}).get("duplicates", [])
    dups = "".join(f"<li>{html.escape(Path(d['a']).name)} ~ {html.escape(Path(d['b']).name)} "
                   f"({d['hash_bits']} bits, r={d['correlation']})</li>" for d in dup[:50]) or "<li>none</li>"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:60em}}td,th{{padding:2px 8px;text-align:right}}
td:first-child{{text-align:left}}table{{border-collapse:collapse}}tr:nth-child(even){{background:#f3f3f3}}</style>
</head><body><h1>{html.escape(title)}</h1>
<p>{stats['images']} images, {stats['objects']} objects, {len(stats['empty_images'])} images without objects.
Image sizes: {html.escape(sizes)}.</p>
<table><tr><th>class</th><th>images</th><th>objects</th>{''.join(f'<th>p{p} px</th>' for p in PERCENTILES)}
<th>on border</th></tr>{rows}</table>
<p><img src="{png_src}" alt="object sizes" style="max-width:100%"></p>
<h2>Warnings</h2><ul>{warn}</ul><h2>Near-duplicate photographs</h2><ul>{dups}</ul></body></html>
"""
