"""One grade per photograph: the image model and the lesion evidence together, or "ungradable".

Three answers are available for a photograph:

* the rule grade from the detected lesions (``grading.rules``), which explains
  itself but over-calls: two or three false haemorrhage boxes make "moderate";
* the grading CNN's grade (``grading.cnn``), which agrees best with graders;
* a stacked ordinal model on the CNN's score and the lesion counts, fitted on
  photographs neither model was trained on (``fit_combiner``).

``final_grade`` returns the stacked grade when the grader carries a combiner,
otherwise the CNN's, otherwise the rule grade, and says which in
``grade_source``. ``benchmarks/grading.py`` measures the three against each
other on held-out patients; the rule grade and its reasons are always reported
beside the answer. A photograph that fails the imageability check is not graded.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lesiondet.grading.fundus import Quality
from lesiondet.grading.learned import OrdinalGrader
from lesiondet.grading.rules import GRADE_NAMES, Grade

COMBINER_FEATURES = ("cnn_score", "cnn_p_maculopathy", "log_HE", "log_EX", "log_MA")


def combiner_features(cnn: Mapping[str, Any], rule: Grade, merged_as_he: Sequence[str] = ("HE_MA",)) -> np.ndarray:
    """CNN score and maculopathy probability, and log lesion counts (merged classes counted as haemorrhage)."""
    c = rule.counts
    he = c.get("HE", 0) + sum(c.get(m, 0) for m in merged_as_he)
    return np.array([float(cnn["score"]), float(cnn["p_maculopathy"]), np.log1p(he), np.log1p(c.get("EX", 0)),
                     np.log1p(c.get("MA", 0))], np.float64)


def fit_combiner(X: np.ndarray, y: Sequence[int], C: float = 0.3) -> OrdinalGrader:
    """The ordinal stacker on ``combiner_features`` rows; fit it on photographs the CNN did not train on."""
    return OrdinalGrader(C, COMBINER_FEATURES).fit(np.asarray(X, np.float64), y)


def load_combiner(d: Mapping[str, Any] | None) -> OrdinalGrader | None:
    return None if not d else OrdinalGrader.from_dict(dict(d), "combiner", COMBINER_FEATURES)


def combiner_grade(model: OrdinalGrader, x: np.ndarray) -> tuple[int, np.ndarray]:
    """Grade = the expected grade rounded (kinder to quadratic kappa than the most probable grade)."""
    p = np.zeros(5)
    p[model.grades_] = model.predict_proba(x[None])[0]
    return int(np.clip(np.rint(p @ np.arange(5)), 0, 4)), p


def final_grade(rule: Grade, cnn: Mapping[str, Any] | None, quality: Quality | None,
                combiner: OrdinalGrader | None = None, merged_as_he: Sequence[str] = ("HE_MA",)) -> dict[str, Any]:
    """The per-image ``grade`` object: the rule grade's keys, with ``grade`` the final answer, plus
    ``referable``, ``grade_source``, ``model_probabilities``, ``rule_grade``, ``gradable`` and ``quality``."""
    doc = rule.to_dict()
    doc["rule_grade"] = {"grade": rule.grade, "grade_name": rule.grade_name, "reasons": list(rule.reasons)}
    doc["gradable"] = quality is None or quality.gradable
    if quality is not None:
        doc["quality"] = quality.to_dict()
    if not doc["gradable"]:
        doc.update(grade=None, grade_name="ungradable", referable=None, grade_source="ungradable",
                   model_probabilities=None,
                   reasons=[f"not graded: {r}" for r in quality.reasons] + ["retake the photograph"])
        return doc
    if cnn is None:
        doc.update(referable=rule.grade >= 2 or rule.dme_suspect, grade_source="rules", model_probabilities=None)
        return doc
    probs = list(cnn["probabilities"])
    if combiner is not None:
        g, p = combiner_grade(combiner, combiner_features(cnn, rule, merged_as_he))
        source, probs = "cnn+lesions", [round(float(v), 4) for v in p]
    else:
        g, source = int(cnn["grade"]), "cnn"
    # the image model's call already includes its referable threshold (tuned for sensitivity) and maculopathy
    referable = bool(g >= 2 or cnn["referable"])
    reasons = [f"image model: grade {cnn['grade']} (score {cnn['score']:.2f}, "
               f"P(referable) {cnn['p_referable']:.2f}, P(maculopathy) {cnn['p_maculopathy']:.2f})"]
    if source == "cnn+lesions":
        reasons.append(f"image model and lesion counts combined: grade {g}")
    reasons.append(f"lesion rules: grade {rule.grade} ({rule.grade_name})")
    doc.update(grade=g, grade_name=GRADE_NAMES[g], referable=referable, grade_source=source,
               model_probabilities={"grade": probs, "p_referable": cnn["p_referable"],
                                    "p_maculopathy": cnn["p_maculopathy"], "cnn_grade": cnn["grade"],
                                    "cnn_score": cnn["score"]},
               reasons=reasons)
    return doc
