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
