"""What a detection run reports: per-class score thresholds (the operating point) and the anatomy rules.

A Faster R-CNN returns candidates down to a score of 0.001; what a clinician sees, counts and
grades are the candidates above a threshold. One threshold for five classes is wrong for all
of them (a 0.3 microaneurysm and a 0.3 optic disc mean different things), so a checkpoint can
store one threshold per class with the purpose they were chosen for (``OperatingPoint``).
``detect`` uses it unless ``--score`` gives one number for every class, and writes which was used.

The anatomy rules (``apply_anatomy``) make the boxes agree with the eye: a photograph has at most
one optic disc (the best-scoring candidate), and a lesion box centred on the disc is dropped
(the disc's bright rim and vessel crossings are the detector's commonest false exudates and
haemorrhages; DR's lesions are retinal, not on the disc).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from lesiondet.errors import LesiondetError
from lesiondet.io.voc import VocObject, VocRecord

#: The score every class used before checkpoints stored an operating point.
DEFAULT_SCORE = 0.3


@dataclass(frozen=True)
class OperatingPoint:
    """A score threshold per class and why they were chosen; classes not listed use ``default``."""

    thresholds: Mapping[str, float] = field(default_factory=dict)
    purpose: str = f"one score ({DEFAULT_SCORE}) for every class: the checkpoint stores no operating point"
    default: float = DEFAULT_SCORE
    #: thresholds for a photograph whose retina is read below the working scale (a small field of view,
    #: enlarged at most ``tiling.zoom``), where they differ: a microaneurysm is then a few pixels across
    small: Mapping[str, float] = field(default_factory=dict)

    def threshold(self, label: str, small: bool = False) -> float:
        if small and label in self.small:
            return float(self.small[label])
        return float(self.thresholds.get(label, self.default))

    @property
    def lowest(self) -> float:
        return min([self.default, *map(float, self.thresholds.values()), *map(float, self.small.values())])

    def keep(self, objects: Iterable[VocObject]) -> list[VocObject]:
        """The objects at or above their class's threshold (ground truth, without a score, always)."""
        return [o for o in objects if o.score is None or o.score >= self.threshold(o.label)]

    def to_dict(self) -> dict[str, Any]:
        d = {"thresholds": {k: round(float(v), 4) for k, v in self.thresholds.items()},
             "default": self.default, "purpose": self.purpose}
        if self.small:
            d["small"] = {k: round(float(v), 4) for k, v in self.small.items()}
        return d

    @classmethod
    def uniform(cls, score: float, why: str = "") -> "OperatingPoint":
        return cls({}, why or f"--score {score:g} for every class", float(score))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, source: str = "checkpoint") -> "OperatingPoint":
        if not d:
            return cls()
        try:
            thresholds = {str(k): float(v) for k, v in dict(d["thresholds"]).items()}
            small = {str(k): float(v) for k, v in dict(d.get("small") or {}).items()}
            return cls(thresholds, str(d.get("purpose", "")), float(d.get("default", DEFAULT_SCORE)), small)
        except (KeyError, TypeError, ValueError):
            raise LesiondetError(source, "its operating point is malformed (need 'thresholds: {class: score}')",
                                 "store it again with 'lesiondet calibrate'") from None

    @classmethod
    def from_checkpoint(cls, ckpt: Mapping[str, Any], path: str = "checkpoint") -> "OperatingPoint":
        return cls.from_dict(ckpt.get("operating_point"), path)


@dataclass(frozen=True)
class DiscCheck:
    """What the one-disc rule decided for a photograph (the ``optic_disc`` object of the JSON)."""

    found: bool
    score: float | None
    candidates: int       # OD boxes the network returned, at any score
    threshold: float
    lesions_on_disc: int  # lesion boxes dropped because their centre lies on the disc

    def to_dict(self) -> dict[str, Any]:
        rule = (f"at most one optic disc per photograph: the best-scoring of {self.candidates} candidate(s), "
                f"reported when it scores at least {self.threshold:.2f}")
        d: dict[str, Any] = {"found": self.found, "score": None if self.score is None else round(self.score, 4),
                             "candidates": self.candidates, "rule": rule}
        if not self.found:
            d["reason"] = ("no optic-disc candidate" if self.candidates == 0 else
                           f"the best candidate scored {self.score:.2f}, below {self.threshold:.2f}")
            d["anatomy"] = "fovea and quadrants fall back to the image centre"
        d["lesions_on_disc_dropped"] = self.lesions_on_disc
        return d


def flag_boxes(objects: Iterable[VocObject], counted: OperatingPoint, shown: OperatingPoint,
               small: bool = False) -> list[VocObject]:
    """Detections flagged ``counted`` (at or above ``counted``'s threshold) and ``shown`` (``shown``'s).

    The rules read the counted boxes; the drawing shows both kinds. A box that is neither is
    dropped. Ground truth (no score) passes unflagged. ``small``: the photograph was read below the
    working scale, so ``shown``'s thresholds for small photographs apply.
    """
    out = []
    for o in objects:
        if o.score is None:
            out.append(o)
            continue
        c, s = o.score >= counted.threshold(o.label), o.score >= shown.threshold(o.label, small)
        if c or s:
            out.append(replace(o, counted=c, shown=s))
    return out


def _on_disc(o: VocObject, disc: VocObject, core: float) -> bool:
    """Whether ``o``'s centre lies in the ellipse inscribed in ``disc``'s box, scaled by ``core``."""
    cx, cy = (o.box[0] + o.box[2]) / 2, (o.box[1] + o.box[3]) / 2
    dx, dy = (disc.box[0] + disc.box[2]) / 2, (disc.box[1] + disc.box[3]) / 2
    rx, ry = max(disc.width * core / 2, 1e-6), max(disc.height * core / 2, 1e-6)
    return ((cx - dx) / rx) ** 2 + ((cy - dy) / ry) ** 2 <= 1.0


def apply_anatomy(objects: Sequence[VocObject], op: OperatingPoint, disc_core: float = 0.8
                  ) -> tuple[list[VocObject], DiscCheck]:
    """At most one optic disc, and no lesion centred on it; returns the objects kept and the decision.

    Every OD candidate but the best-scoring one is dropped, whatever the display threshold (a
    second disc is never right). When that disc clears its class's threshold, lesion boxes whose
    centre lies inside its core (``disc_core`` of its inscribed ellipse; 0 turns this off) are
    dropped too. Objects without a score (ground truth) are left alone.
    """
    discs = [o for o in objects if o.label == "OD" and o.score is not None]
    best = max(discs, key=lambda o: o.score) if discs else None
    t = op.threshold("OD")
    found = best is not None and best.score >= t
    kept, dropped = [], 0
    for o in objects:
        if o.label == "OD" and o.score is not None and o is not best:
            continue
        if found and disc_core > 0 and o.label != "OD" and o.score is not None and _on_disc(o, best, disc_core):
            dropped += 1
            continue
        kept.append(o)
    return kept, DiscCheck(found, None if best is None else float(best.score), len(discs), t, dropped)




def threshold_at_fp(gt: Sequence[VocRecord], preds: Sequence[VocRecord], cls: str, fp_per_image: float) -> float:
    """The lowest score at which ``cls`` makes at most ``fp_per_image`` false positives per image.

    Read off the class's FROC curve (``metrics.froc_curve``) on annotated validation images.
    1.0 when the class has no detection within the budget.
    """
    from lesiondet.detection.metrics import froc_curve

    scores, fps, _, _ = froc_curve(gt, preds, cls)
    within = np.flatnonzero(fps <= fp_per_image * len(gt))
    last = int(within[-1])
    if last + 1 < len(scores) and scores[last + 1] == scores[last]:  # a tie across the budget: stay above it
        return float(np.nextafter(scores[last], np.inf))
    return 1.0 if last == 0 else float(scores[last])


def threshold_at_precision(gt: Sequence[VocRecord], preds: Sequence[VocRecord], cls: str, precision: float) -> float:
    """The lowest score at which at least ``precision`` of the ``cls`` boxes drawn are right.

    A box is right when it hits a lesion of its class (``metrics.froc_curve``'s rule: centre inside,
    or IoU >= 0.2), a second box on a found lesion included: the reader sees a real lesion. 1.0 when
    no score reaches the precision.
    """
    from lesiondet.detection.metrics import froc_curve

    scores, fps, _, _ = froc_curve(gt, preds, cls)
    n = np.arange(len(scores))  # boxes drawn down to each score (the first entry is the empty start)
    ok = np.flatnonzero((n > 0) & (1 - fps / np.maximum(n, 1) >= precision))
    if not len(ok):
        return 1.0
    last = int(ok[-1])
    if last + 1 < len(scores) and scores[last + 1] == scores[last]:  # a tie across the line: stay above it
        return float(np.nextafter(scores[last], np.inf))
    return float(scores[last])


def displayed(gt: Sequence[VocRecord], preds: Sequence[VocRecord], classes: Sequence[str], precision: float,
              what: str, keep: OperatingPoint | None = None) -> OperatingPoint:
    """Display thresholds: per class, the lowest score whose drawn boxes are ``precision`` right on ``gt``.

    Classes ``gt`` does not annotate (and OD, whose one-disc rule decides alone) take ``keep``'s
    threshold: what is drawn for them is what is counted.
    """
    present = {o.label for r in gt for o in r.objects}
    thresholds = {c: (keep.threshold(c) if keep else DEFAULT_SCORE) for c in classes}
    for c in classes:
        if c in present and c != "OD":
            thresholds[c] = threshold_at_precision(gt, preds, c, precision)
    return OperatingPoint(thresholds, f"per class, the lowest score at which at least {precision:g} of the boxes drawn "
                          f"hit a lesion of their class on {what} ({len(gt)} annotated photographs; centre-or-IoU-0.2)")


def as_class(records: Sequence[VocRecord], cls: str, partial: Mapping[str, Sequence[str]]) -> list[VocRecord]:
    """``records`` with each partial label that includes ``cls`` (CODRAS's ``HE_MA``) read as ``cls``.

    A lenient check of ``cls`` alone: an HE box on a marked microaneurysm counts as right.
    """
    to = {p: cls for p, members in partial.items() if cls in members}
    return [r.with_objects([replace(o, label=to.get(o.label, o.label)) for o in r.objects]) for r in records] \
        if to else list(records)


def displayed_across(sets: Mapping[str, tuple[Sequence[VocRecord], Sequence[VocRecord]]], classes: Sequence[str],
                     precision: float, keep: OperatingPoint, partial: Mapping[str, Sequence[str]] | None = None,
                     min_lesions: int = 100, small_sets: Iterable[str] = ()
                     ) -> tuple[OperatingPoint, dict[str, dict[str, float]]]:
    """Display thresholds that hold on every camera: per class, the highest of the per-set thresholds.

    ``sets`` maps a validation set's name to ``(ground truth, predictions)``. Per class, each set with
    at least ``min_lesions`` lesions of it (partial labels read as the class, ``as_class``) gives the
    lowest score at which ``precision`` of its boxes drawn are right (``threshold_at_precision``; 1.0
    when none is). A threshold chosen on one camera's photographs does not carry to another's (the HE
    threshold chosen on IDRiD and HEI-MED drew 0.31 right on new IDRiD photographs), so the drawing
    takes the most conservative. When that is 1.0 (no score draws the class right often enough on
    some camera), the class is drawn by scale instead: photographs read at the working scale take
    the highest threshold of the sets read there, and photographs read below it (``small_sets``:
    small fields of view, enlarged) the highest of theirs, so a class that cannot be drawn on small
    photographs is still drawn on large ones. A class no set has enough of keeps ``keep``'s threshold
    (OD: the one-disc rule decides it). Returns the point and, per class, each set's own threshold.
    """
    partial, small_sets = partial or {}, set(small_sets)
    thresholds = {c: keep.threshold(c) for c in classes}
    small: dict[str, float] = {}
    per_set: dict[str, dict[str, float]] = {}
    for c in classes:
        if c == "OD":
            continue
        for name, (gt, preds) in sets.items():
            g = as_class(gt, c, partial)
            if sum(o.label == c for r in g for o in r.objects) >= min_lesions:
                per_set.setdefault(c, {})[name] = threshold_at_precision(g, preds, c, precision)
        if c not in per_set:
            continue
        thresholds[c] = max(per_set[c].values())
        large = [t for n, t in per_set[c].items() if n not in small_sets]
        if thresholds[c] >= 1.0 and large and max(large) < 1.0:
            thresholds[c] = max(large)
            small[c] = max(t for n, t in per_set[c].items() if n in small_sets)
    chose = "; ".join(f"{c}: " + ", ".join(f"{n} {t:.3f}" for n, t in v.items()) for c, v in per_set.items())
    by_scale = (f"; by scale for {', '.join(small)}: photographs read below the working scale (as "
                f"{', '.join(sorted(small_sets))}) draw only what is counted" if small else "")
    return OperatingPoint(thresholds, f"per class, the highest of each validation set's lowest score at which at "
                          f"least {precision:g} of the boxes drawn hit a lesion of their class (centre-or-IoU-0.2; "
                          f"sets with at least {min_lesions} lesions of the class: {chose}){by_scale}; other classes "
                          "as counted", small={c: max(t, keep.threshold(c)) for c, t in small.items()}), per_set


def calibrated(gt: Sequence[VocRecord], preds: Sequence[VocRecord], classes: Sequence[str],
               partial: Mapping[str, Sequence[str]], fp_per_image: Mapping[str, float] | float,
               what: str) -> OperatingPoint:
    """Per-class thresholds at a false-positive budget per image, from validation images and low-score predictions.

    A partial label of the ground truth (``HE_MA``) is scored merged (``metrics.merge_partial``) and its
    threshold given to each member. Classes without ground truth keep the default.
    """
    from lesiondet.detection.metrics import merge_partial

    merged_preds, names, merged = merge_partial(gt, preds, classes, partial)
    present = {o.label for r in gt for o in r.objects}
    budget = (lambda c: float(fp_per_image.get(c, fp_per_image.get("*", 1.0)))) if isinstance(fp_per_image, Mapping) \
        else (lambda c: float(fp_per_image))
    thresholds: dict[str, float] = {}
    for name in names:
        if name in present:
            t = threshold_at_fp(gt, merged_preds, name, budget(name))
            thresholds.update({m: t for m in merged.get(name, [name])})
    rates = ", ".join(sorted({f"{budget(n):g}" for n in names if n in present}))
    return OperatingPoint(thresholds, f"per class, the score at which it makes {rates} false positive(s) per image "
                          f"on {what} ({len(gt)} annotated photographs; FROC, centre-or-IoU-0.2 hits)")


def with_operating_point(weights: str | Path, op: OperatingPoint | None, out: str | Path,
                         display: OperatingPoint | None = None) -> Path:
    """A copy of a detector checkpoint (``.pt``) that carries ``op`` (counted) and ``display`` (drawn); atomic.

    None keeps what the checkpoint already stores.
    """
    from lesiondet.engine.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(weights)
    for key, point in (("operating_point", op), ("display_point", display)):
        if point is None:
            continue
        unknown = [c for c in point.thresholds if c not in ckpt["classes"]]
        if unknown:
            raise LesiondetError(weights, f"thresholds for classes the model does not have: {', '.join(unknown)}",
                                 f"use its classes: {', '.join(ckpt['classes'])}")
        ckpt[key] = point.to_dict()
    save_checkpoint(out, ckpt)
    return Path(out)


#: A class needs this many lesions on this many validation photographs before its thresholds are re-chosen there.
MIN_LESIONS, MIN_PHOTOGRAPHS = 20, 5


def recalibrated(gt: Sequence[VocRecord], preds: Sequence[VocRecord], classes: Sequence[str],
                 partial: Mapping[str, Sequence[str]], counted: OperatingPoint, shown: OperatingPoint,
                 what: str, fp_per_image: float = 1.0, precision: float = 0.5
                 ) -> tuple[OperatingPoint, OperatingPoint, dict[str, str]]:
    """A fine-tuned detector's operating points, re-chosen on the user's validation photographs.

    Per class, as ``lesiondet calibrate`` chooses them (counted: ``fp_per_image`` false positives per
    photograph; drawn: boxes ``precision`` right), when the class has at least ``MIN_LESIONS`` lesions on
    ``MIN_PHOTOGRAPHS`` photographs there; otherwise the start checkpoint's thresholds (``counted``,
    ``shown``) are kept, since a threshold read off a handful of lesions is noise. OD keeps its own (the
    one-disc rule decides it). Returns both points and, per class, what was done and why.
    """
    new_counted = calibrated(gt, preds, classes, partial, fp_per_image, what)
    new_shown = displayed(gt, preds, classes, precision, what, keep=new_counted)
    lesions = {c: sum(o.label == c for r in gt for o in r.objects) for c in classes}
    photos = {c: sum(any(o.label == c for o in r.objects) for r in gt) for c in classes}
    for name, members in partial.items():  # a merged label's lesions count for each member
        n = sum(o.label == name for r in gt for o in r.objects)
        k = sum(any(o.label == name for o in r.objects) for r in gt)
        for m in members:
            lesions[m], photos[m] = lesions.get(m, 0) + n, photos.get(m, 0) + k
    c_thr, s_thr, notes = {}, {}, {}
    for c in classes:
        if c != "OD" and lesions[c] >= MIN_LESIONS and photos[c] >= MIN_PHOTOGRAPHS:
            c_thr[c], s_thr[c] = new_counted.threshold(c), new_shown.threshold(c)
            notes[c] = (f"re-chosen on {lesions[c]} lesions in {photos[c]} photographs: counted "
                        f"{counted.threshold(c):.3f} -> {c_thr[c]:.3f}, drawn {shown.threshold(c):.3f} -> {s_thr[c]:.3f}")
        else:
            c_thr[c], s_thr[c] = counted.threshold(c), shown.threshold(c)
            notes[c] = (f"kept from the start ({c_thr[c]:.3f} counted, {s_thr[c]:.3f} drawn): "
                        + ("the one-disc rule decides it" if c == "OD" else
                           f"{lesions[c]} lesions in {photos[c]} validation photographs are too few "
                           f"(at least {MIN_LESIONS} in {MIN_PHOTOGRAPHS})"))
    purpose = (f"re-chosen after fine-tuning on {what} where a class has enough lesions ({fp_per_image:g} false "
               f"positive(s) per photograph counted, {precision:g} of drawn boxes right); the start's thresholds "
               "elsewhere")
    # the start's thresholds for small photographs stay: a few validation photographs do not re-choose them
    return OperatingPoint(c_thr, purpose), OperatingPoint(s_thr, purpose, small=dict(shown.small)), notes
