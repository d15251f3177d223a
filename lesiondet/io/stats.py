"""What a labelled folder holds, before anyone trains on it: counts, lesion sizes, empty images,
boxes on the border, suspicious boxes, rare classes and near-duplicate photographs.

Near-duplicates are found with a perceptual hash (``imagehash.phash``, 64 bits) of each
photograph's fine structure, and a pair whose hashes are close is confirmed by correlating the
two before it is reported (see ``_fingerprint``; on the shared sets different photographs
correlate at most 0.68 and copies 1.0).
"""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lesiondet.io.voc import VocRecord

PERCENTILES = (5, 25, 50, 75, 95)
TINY_PX = 2.0          # a box narrower or lower than this is suspicious
HUGE_SHARE = 0.5       # ... and so is one covering more than this share of the image
RARE = 20              # a class with fewer objects than this trains poorly
HASH_DISTANCE = 16     # phash bits (of 64) two photographs may differ by to be compared closely
SAME_PICTURE = 0.9     # ... and the fine-structure correlation from which they count as one photograph


def _fingerprint(path: Path) -> tuple[int, np.ndarray]:
    """A 64-bit perceptual hash and a unit vector of the photograph's fine structure.

    Fundus photographs share their layout (a bright disc on black), which dominates a plain
    thumbnail. Both fingerprints are therefore taken from a 128-px grey thumbnail minus its blur
    (vessels, lesions, texture), inside the field of view shrunk away from its rim.
    """
    import cv2
    import imagehash
    from PIL import Image

    with Image.open(path) as im:
        im.draft("L", (512, 512))  # a JPEG decodes at a fraction of its size: a 12-megapixel photograph is quick
        g = np.asarray(im.convert("L").resize((128, 128), Image.BILINEAR), np.float32)
    fine = g - cv2.GaussianBlur(g, (0, 0), 3)
    fov = cv2.erode((cv2.GaussianBlur(g, (0, 0), 2) > 15).astype(np.uint8), np.ones((15, 15), np.uint8)) > 0
    v = np.where(fov, fine - (fine[fov].mean() if fov.any() else 0.0), 0.0).ravel()
    h = int(str(imagehash.phash(Image.fromarray(np.clip(fine * 4 + 128, 0, 255).astype(np.uint8)))), 16)
    return h, v / (np.linalg.norm(v) or 1.0)


def _popcount(x: np.ndarray) -> np.ndarray:
    """Set bits of each uint64."""
    return np.unpackbits(np.ascontiguousarray(x, np.uint64).view(np.uint8)).reshape(*x.shape, 64).sum(-1)


def near_duplicates(a: Sequence[VocRecord], b: Sequence[VocRecord] | None = None,
                    prints: tuple[list, list | None] | None = None) -> list[dict[str, Any]]:
    """Pairs of near-identical photographs within ``a``, or between ``a`` and ``b``.

    Candidates are pairs whose hashes differ by at most ``HASH_DISTANCE`` bits; a candidate is
    reported when the correlation of the two fine-structure thumbnails reaches ``SAME_PICTURE``.
    ``prints`` passes fingerprints already taken, so a folder is decoded once for both searches.
    """
    fa, fb = prints or ([_fingerprint(r.image_path) for r in a], None)
    if b is not None and fb is None:
        fb = [_fingerprint(r.image_path) for r in b]
    fb, rb = (fa, a) if b is None else (fb, b)
    hb = np.array([h for h, _ in fb], np.uint64)
    pairs = []
    for i, (h, t) in enumerate(fa):
        dist = _popcount(np.bitwise_xor(hb, np.uint64(h)))
        for j in np.nonzero(dist <= HASH_DISTANCE)[0]:
            if b is None and j <= i:
                continue
            corr = float(t @ fb[j][1])
            if corr >= SAME_PICTURE:
                pairs.append({"a": str(a[i].image_path), "b": str(rb[j].image_path), "hash_bits": int(dist[j]),
                              "correlation": round(corr, 4)})
    return pairs


def _touches_border(r: VocRecord, box: Sequence[float]) -> bool:
    return box[0] <= 0.5 or box[1] <= 0.5 or box[2] >= r.width - 0.5 or box[3] >= r.height - 0.5


def dataset_stats(records: Sequence[VocRecord], against: Sequence[VocRecord] | None = None) -> dict[str, Any]:
    """Per-class counts and sizes, image sizes, empty images, border boxes, warnings and near-duplicates."""
    classes = sorted({o.label for r in records for o in r.objects})
    per: dict[str, Any] = {}
    for c in classes:
        objs = [(r, o) for r in records for o in r.objects if o.label == c]
        sizes = np.array([math.sqrt(max(o.area, 0.0)) for _, o in objs])
        per[c] = {"images": len({r.stem for r, _ in objs}), "objects": len(objs),
                  "size_px": {f"p{p}": round(float(np.percentile(sizes, p)), 2) for p in PERCENTILES},
                  "size_min_px": round(float(sizes.min()), 2), "size_max_px": round(float(sizes.max()), 2),
                  "touching_border": sum(_touches_border(r, o.box) for r, o in objs)}
    warnings = []
    tiny = [(r, o) for r in records for o in r.objects if min(o.width, o.height) < TINY_PX]
    huge = [(r, o) for r in records for o in r.objects if o.area > HUGE_SHARE * r.width * r.height]
    if tiny:
        warnings.append(f"{len(tiny)} box(es) under {TINY_PX:g} px wide or high, e.g. {tiny[0][0].stem} "
                        f"{tiny[0][1].label} {tuple(round(v, 1) for v in tiny[0][1].box)}")
    if huge:
        warnings.append(f"{len(huge)} box(es) over half the image, e.g. {huge[0][0].stem} {huge[0][1].label}")
    for c in classes:
        if per[c]["objects"] < RARE:
            warnings.append(f"class {c} has only {per[c]['objects']} objects (< {RARE}): too few to learn it well")
    prints = [_fingerprint(r.image_path) for r in records]
    dups = near_duplicates(records, prints=(prints, None))
    if dups:
        warnings.append(f"{len(dups)} near-duplicate photograph pair(s) in this folder")
    out = {"images": len(records), "objects": sum(len(r.objects) for r in records), "classes": per,
           "image_sizes": dict(Counter(f"{r.width}x{r.height}" for r in records).most_common()),
           "empty_images": [r.stem for r in records if not r.objects],
           "duplicates": dups, "warnings": warnings}
    if against is not None:
        leaks = near_duplicates(records, against, prints=(prints, None))
        out["against"] = {"images": len(against), "duplicates": leaks}
        if leaks:
            warnings.append(f"{len(leaks)} photograph(s) appear on both sides (leak between the splits)")
    return out


def plot_sizes(path: str | Path, records: Sequence[VocRecord], title: str = "") -> Path:
    """A histogram of object size (sqrt of box area, log scale) per class."""
    from lesiondet.reporting.draw import colour
    from lesiondet.reporting.plots import pyplot, save_figure

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
    import html

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
