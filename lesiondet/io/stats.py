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
