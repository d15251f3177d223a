"""The ICDR grader: the rules at their boundaries, quadrants, DME flag, explanations, learned path."""
import json

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from lesiondet.cli import main
from lesiondet.config import DEFAULTS_FILE
from lesiondet.grading.learned import OrdinalGrader, features, quadratic_weighted_kappa
from lesiondet.grading.rules import GradingConfig, grade
from lesiondet.io.voc import VocObject as O

W = H = 1000
OD_LEFT = O("OD", (100, 450, 200, 550))    # disc centre (150, 500), diameter 100 → fovea (400, 500)
OD_RIGHT = O("OD", (800, 450, 900, 550))   # → fovea (600, 500)
CENTRES = {"ul": (300, 200), "ur": (800, 200), "ll": (300, 800), "lr": (800, 800)}


def he(n, where):
    x, y = CENTRES[where]
    return [O("HE", (x, y, x + 4, y + 4))] * n


def hes(ul, ur, ll, lr):
    return he(ul, "ul") + he(ur, "ur") + he(ll, "ll") + he(lr, "lr")


@pytest.mark.parametrize("objects,expected", [
    ([], 0),
    ([OD_LEFT], 0),
    ([O("MA", (300, 300, 304, 304))] * 5, 1),
    ([O("EX", (700, 300, 710, 310))], 2),
    ([O("SE", (700, 300, 730, 320))], 2),
    ([O("MA", (1, 1, 3, 3)), O("HE", (700, 300, 720, 320))], 2),
    (hes(20, 20, 20, 20), 2),     # exactly 20 each: not more than 20
    (hes(21, 21, 21, 20), 2),     # one quadrant short
    (hes(21, 21, 21, 0), 2),      # 21+ in only 3 quadrants
    (hes(21, 21, 21, 21), 3),
    (hes(50, 50, 50, 21), 3),
])
def test_icdr_rules(objects, expected):
    g = grade([OD_LEFT] + objects, (W, H))
    assert g.grade == expected
    assert g.reasons and all(isinstance(r, str) and r for r in g.reasons)
    assert g.pdr_assessable is False and "grade 4" in g.limitations[0]


def test_quadrants_follow_the_disc_side():
    # a haemorrhage up and to the right of both foveae
    obj = [O("HE", (700, 200, 704, 204))]
    left = grade([OD_LEFT] + obj, (W, H))
    right = grade([OD_RIGHT] + obj, (W, H))
    assert left.counts_by_quadrant["HE"]["superior_temporal"] == 1   # disc left → right side is temporal
    assert right.counts_by_quadrant["HE"]["superior_nasal"] == 1     # disc right → right side is nasal
    assert left.fovea == (400.0, 500.0) and right.fovea == (600.0, 500.0)


def test_without_a_disc_the_image_centre_is_used_and_said():
    g = grade(hes(21, 21, 21, 21), (W, H))
    assert g.fovea_source == "image_centre" and g.fovea == (500.0, 500.0)
    assert set(g.counts_by_quadrant["HE"]) == {"upper_left", "upper_right", "lower_left", "lower_right"}
    assert any("image centre" in r for r in g.reasons) and g.grade == 3


def test_merged_he_ma_counts_as_haemorrhage_with_a_reason():
    g = grade([OD_LEFT, O("HE_MA", (700, 300, 720, 320))], (W, H))
    assert g.grade == 2 and any("counted as haemorrhage" in r for r in g.reasons)


def test_dme_flag_within_one_disc_diameter_of_the_fovea():
    near = O("EX", (440, 490, 450, 500))  # centre (445, 495): 45 px from the fovea at (400, 500)
    far = O("EX", (520, 490, 530, 500))   # 125 px > 100 px disc diameter
    assert grade([OD_LEFT, near], (W, H)).dme_suspect is True
    assert grade([OD_LEFT, far], (W, H)).dme_suspect is False
    # without the disc the radius is 1/8 of the width (125 px) around the image centre
    assert grade([O("EX", (600, 495, 610, 505))], (W, H)).dme_suspect is True


def test_thresholds_come_from_the_config(tmp_path):
    (tmp_path / "g.yaml").write_text("he_per_quadrant: 5\n")
    cfg = GradingConfig.load(tmp_path / "g.yaml")
    assert grade([OD_LEFT] + hes(6, 6, 6, 6), (W, H), cfg).grade == 3
    shipped = GradingConfig.load(DEFAULTS_FILE)  # the one defaults file, read as a --grading file
    assert shipped == GradingConfig()


def test_areas_and_fractions():
    g = grade([O("EX", (0, 0, 10, 10)), O("EX", (20, 20, 30, 30))], (W, H), fov_area_px=100000)
    assert g.areas_px["EX"] == 200 and g.area_fraction["EX"] == pytest.approx(0.002)


# ------------------------------------------------------------------ learned grader
def synthetic_graded_sets(n, seed):
    """Lesion sets whose grade is known by construction."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        g = i % 4
        objs = [OD_LEFT]
        if g >= 1:
            objs += [O("MA", (x, y, x + 3, y + 3)) for x, y in rng.integers(50, 950, (rng.integers(1, 15), 2))]
        if g >= 2:
            objs += [O("EX", (x, y, x + 8, y + 8)) for x, y in rng.integers(50, 950, (rng.integers(1, 20), 2))]
            objs += hes(*rng.integers(0, 8, 4))
        if g == 3:
            objs += hes(*rng.integers(21, 40, 4))
        out.append((grade(objs, (W, H)), g))
    return out


def test_qwk_equals_scikit_learn():
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 5, 200), rng.integers(0, 5, 200)
    b[:120] = a[:120]
    assert quadratic_weighted_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b, weights="quadratic"))
    assert quadratic_weighted_kappa([0, 1, 2], [0, 1, 2]) == pytest.approx(1.0)


def test_ordinal_grader_learns_known_grades():
    train, test = synthetic_graded_sets(120, 0), synthetic_graded_sets(60, 1)
    model = OrdinalGrader().fit(np.stack([features(g) for g, _ in train]), [y for _, y in train])
    pred = model.predict(np.stack([features(g) for g, _ in test]))
    assert quadratic_weighted_kappa([y for _, y in test], pred) > 0.9
    p = model.predict_proba(np.stack([features(g) for g, _ in test]))
    assert np.allclose(p.sum(1), 1.0)


# ------------------------------------------------------------------ CLI
def test_grade_cli_writes_one_object_per_xml(tiny_sample, tmp_path, capsys):
    assert main(["grade", "--voc", str(tiny_sample / "train"), "--json", str(tmp_path / "g.json")]) == 0
    doc = json.loads((tmp_path / "g.json").read_text())
    assert len(doc) == 6
    keys = {"image", "grade", "grade_name", "reasons", "counts", "counts_by_quadrant", "areas_px", "area_fraction",
            "fovea_source", "dme_suspect", "pdr_assessable"}
    assert all(keys <= set(d) for d in doc)
    assert {d["fovea_source"] for d in doc} == {"optic_disc"}  # the synthetic disc is annotated
    assert "grade distribution" in capsys.readouterr().out


def test_grade_cli_fit_and_eval(tiny_sample, tmp_path):
    voc = tiny_sample / "train"
    assert main(["grade", "--voc", str(voc), "--json", str(tmp_path / "g.json")]) == 0
    doc = json.loads((tmp_path / "g.json").read_text())
    csv = tmp_path / "labels.csv"
    csv.write_text("image,grade\n" + "".join(f"{d['image']},{min(3, d['grade'] + (i % 2))}\n"
                                             for i, d in enumerate(doc)))
    assert main(["grade", "--voc", str(voc), "--fit", str(csv), "--model", str(tmp_path / "m.pkl")]) == 0
    assert main(["grade", "--voc", str(voc), "--eval", str(csv), "--model", str(tmp_path / "m.pkl"),
                 "--out", str(tmp_path / "ev"), "--json", str(tmp_path / "e.json")]) == 0
    ev = json.loads((tmp_path / "e.json").read_text())
    assert -1 <= ev["qwk"] <= 1 and ev["n"] == 6 and (tmp_path / "ev" / "grade_confusion.png").is_file()


def test_detect_grade_adds_grade_to_json(trained_run, tiny_sample, tmp_path, capsys):
    img = next((tiny_sample / "test" / "JPEGImages").iterdir())
    assert main(["detect", str(img), "--weights", str(trained_run / "best.pt"), "--grade", "--score", "0.05",
                 "--out", str(tmp_path / "d")]) == 0
    doc = json.loads((tmp_path / "d" / f"{img.stem}.json").read_text())
    assert 0 <= doc["grade"]["rule_grade"]["grade"] <= 3 and doc["grade"]["pdr_assessable"] is False
    g, out = doc["grade"], capsys.readouterr().out
    assert "grade 4" in out  # the rule grader's limitation note
    # A 256-px synthetic picture sits at the edge of what the grader has seen (its novelty is about 1): either
    # it is graded by the image model, or it is refused as unfamiliar and referred, never both.
    if g["status"] == "graded":
        assert g["grade"] in range(5) and g["grade_source"] in ("cnn", "cnn+lesions")
    else:
        assert g["status"] == "unfamiliar" and g["grade"] is None and g["referable"] is True
        assert g["reasons"][0].startswith("outside what the model has seen") and "unfamiliar" in out
