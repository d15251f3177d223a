"""Agreement figures for the grader eval JSON."""
import numpy as np

from lesiondet.grading.metrics import grading_metrics


def test_perfect_agreement_scores_one_and_the_interval_holds_the_estimate():
    g = [0, 0, 1, 2, 3, 4, 2, 0, 1, 3] * 3
    ref = [x >= 2 for x in g]
    m = grading_metrics(g, g, referable_true=ref, referable_called=ref, referable_score=g,
                        maculopathy_true=[0, 1, None] * 10, maculopathy_score=[0.1, 0.9, 0.5] * 10,
                        patients=[f"P{i // 2}" for i in range(30)], n_boot=200)
    assert m["qwk"] == 1.0 and m["accuracy"] == 1.0 and m["n"] == 30
    assert m["referable"]["sensitivity"] == m["referable"]["specificity"] == m["referable"]["auc"] == 1.0
    assert m["referable"]["ci95"]["sensitivity"] == [1.0, 1.0]
    assert m["maculopathy"]["sensitivity"] == 1.0 and m["maculopathy"]["n_positive"] == 10
    assert np.array(m["confusion"]).trace() == 30


def test_missed_referable_eyes_lower_sensitivity_not_specificity():
    g = [0, 0, 0, 0, 2, 2, 3, 4]
    called = [False, False, False, False, True, False, True, False]
    m = grading_metrics(g, g, referable_true=[x >= 2 for x in g], referable_called=called, n_boot=0)
    assert m["referable"]["sensitivity"] == 0.5 and m["referable"]["specificity"] == 1.0
