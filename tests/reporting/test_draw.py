"""The drawing a reader looks at: captions that stay readable on a dense cluster."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lesiondet.io.voc import VocObject, VocRecord
from lesiondet.reporting.draw import captions, draw


def _cluster(counted: bool) -> VocRecord:
    """Forty large exudate boxes packed into one corner, as a dense plaque of hard exudates looks."""
    rng = np.random.default_rng(0)
    objs = []
    for k in range(40):
        x, y = rng.uniform(50, 250, 2)
        objs.append(VocObject("EX", (x, y, x + 80, y + 70), score=float(rng.uniform(0.2, 0.99)),
                              counted=counted, shown=True))
    return VocRecord(Path("a.jpg"), 800, 600, tuple(objs))


def test_captions_on_a_dense_cluster_never_overlap():
    import cv2

    placed = captions(_cluster(counted=True), font=0.5, t=1, pad=2)
    assert 1 <= len(placed) < 40  # some scores are shown, not all forty on top of each other
    rects = []
    for text, (x, y), _ in placed:
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        rects.append((x, y - th - 1, x + tw, y + base))
    for i, a in enumerate(rects):
        for b in rects[i + 1:]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])


def test_the_best_score_gets_its_caption_first():
    rec = _cluster(counted=True)
    best = max(rec.objects, key=lambda o: o.score)
    assert captions(rec, font=0.5, t=1, pad=2)[0][0] == f"EX {best.score:.2f}"


def test_dashed_boxes_carry_no_score_text_the_legend_says_what_they_are():
    rec = _cluster(counted=False)
    assert captions(rec, font=0.5, t=1, pad=2) == []
    out = draw(np.full((600, 800, 3), 60, np.uint8), rec)
    assert (out[5:40, 5:300] != 60).any()  # the legend: "EX: 40 shown, 0 counted"
