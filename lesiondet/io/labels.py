"""Class names: the canonical lesion classes, their aliases and dataset label maps.

A label map is an ordered list of class names (the model's classes, 1..K; 0 is
background) plus aliases that map what annotators typed onto those names.

A label that merges classes, such as CODRAS's ``HE_MA`` ("a haemorrhage or a
microaneurysm, we don't say which"), is a *partial* label, not a class: the map
declares its members (``partial: {HE_MA: [HE, MA]}``), the model has outputs only
for the members, a merged box trains as positive for their union
(``detection.model.partial_label_loss``) and evaluation merges the members'
predictions back into the partial label (``detection.metrics.merge_partial``).
Turning a merged box into either part would invent a label the annotator never
gave; making it a class of its own would make the model report a vocabulary
the user never asked for.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from lesiondet.errors import LesiondetError

#: Canonical classes in the order a default model uses.
CANONICAL = ("MA", "HE", "EX", "SE", "OD")
#: Canonical partial labels: a box that is one of the members, the annotator did not say which.
CANONICAL_PARTIAL: dict[str, tuple[str, ...]] = {"HE_MA": ("HE", "MA")}

#: What people write in labelImg for each canonical class (matched case-insensitively).
DEFAULT_ALIASES: dict[str, str] = {
    "microaneurysm": "MA", "microaneurysms": "MA", "micro_aneurysm": "MA",
    "haemorrhage": "HE", "hemorrhage": "HE", "haemorrhages": "HE", "hemorrhages": "HE",
    "hem": "HE", "h": "HE",
    "hard_exudate": "EX", "hard_exudates": "EX", "exudate": "EX", "exudates": "EX",
    "soft_exudate": "SE", "soft_exudates": "SE", "cotton_wool_spot": "SE",
    "cotton_wool_spots": "SE", "cws": "SE",
    "optic_disc": "OD", "optic_disk": "OD", "disc": "OD",
    "he_ma": "HE_MA", "haemorrhage_microaneurysm": "HE_MA",
}

def normalise(name: str) -> str:
    """Fold case, spaces and hyphens so 'Hard Exudate' and 'hard-exudate' match."""
    return re.sub(r"[\s\-]+", "_", name.strip()).lower()


@dataclass(frozen=True)
class LabelMap:
    """Ordered classes plus aliases. ``index(name)`` is 1-based (0 is background)."""

    classes: tuple[str, ...]
    aliases: Mapping[str, str] = field(default_factory=dict)
    ignore: frozenset[str] = frozenset()
    source: str = "default"
    #: partial label -> the classes it may be (``HE_MA: (HE, MA)``); its boxes index after the classes
    partial: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.classes:
            raise LesiondetError(self.source, "label map has no classes", "list them under 'classes:'")
        if len(set(self.classes)) != len(self.classes):
            raise LesiondetError(self.source, "label map lists a class twice", "make 'classes:' unique")
        for name, members in self.partial.items():
            if name in self.classes:
                raise LesiondetError(self.source, f"'{name}' is both a class and a partial label",
                                     f"remove '{name}' from 'classes:' (the model reports its members)")
            missing = [m for m in members if m not in self.classes]
            if len(members) < 2 or missing:
                raise LesiondetError(self.source, f"partial label '{name}' needs two or more member classes"
                                     + (f" ('{missing[0]}' is not a class)" if missing else ""),
                                     f"list '{name}: [A, B]' with A and B under 'classes:'")
        for alias, target in self.aliases.items():
            if target not in self.classes and target not in self.partial:
                raise LesiondetError(
                    self.source, f"alias '{alias}' points to '{target}', which is not a class",
                    f"add '{target}' to 'classes:' or fix the alias")

    def resolve(self, name: str) -> str | None:
        """Canonical class for an annotated name; None if the name is in ``ignore``.

        Raises ``KeyError`` for a name the map does not know.
        """
        key = normalise(name)
        if key in self.ignore:
            return None
        for cls in self.labels:
            if normalise(cls) == key:
                return cls
        if key in self.aliases:
            return self.aliases[key]
        raise KeyError(name)

    @property
    def labels(self) -> tuple[str, ...]:
        """Every name a box may carry: the classes, then the partial labels."""
        return self.classes + tuple(self.partial)

    def index(self, cls: str) -> int:
        """1-based: classes are 1..K, partial labels K+1.. (training targets only; the model has no such output)."""
        return self.labels.index(cls) + 1

    def name(self, index: int) -> str:
        return self.labels[index - 1]

    def members(self, label: str) -> tuple[str, ...]:
        """The classes a box of ``label`` may be: itself, or a partial label's members."""
        return tuple(self.partial[label]) if label in self.partial else (label,)

    def member_matrix(self):
        """Bool tensor ``[1 + labels, 1 + classes]``: row i marks the outputs target index i may be (0: background)."""
        import torch

        m = torch.zeros(len(self.labels) + 1, self.num_classes, dtype=torch.bool)
        m[0, 0] = True
        for i, lab in enumerate(self.labels, 1):
            for c in self.members(lab):
                m[i, self.classes.index(c) + 1] = True
        return m

    def scored_names(self, present: Iterable[str] | None = None) -> list[str]:
        """Names evaluation scores: partial labels (present in the ground truth) replace their members."""
        present = set(self.labels if present is None else present)
        merged = [p for p in self.partial if p in present]
        hidden = {m for p in merged for m in self.partial[p]}
        return [c for c in self.classes if c not in hidden] + merged

    @property
    def num_classes(self) -> int:
        """Number of model outputs including background."""
        return len(self.classes) + 1

    def restrict(self, present: Iterable[str]) -> "LabelMap":
        """The same map with only the classes in ``present`` (canonical order kept)."""
        present = set(present)
        partial = {p: m for p, m in self.partial.items() if p in present}
        keep = tuple(c for c in self.classes if c in present or any(c in m for m in partial.values()))
        if not keep:
            raise LesiondetError(self.source, "no annotated object uses any class of the label map",
                                 "check the <name> tags or pass --labels")
        aliases = {a: t for a, t in self.aliases.items() if t in keep or t in partial}
        # Names of dropped classes are still known words; ignore them rather than fail.
        dropped = {normalise(c) for c in self.labels if c not in keep and c not in partial}
        dropped |= {a for a in self.aliases if a not in aliases}
        return LabelMap(keep, aliases, self.ignore | frozenset(dropped), self.source, partial)

    def to_dict(self) -> dict:
        d = {"classes": list(self.classes), "aliases": dict(self.aliases), "ignore": sorted(self.ignore)}
        if self.partial:
            d["partial"] = {k: list(v) for k, v in self.partial.items()}
        return d

    @classmethod
    def from_dict(cls, d: Mapping, source: str = "label map") -> "LabelMap":
        classes = d.get("classes")
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise LesiondetError(source, "'classes:' must be a list of names", "see configs/datasets/*.yaml")
        partial = d.get("partial") or {}
        if not isinstance(partial, Mapping) or not all(
                isinstance(v, (list, tuple)) and all(isinstance(m, str) for m in v) for v in partial.values()):
            raise LesiondetError(source, "'partial:' must map a merged label to a list of classes",
                                 "write e.g. 'partial: {HE_MA: [HE, MA]}'")
        partial = {str(k): tuple(v) for k, v in partial.items()}
        aliases = {normalise(str(k)): str(v) for k, v in (d.get("aliases") or {}).items()}
        if d.get("default_aliases", True):
            aliases = {**{k: v for k, v in DEFAULT_ALIASES.items() if v in classes or v in partial}, **aliases}
        ignore = frozenset(normalise(str(x)) for x in (d.get("ignore") or []))
        return cls(tuple(classes), aliases, ignore, source, partial)


def default_label_map() -> LabelMap:
    return LabelMap.from_dict({"classes": list(CANONICAL), "partial": {k: list(v) for k, v in CANONICAL_PARTIAL.items()}},
                              source="default label map")


def load_label_map(path: str | Path | None) -> LabelMap:
    """Read a label map YAML; ``None`` gives the default canonical map.

    The file may be a bare label map or a dataset config with a ``labels:`` section.
    """
    if path is None:
        return default_label_map()
    from lesiondet.fileio import read_yaml

    d = read_yaml(path, "label map", "pass a YAML file with 'classes:' (see configs/datasets/*.yaml)")
    if "labels" in d and isinstance(d["labels"], dict):
        d = d["labels"]
    return LabelMap.from_dict(d, source=str(path))
