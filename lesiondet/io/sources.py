"""Training sources: one or more labelImg folders, each with the label map its annotators used.

A source is a folder (read with ``--labels`` or the canonical map) or a dataset
YAML such as ``configs/datasets/heimed.yaml`` (``name``, ``path``, ``labels``).
Several sources train one model over the union of their classes; each image
remembers which classes its source annotates, so a dataset without optic-disc
boxes does not teach the model that there is no optic disc.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from lesiondet.errors import LesiondetError
from lesiondet.io.labels import LabelMap, load_label_map
from lesiondet.io.voc import VocRecord, present_labels, read_voc_dir


@dataclass(frozen=True)
class Source:
    """One labelImg folder and how to read it."""

    name: str
    voc: str
    labels: Mapping[str, Any]  # LabelMap.to_dict()
    explicit: bool  # the label map was given, so it lists every class the annotators labelled

    def label_map(self) -> LabelMap:
        return LabelMap.from_dict({**self.labels, "default_aliases": False}, f"{self.name} label map")

    def to_dict(self) -> dict:
        return {"name": self.name, "voc": self.voc, "labels": dict(self.labels), "explicit": self.explicit}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Source":
        return cls(d["name"], d["voc"], d["labels"], d["explicit"])


def parse_source(spec: str | Path, labels: str | Path | None = None) -> Source:
    """A folder, or a dataset YAML whose ``path`` is relative to the working directory or to the YAML."""
    p = Path(spec)
    if p.suffix.lower() in (".yaml", ".yml"):
        from lesiondet.fileio import read_yaml

        d = read_yaml(p, "dataset config", "pass a folder or a file like configs/datasets/codras.yaml")
        if "path" not in d or "labels" not in d:
            raise LesiondetError(p, "a dataset config needs 'path:' and 'labels:'", "see configs/datasets/")
        folder = Path(str(d["path"]))
        if not folder.is_absolute() and not folder.exists() and (p.parent / folder).exists():
            folder = p.parent / folder
        lm = load_label_map(p)
        return Source(str(d.get("name", p.stem)), str(folder), lm.to_dict(), True)
    lm = load_label_map(labels)
    return Source(p.resolve().name if p.name in ("", ".", "..") else p.name, str(p), lm.to_dict(), labels is not None)


def read_sources(sources: Sequence[Source], images: str | Path | None = None
                 ) -> tuple[list[VocRecord], LabelMap, dict[str, list[str]]]:
    """Records of every source, the union label map, and the classes each source annotates.

    A source read with the default map annotates the classes found in it.
    """
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise LesiondetError(None, f"two training sources share the name '{max(names, key=names.count)}'",
                             "give each dataset YAML a distinct 'name:'")
    records: list[VocRecord] = []
    annotated: dict[str, list[str]] = {}
    classes: list[str] = []
    aliases: dict[str, str] = {}
    partial: dict[str, tuple[str, ...]] = {}
    for s in sources:
        lm = s.label_map()
        recs = read_voc_dir(s.voc, lm, images, source=s.name)
        present = present_labels(recs)
        if not s.explicit and present:
            lm = lm.restrict(present)
        # A partial label's members count as annotated: an unboxed region of a CODRAS photograph is
        # neither a haemorrhage nor a microaneurysm.
        own = list(lm.classes) if s.explicit or present else []
        annotated[s.name] = own
        classes += [c for c in own if c not in classes]
        for p, members in lm.partial.items():
            if partial.setdefault(p, members) != members:
                raise LesiondetError(s.voc, f"partial label '{p}' has members {list(members)} here but "
                                     f"{list(partial[p])} in another source", "declare it the same way everywhere")
        aliases.update({a: t for a, t in lm.aliases.items() if (t in own or t in lm.partial) and a not in aliases})
        records += recs
    if not classes:
        raise LesiondetError(sources[0].voc, "no annotated object uses any class of the label map",
                             "check the <name> tags or pass --labels")
    partial = {p: m for p, m in partial.items() if all(c in classes for c in m)}  # a source without those boxes
    aliases = {a: t for a, t in aliases.items() if t in classes or t in partial}
    union = LabelMap(tuple(classes), aliases, source="+".join(names), partial=partial)
    return records, union, annotated
