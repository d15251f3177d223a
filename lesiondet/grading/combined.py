"""One grade per photograph: the image model and the lesion evidence together, or "ungradable".

Two answers are available for a photograph:

* the rule grade from the detected lesions (``grading.rules``), which explains
  itself but over-calls: two or three false haemorrhage boxes make "moderate";
* the grading CNN's grade (``grading.cnn``). With a readout fitted with lesions
  (``grader fit --lesions``, ``grading.readout``) it weighs the detector's lesion
  counts, areas and quadrants beside the image features (``cnn+lesions``).

``final_grade`` returns the CNN's answer when there is one, otherwise the rule
grade, and says which in ``grade_source``. ``benchmarks/grading.py`` measures
them against each other on held-out patients; the rule grade and its reasons
are always reported beside the answer. A photograph that fails the imageability
check is not graded.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lesiondet.grading.fundus import Quality
from lesiondet.grading.rules import GRADE_NAMES, Grade


def final_grade(rule: Grade, cnn: Mapping[str, Any] | None, quality: Quality | None) -> dict[str, Any]:
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
    g, source = int(cnn["grade"]), str(cnn.get("source", "cnn"))
    # the image model's call already includes its referable threshold (tuned for sensitivity) and maculopathy
    referable = bool(g >= 2 or cnn["referable"])
    what = "image model and lesion evidence" if source == "cnn+lesions" else "image model"
    reasons = [f"{what}: grade {g} (score {cnn['score']:.2f}, "
               f"P(referable) {cnn['p_referable']:.2f}, P(maculopathy) {cnn['p_maculopathy']:.2f})",
               f"lesion rules: grade {rule.grade} ({rule.grade_name})"]
    if abs(g - rule.grade) >= 2:
        # The lesions' account and the final answer are two grades or more apart: a reader should look.
        doc["rule_grade"]["disagreement"] = (
            f"the lesions alone give grade {rule.grade}, the final grade is {g}: two or more grades apart, "
            "so the boxes do not explain this grade; read the photograph")
        reasons.append(doc["rule_grade"]["disagreement"])
    doc.update(grade=g, grade_name=GRADE_NAMES[g], referable=referable, grade_source=source,
               model_probabilities={"grade": list(cnn["probabilities"]), "p_referable": cnn["p_referable"],
                                    "p_maculopathy": cnn["p_maculopathy"], "cnn_grade": cnn["grade"],
                                    "cnn_score": cnn["score"]},
               reasons=reasons)
    return doc
