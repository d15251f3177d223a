"""Class names: the canonical lesion classes, their aliases and dataset label maps.

A label map is an ordered list of class names (the model's classes, 1..K; 0 is
background) plus aliases that map what annotators typed onto those names.
Merged source classes such as ``HE_MA`` stay classes of their own: turning a
merged box into either part would invent a label the annotator never gave.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from lesiondet.errors import LesiondetError

#: Canonical classes in the order a default model uses.
CANONICAL = ("MA", "HE", "EX", "SE", "OD", "HE_MA")

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

    def __post_init__(self) -> None:
        if not self.classes:
            raise LesiondetError(self.source, "label map has no classes", "list them under 'classes:'")
        if len(set(self.classes)) != len(self.classes):
            raise LesiondetError(self.source, "label map lists a class twice", "make 'classes:' unique")
        for alias, target in self.aliases.items():
            if target not in self.classes:
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
        for cls in self.classes:
            if normalise(cls) == key:
                return cls
        if key in self.aliases:
            return self.aliases[key]
        raise KeyError(name)

    def index(self, cls: str) -> int:
        return self.classes.index(cls) + 1

    def name(self, index: int) -> str:
        return self.classes[index - 1]

    @property
    def num_classes(self) -> int:
        """Number of model outputs including background."""
        return len(self.classes) + 1

    def restrict(self, present: Iterable[str]) -> "LabelMap":
        """The same map with only the classes in ``present`` (canonical order kept)."""
        keep = tuple(c for c in self.classes if c in set(present))
        if not keep:
            raise LesiondetError(self.source, "no annotated object uses any class of the label map",
                                 "check the <name> tags or pass --labels")
        aliases = {a: t for a, t in self.aliases.items() if t in keep}
        # Names of dropped classes are still known words; ignore them rather than fail.
        dropped = {normalise(c) for c in self.classes if c not in keep}
        dropped |= {a for a, t in self.aliases.items() if t not in keep}
        return LabelMap(keep, aliases, self.ignore | frozenset(dropped), self.source)

    def to_dict(self) -> dict:
        return {"classes": list(self.classes), "aliases": dict(self.aliases),
                "ignore": sorted(self.ignore)}

    @classmethod
    def from_dict(cls, d: Mapping, source: str = "label map") -> "LabelMap":
        classes = d.get("classes")
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise LesiondetError(source, "'classes:' must be a list of names", "see configs/datasets/*.yaml")
        aliases = {normalise(str(k)): str(v) for k, v in (d.get("aliases") or {}).items()}
        if d.get("default_aliases", True):
            aliases = {**{k: v for k, v in DEFAULT_ALIASES.items() if v in classes}, **aliases}
        ignore = frozenset(normalise(str(x)) for x in (d.get("ignore") or []))
        return cls(tuple(classes), aliases, ignore, source)


def default_label_map() -> LabelMap:
    return LabelMap.from_dict({"classes": list(CANONICAL)}, source="default label map")


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
