"""One grade per photograph: image model, lesions, or ungradable."""
from lesiondet.grading.combined import final_grade
from lesiondet.grading.fundus import Quality
from lesiondet.grading.rules import grade
from lesiondet.io.voc import VocObject

KEYS = {"grade", "referable", "grade_source", "model_probabilities", "rule_grade", "reasons", "counts",
        "counts_by_quadrant", "dme_suspect", "limitations", "gradable"}


def rule(n_he=3):
    objs = [VocObject("HE", (100 + 30 * i, 100, 110 + 30 * i, 110), score=0.9) for i in range(n_he)]
    return grade(objs, image_size=(1024, 1024))


def cnn(g=0, score=0.2, p_ref=0.1):
    return {"grade": g, "score": score, "probabilities": [0.8, 0.1, 0.05, 0.03, 0.02], "p_maculopathy": 0.05,
            "p_referable": p_ref, "referable": g >= 2 or p_ref > 0.5}


def test_the_image_model_overrules_a_few_false_haemorrhages_and_the_rule_grade_is_kept_beside_it():
    d = final_grade(rule(3), cnn(0), Quality(True))
    assert KEYS <= set(d)
    assert d["grade"] == 0 and d["grade_source"] == "cnn" and d["referable"] is False
    assert d["rule_grade"]["grade"] == 2 and d["rule_grade"]["reasons"]


def test_an_ungradable_photograph_gets_no_grade_and_the_reasons():
    d = final_grade(rule(3), None, Quality(False, ["too dark (mean green 5 < 15)"]))
    assert d["grade"] is None and d["referable"] is None and d["grade_source"] == "ungradable"
    assert any("too dark" in r for r in d["reasons"])


def test_without_an_image_model_the_rules_answer():
    d = final_grade(rule(3), None, None)
    assert d["grade"] == 2 and d["grade_source"] == "rules" and d["referable"] is True


def test_a_readout_that_weighed_the_lesions_says_so():
    c = {**cnn(2, 2.1, 0.8), "source": "cnn+lesions"}
    d = final_grade(rule(30), c, Quality(True))
    assert d["grade_source"] == "cnn+lesions" and d["grade"] == 2 and d["referable"]
    assert "lesion evidence" in d["reasons"][0] and len(d["model_probabilities"]["grade"]) == 5


def test_the_rule_grade_comes_back_from_a_combined_json_object():
    from lesiondet.grading.rules import Grade

    r = rule(3)
    d = final_grade(r, cnn(0), Quality(True))
    again = Grade.from_dict(d)
    assert again.grade == r.grade == 2 and again.reasons == r.reasons and again.counts == r.counts


def test_a_photograph_unlike_the_training_ones_gets_no_grade_is_referred_and_says_why():
    from lesiondet.grading.combined import UNFAMILIAR

    c = {**cnn(4, 4.0, 1.0), "familiar": False, "novelty": 3.2, "in_range": False, "raw_score": 16.4}
    d = final_grade(rule(0), c, Quality(True))
    assert d["status"] == "unfamiliar" and d["grade"] is None and d["grade_source"] == "unfamiliar"
    assert d["referable"] is True, "a screening programme refers what the model cannot read"
    assert d["reasons"][0] == UNFAMILIAR
    assert any("16.4" in r for r in d["reasons"]) and any("3.2 times" in r for r in d["reasons"])
    assert d["model_probabilities"]["provisional"] is True and d["model_probabilities"]["cnn_grade"] == 4


def test_a_familiar_photograph_is_graded_and_its_status_says_so():
    d = final_grade(rule(0), {**cnn(1, 1.1, 0.2), "familiar": True}, Quality(True))
    assert d["status"] == "graded" and d["grade"] == 1


def test_on_a_field_of_view_too_small_for_the_detector_the_lesions_neither_grade_nor_disagree():
    q = Quality(True, measures={"fov_px": 400.0})
    d = final_grade(rule(30), cnn(0), q, lesions_assessable=False)
    assert d["grade"] == 0 and "disagreement" not in d["rule_grade"]
    assert d["rule_grade"]["assessable"] is False
    assert any("400-px field of view" in r for r in d["reasons"])


class _Grader:
    """A stand-in GraderCNN: records whether it was given lesion evidence."""

    cfg = {"lesion_min_fov": 700}
    uses_lesions = True

    def __init__(self):
        self.seen = []

    def prepare_array(self, img):
        return img

    def predict_images(self, images, lesions=None):
        self.seen.append(lesions is not None)
        return [{**cnn(1, 1.0, 0.2), "embedding": None, "source": "cnn" if lesions is None else "cnn+lesions"}]


def test_the_lesion_evidence_is_weighed_only_on_a_field_of_view_the_detector_resolves():
    from lesiondet.grading.combined import grade_photograph
    from tests.grading.test_fundus import fundus

    g = _Grader()
    big = grade_photograph(g, fundus((1200, 900)), rule(3))
    small = grade_photograph(g, fundus((500, 375)), rule(3))
    assert g.seen == [True, False]
    assert big["grade_source"] == "cnn+lesions" and small["grade_source"] == "cnn"
    assert small["rule_grade"]["assessable"] is False
