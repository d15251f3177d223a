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

A photograph unlike every photograph the readout was fitted on (``readout.Familiarity``:
features far from theirs, or a grade score outside their range) is not graded either: its
status is ``unfamiliar``, it is referred ("outside what the model has seen: read the
photograph"), and the image model's provisional grade is kept for the reader, not given
as the answer. A photograph whose field of view is too small for the detector to see
microaneurysms (``lesion_min_fov_px``) is graded by the image model alone, and says so.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from collections.abc import Sequence

import numpy as np

from lesiondet.grading.fundus import Quality, assess_quality
from lesiondet.grading.rules import GRADE_NAMES, Grade


UNFAMILIAR = "outside what the model has seen: read the photograph"


def final_grade(rule: Grade, cnn: Mapping[str, Any] | None, quality: Quality | None,
                lesions_assessable: bool = True) -> dict[str, Any]:
    """The per-image ``grade`` object: the rule grade's keys, with ``grade`` the final answer, plus
    ``status`` (``graded``, ``ungradable`` or ``unfamiliar``), ``referable``, ``grade_source``,
    ``model_probabilities``, ``rule_grade``, ``gradable``, ``quality`` and ``review`` (graded, but the lesions
    and the grade are two or more grades apart: a person should read the photograph).

    ``lesions_assessable`` False: the photograph is too small for the detector's evidence (the grade
    rests on the image model, and the lesion rules are shown but not compared with it)."""
    doc = rule.to_dict()
    doc["rule_grade"] = {"grade": rule.grade, "grade_name": rule.grade_name, "reasons": list(rule.reasons)}
    doc["gradable"] = quality is None or quality.gradable
    doc["status"] = "graded"
    if quality is not None:
        doc["quality"] = quality.to_dict()
    if not doc["gradable"]:
        doc.update(grade=None, grade_name="ungradable", referable=None, grade_source="ungradable",
                   model_probabilities=None, status="ungradable",
                   reasons=[f"not graded: {r}" for r in quality.reasons] + ["retake the photograph"])
        return doc
    if cnn is None:
        doc.update(referable=rule.grade >= 2 or rule.dme_suspect, grade_source="rules", model_probabilities=None)
        return doc
    g, source = int(cnn["grade"]), str(cnn.get("source", "cnn"))
    probs = {"grade": list(cnn["probabilities"]), "p_referable": cnn["p_referable"],
             "p_maculopathy": cnn["p_maculopathy"], "cnn_grade": cnn["grade"], "cnn_score": cnn["score"]}
    if not cnn.get("familiar", True):
        why = []
        if not cnn.get("in_range", True):
            why.append(f"its grade score ({cnn.get('raw_score', cnn['score']):.1f}) is outside the range of the "
                       "photographs the model was fitted on")
        if float(cnn.get("novelty", 0)) > 1:
            why.append(f"its image features are {float(cnn['novelty']):.1f} times further from the training "
                       "photographs' than the model's limit")
        doc.update(grade=None, grade_name="unfamiliar", referable=True, grade_source="unfamiliar",
                   status="unfamiliar", model_probabilities={**probs, "provisional": True},
                   reasons=[UNFAMILIAR] + why + [f"the image model's provisional grade {g} is not an answer; "
                                                 "refer the photograph to a grader"])
        return doc
    # the image model's call already includes its referable threshold (tuned for sensitivity) and maculopathy
    referable = bool(g >= 2 or cnn["referable"])
    what = "image model and lesion evidence" if source == "cnn+lesions" else "image model"
    reasons = [f"{what}: grade {g} (score {cnn['score']:.2f}, "
               f"P(referable) {cnn['p_referable']:.2f}, P(maculopathy) {cnn['p_maculopathy']:.2f})",
               f"lesion rules: grade {rule.grade} ({rule.grade_name})"]
    if not lesions_assessable:
        fov = (quality.measures.get("fov_px") if quality is not None else None) or 0
        doc["rule_grade"]["assessable"] = False
        reasons.append(f"lesion evidence not used: at a {fov:.0f}-px field of view microaneurysms are a pixel or two "
                       "across, below what the detector resolves; the grade rests on the image model")
    elif abs(g - rule.grade) >= 2:
        # The lesions' account and the final answer are two grades or more apart: a reader should look.
        doc["rule_grade"]["disagreement"] = (
            f"the lesions alone give grade {rule.grade}, the final grade is {g}: two or more grades apart, "
            "so the boxes do not explain this grade; read the photograph")
        reasons.append(doc["rule_grade"]["disagreement"])
    # Flagged for a reader, not referred: referring these too cost 4.5 points of specificity out of fold for 1.6 of
    # sensitivity (0.875 / 0.876 -> 0.891 / 0.831 on 450 graded photographs: benchmarks/grading_cameras.py).
    doc.update(grade=g, grade_name=GRADE_NAMES[g], referable=referable, grade_source=source,
               model_probabilities=probs, reasons=reasons, review="disagreement" in doc["rule_grade"])
    return doc


def image_model_call(grader: Any, img: np.ndarray, rule: Grade | None = None, merged_as_he: Sequence[str] = ()
                     ) -> tuple[Quality, dict[str, Any] | None, bool]:
    """Imageability, then the grading CNN (``grading.cnn.GraderCNN``) on a gradable photograph: ``(quality,
    the CNN's answer or None, whether the lesion evidence was assessable)``. The detector's evidence (``rule``)
    is weighed only when the field of view is at least the grader's ``lesion_min_fov`` pixels across."""
    from lesiondet.grading.learned import features

    q = assess_quality(img)
    if not q.gradable:
        return q, None, False
    assessable = rule is not None and q.measures["fov_px"] >= float(grader.cfg["lesion_min_fov"])
    lesions = features(rule, merged_as_he)[None] if assessable and grader.uses_lesions else None
    cnn = grader.predict_images([grader.prepare_array(img)], lesions=lesions)[0]
    cnn.pop("embedding", None)
    return q, cnn, assessable


def grade_photograph(grader: Any, img: np.ndarray, rule: Grade, merged_as_he: Sequence[str] = ()) -> dict[str, Any]:
    """Imageability, then the grading CNN, then the combined grade object (``final_grade``)."""
    q, cnn, assessable = image_model_call(grader, img, rule, merged_as_he)
    return final_grade(rule, cnn, q, lesions_assessable=assessable or cnn is None)
