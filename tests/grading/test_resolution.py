"""The shipped grade at one retinal scale: the same eye at its own size and as a 400-px field of view (through a
telemedicine link's JPEG, or as a square thumbnail) is graded within one grade, and a photograph the grader has
not learnt to read is never given a confident grade outside its range.

These photographs are among those the readout was fitted on; how it grades other patients' photographs at these
renderings is measured by ``benchmarks/grading_cameras.py`` (docs/grading.md)."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from lesiondet.camera import render

RENDERINGS = ("fov400_q70", "square400_q75")


@pytest.fixture(scope="module")
def shipped_grader():
    from lesiondet.grading.cnn import GraderCNN
    from lesiondet.weights import default_grader

    return GraderCNN(default_grader(), "cpu", backend="torch")


def one_per_grade(shared_data, per_grade=2):
    rows = list(csv.DictReader(open(shared_data / "grading" / "srahim" / "labels.csv", newline="")))
    chosen: dict[int, list] = {}
    for r in rows[::7]:
        g = int(r["dr_grade"])
        if len(chosen.setdefault(g, [])) < per_grade:
            chosen[g].append(shared_data / "grading" / "srahim" / r["image"])
    return [p for g in sorted(chosen) for p in chosen[g]]


def test_a_400_px_field_of_view_is_graded_within_one_grade_of_the_original(shared_data, shipped_grader):
    """Within one grade, but for at most one eye of the sample (and that one within two): a statistical model's
    score moves a little with the detail it is given, and an eye close to a cut point may cross two narrow grade
    bands (out of fold, 99% of 450 eyes stay within one grade: benchmarks/grading_cameras.py, docs/grading.md)."""
    from lesiondet.grading.combined import image_model_call
    from lesiondet.images import read_rgb

    paths = one_per_grade(shared_data)
    assert len(paths) >= 8
    gaps: dict[str, list[int]] = {r: [] for r in RENDERINGS}
    for p in paths:
        img = read_rgb(p)
        _, native, _ = image_model_call(shipped_grader, img)
        assert native["familiar"], f"{p.name}: a photograph of the training camera is familiar"
        for r in RENDERINGS:
            q, small, _ = image_model_call(shipped_grader, render(img, r))
            assert q.gradable, f"{p.name} as {r}: a sharp thumbnail is not 'too blurred' ({q.reasons})"
            assert q.measures["fov_px"] < 500
            assert small["familiar"], f"{p.name} as {r}: the same eye, smaller, is not outside what it has seen"
            gaps[r].append(abs(small["grade"] - native["grade"]))
    for r, g in gaps.items():
        assert max(g) <= 2 and sum(x > 1 for x in g) <= 1, (r, g)


def test_no_photograph_gets_a_confident_grade_outside_the_models_range(shared_data, shipped_grader):
    from lesiondet.grading.combined import image_model_call
    from lesiondet.images import read_rgb

    lo, hi = shipped_grader.readout.familiarity.score_range
    for p in one_per_grade(shared_data, 1):
        img = read_rgb(p)
        for r in ("native", *RENDERINGS, "fov300_q50"):
            _, d, _ = image_model_call(shipped_grader, render(img, r))
            assert 0 <= d["score"] <= 4
            if d["familiar"]:
                assert lo <= d["raw_score"] <= hi
            else:
                assert d["novelty"] > 1 or not d["in_range"]


def test_a_picture_that_is_not_a_fundus_photograph_is_unfamiliar(shipped_grader):
    """An OCT-like grey speckle frame and a bright colour chart: neither is a retina."""
    from lesiondet.grading.combined import image_model_call

    rng = np.random.default_rng(0)
    speckle = np.repeat(rng.gamma(2.0, 30, (496, 768))[..., None], 3, 2).clip(0, 255).astype(np.uint8)
    chart = np.zeros((600, 800, 3), np.uint8)
    for i, c in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]):
        chart[:, i * 200:(i + 1) * 200] = c
    for img in (speckle, chart):
        q, d, _ = image_model_call(shipped_grader, img)
        assert d is None or not d["familiar"], (q.reasons, d and d["novelty"])
