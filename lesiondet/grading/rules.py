"""ICDR diabetic-retinopathy severity from detected (or annotated) lesions.

Rules, from the International Clinical DR scale (see ../shared/DESIGN.md):

| grade | rule |
|---|---|
| 0 | no MA, HE, EX or SE |
| 1 | microaneurysms only |
| 2 | any HE, EX or SE, but not severe |
| 3 | more than 20 haemorrhages in each of the 4 quadrants (the "4" of the 4-2-1 rule) |

Venous beading, IRMA and new vessels are not detected, so grade 3 is reached
only through the haemorrhage count and grade 4 (PDR) never: every result says
so (``pdr_assessable: false``). Merged classes such as ``HE_MA`` count as
haemorrhage, which can only raise a grade – the safe side for referral.

Quadrants are split by lines through the fovea (``fundus.locate_fovea``).
Keys of ``counts_by_quadrant`` are anatomical (``superior_temporal``,
``superior_nasal``, ``inferior_temporal``, ``inferior_nasal``) when an optic
disc fixes which side is nasal, and image-based (``upper_left`` …) when not.
Areas are box areas in pixels; ``area_fraction`` divides by the field of view.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from lesiondet.config import defaults, load_section
from lesiondet.grading.anatomy import Landmarks, locate_fovea, quadrant_names, quadrant_of
from lesiondet.io.voc import VocObject, VocRecord

GRADE_NAMES = {0: "No apparent retinopathy", 1: "Mild NPDR", 2: "Moderate NPDR", 3: "Severe NPDR",
               4: "Proliferative DR"}
LESIONS = ("MA", "HE", "EX", "SE")
PDR_SENTENCE = ("Venous beading, IRMA, neovascularisation and vitreous or preretinal haemorrhage are not "
                "detected, so proliferative DR (grade 4) cannot be assessed and severe NPDR (grade 3) is "
                "recognised only by the haemorrhage count.")


_DEFAULT = defaults("grading")


@dataclass(frozen=True)
class GradingConfig:
    """The ICDR rule thresholds; defaults from ``grading:`` in ``lesiondet/config/defaults.yaml``."""

    he_per_quadrant: int = _DEFAULT["he_per_quadrant"]
    fovea_disc_diameters: float = _DEFAULT["fovea_disc_diameters"]
    dme_disc_diameters: float = _DEFAULT["dme_disc_diameters"]
    dme_no_disc_fraction: float = _DEFAULT["dme_no_disc_fraction"]
    merged_as_he: tuple[str, ...] = tuple(_DEFAULT["merged_as_he"])

    @classmethod
    def load(cls, path: str | Path | None) -> "GradingConfig":
        """Defaults, with the keys a ``--grading`` YAML sets (alone or under ``grading:``)."""
        d = load_section("grading", path, "grading config", "pass a YAML of grading: keys or leave --grading out")
        d["merged_as_he"] = tuple(d["merged_as_he"] or ())
        return cls(**d)


@dataclass
class Grade:
    """A grade with everything that led to it."""

    grade: int
    grade_name: str
    reasons: list[str]
    counts: dict[str, int]
    counts_by_quadrant: dict[str, dict[str, int]]
    areas_px: dict[str, float]
    area_fraction: dict[str, float]
    fovea: tuple[float, float]
    fovea_source: str
    dme_suspect: bool
    pdr_assessable: bool = False
    image: str = ""
    limitations: list[str] = field(default_factory=lambda: [PDR_SENTENCE])

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fovea"] = [round(v, 1) for v in self.fovea]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Grade:
        """The rule grade inside a ``detect --grade`` JSON's ``grade`` object (other keys are ignored)."""
        keep = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if "rule_grade" in d:  # the combined object's top-level grade is the final one, not the rules'
            keep.update({k: d["rule_grade"][k] for k in ("grade", "grade_name", "reasons")})
        keep["fovea"] = tuple(keep["fovea"])
        return cls(**keep)


def _n(k: int, word: str) -> str:
    return f"{k} {word}{'' if k == 1 else 's'}"


def grade(detections: Sequence[VocObject] | VocRecord, image_size: tuple[int, int] | None = None,
          config: GradingConfig | None = None, fov_area_px: float | None = None) -> Grade:
    """ICDR grade (0-3) of one image from its lesion boxes.

    Args:
        detections: lesion objects (``VocObject``, score already thresholded) or a ``VocRecord``;
            boxes flagged ``counted=False`` (shown, not counted) are left out.
        image_size: ``(width, height)``; taken from the record when one is given.
        config: thresholds (defaults: ``grading:`` in ``lesiondet/config/defaults.yaml``).
        fov_area_px: pixels inside the field of view, for ``area_fraction``; the
            inscribed circle of the image when not given.
    """
    cfg = config or GradingConfig()
    name = ""
    if isinstance(detections, VocRecord):
        image_size = image_size or (detections.width, detections.height)
        name = str(detections.image_path)
        objects = list(detections.objects)
    else:
        objects = list(detections)
    objects = [o for o in objects if o.counted is not False]  # drawn for the reader, below the rules' thresholds
    if image_size is None:
        raise ValueError("image_size is required when passing a list of detections")
    w, h = image_size
    marks: Landmarks = locate_fovea(objects, w, h, cfg.fovea_disc_diameters)
    fov = fov_area_px or 3.141592653589793 * (min(w, h) / 2) ** 2

    merged = [o for o in objects if o.label in cfg.merged_as_he]
    lesions = [o for o in objects if o.label in LESIONS or o.label in cfg.merged_as_he]
    counts = Counter(o.label for o in lesions)
    present = sorted(counts, key=lambda c: (LESIONS + cfg.merged_as_he).index(c))
    quads = quadrant_names(marks)
    by_quad = {c: {q: 0 for q in quads} for c in present}
    areas = {c: 0.0 for c in present}
    for o in lesions:
        by_quad[o.label][quadrant_of(o, marks)] += 1
        areas[o.label] += o.area
    he_by_quad = {q: sum(by_quad.get(c, {}).get(q, 0) for c in ("HE",) + cfg.merged_as_he) for q in quads}
    n_he = counts.get("HE", 0) + len(merged)

    reasons: list[str] = []
    if marks.source == "image_centre":
        reasons.append("No optic disc was found, so the fovea was placed at the image centre; "
                       "quadrants and the DME check are approximate.")
    if merged:
        reasons.append(f"{_n(len(merged), 'merged ' + '/'.join(sorted({o.label for o in merged})) + ' box')} "
                       "counted as haemorrhage (conservative: merged boxes may be microaneurysms).")
    limit = cfg.he_per_quadrant
    if not lesions:
        g = 0
        reasons.append("No microaneurysms, haemorrhages or exudates were found.")
    elif set(counts) == {"MA"}:
        g = 1
        reasons.append(f"Only microaneurysms were found ({counts['MA']}): mild NPDR.")
    else:
        found = [f"{_n(counts[c], {'HE': 'haemorrhage', 'EX': 'hard exudate', 'SE': 'soft exudate'}.get(c, c + ' lesion'))}"
                 for c in present if c != "MA"]
        if all(n > limit for n in he_by_quad.values()):
            g = 3
            reasons.append(f"More than {limit} haemorrhages in each of the 4 quadrants "
                           f"({', '.join(f'{q} {n}' for q, n in he_by_quad.items())}): severe NPDR by the 4-2-1 rule.")
        else:
            g = 2
            reasons.append(f"More than microaneurysms alone ({', '.join(found)}): moderate NPDR.")
            if n_he:
                over = sum(n > limit for n in he_by_quad.values())
                reasons.append(f"Not severe: {over} of 4 quadrants hold more than {limit} haemorrhages "
                               f"({', '.join(f'{q} {n}' for q, n in he_by_quad.items())}); all 4 are needed.")

    if marks.disc_diameter is not None:
        radius = cfg.dme_disc_diameters * marks.disc_diameter
        radius_text = f"{cfg.dme_disc_diameters:g} disc diameter ({radius:.0f} px)"
    else:
        radius = cfg.dme_no_disc_fraction * w
        radius_text = f"{cfg.dme_no_disc_fraction:g} of the image width ({radius:.0f} px)"
    near = [o for o in objects if o.label == "EX" and
            ((o.box[0] + o.box[2]) / 2 - marks.fovea[0]) ** 2 + ((o.box[1] + o.box[3]) / 2 - marks.fovea[1]) ** 2
            <= radius ** 2]
    if near:
        reasons.append(f"{_n(len(near), 'hard exudate')} within {radius_text} of the fovea: possible diabetic "
                       "macular oedema (a flag, not part of the ICDR grade).")
    return Grade(g, GRADE_NAMES[g], reasons, dict(counts), by_quad, {c: round(a, 1) for c, a in areas.items()},
                 {c: round(a / fov, 6) for c, a in areas.items()}, marks.fovea, marks.source, bool(near),
                 image=name)


def grade_record(record: VocRecord, config: GradingConfig | None = None, read_fov: bool = True) -> Grade:
    """Grade a record, measuring the field of view from its image when it can be read."""
    fov = None
    if read_fov and record.image_path.is_file():
        from lesiondet.grading.anatomy import fov_mask
        from lesiondet.images import read_rgb

        fov = float(fov_mask(read_rgb(record.image_path)).sum())
    return grade(record, config=config, fov_area_px=fov)
