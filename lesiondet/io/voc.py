"""Read and write Pascal VOC XML as labelImg writes it.

VOC pixel coordinates are 1-based and inclusive: ``xmin=5, xmax=5`` is the
single pixel column 5. Inside lesiondet boxes are 0-based, continuous,
``(x0, y0, x1, y1)`` with pixel *i* covering ``[i, i+1)``, which is what
torchvision and pycocotools expect. The conversion happens here and only here:
``x0 = xmin - 1``, ``x1 = xmax`` (and back on writing).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Sequence

from lxml import etree

from lesiondet.errors import ImageError, VocError
from lesiondet.fileio import atomic_path
from lesiondet.images import IMAGE_SUFFIXES
from lesiondet.io.labels import LabelMap

#: Boxes may overshoot the image by this many pixels (tools that write 0-based
#: or W+1 coordinates); they are clipped. Anything further out is an error.
EDGE_TOLERANCE = 1.0

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class VocObject:
    """One box: a canonical class name, a 0-based ``(x0, y0, x1, y1)`` box, flags."""

    label: str
    box: Box
    difficult: bool = False
    score: float | None = None
    #: For a detection: whether the grading rules count it (its class's counted threshold) and whether
    #: the drawing shows it (the display threshold). None: not a thresholded detection (ground truth).
    counted: bool | None = None
    shown: bool | None = None

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return self.width * self.height


@dataclass(frozen=True)
class VocRecord:
    """One annotated image."""

    image_path: Path
    width: int
    height: int
    objects: tuple[VocObject, ...] = ()
    xml_path: Path | None = None
    source: str = ""

    @property
    def stem(self) -> str:
        return (self.xml_path or self.image_path).stem

    def labels(self) -> set[str]:
        return {o.label for o in self.objects}

    def with_objects(self, objects: Iterable[VocObject]) -> "VocRecord":
        return replace(self, objects=tuple(objects))


def voc_to_box(xmin: float, ymin: float, xmax: float, ymax: float) -> Box:
    """1-based inclusive VOC pixels → 0-based continuous box."""
    return (xmin - 1.0, ymin - 1.0, float(xmax), float(ymax))


def box_to_voc(box: Sequence[float]) -> tuple[float, float, float, float]:
    """0-based continuous box → 1-based inclusive VOC pixels."""
    x0, y0, x1, y1 = box
    return (x0 + 1.0, y0 + 1.0, float(x1), float(y1))


def annotations_dir(path: str | Path) -> Path:
    """The folder holding the XML: ``path`` itself, or ``path/Annotations`` in VOC layout."""
    path = Path(path)
    if not path.exists():
        raise VocError(path, "folder not found", "pass the folder that holds the labelImg .xml files")
    if not path.is_dir():
        raise VocError(path, "not a folder", "pass the folder that holds the labelImg .xml files")
    sub = path / "Annotations"
    return sub if sub.is_dir() else path


#: sub-folders that split a labelImg folder by hand, as many labelImg users do (and the shipped sample is)
SPLITS = ("train", "val", "test")


def split_folders(path: str | Path) -> dict[str, Path] | None:
    """``{"train": ..., "val": ..., ["test": ...]}`` when ``path`` holds ``train/`` and ``val/`` labelImg
    folders (each with its .xml, or an ``Annotations/``); None for a plain labelImg folder."""
    path = Path(path)

    def xml_in(d: Path) -> bool:
        return any(p.suffix.lower() == ".xml" for p in d.iterdir())

    try:  # a folder that cannot be listed is not split; reading it says why, in one line
        if not path.is_dir() or xml_in(path) or (path / "Annotations").is_dir():
            return None
        found = {name: path / name for name in SPLITS
                 if (path / name).is_dir() and ((path / name / "Annotations").is_dir() or xml_in(path / name))}
    except OSError:
        return None
    return found if {"train", "val"} <= set(found) else None


def find_image(xml_path: Path, filename: str, images_dir: Path | None = None) -> Path:
    """Locate the image an XML names: ``--images DIR``, next to the XML, or ``../JPEGImages``."""
    folders = [d for d in (images_dir, xml_path.parent, xml_path.parent.parent / "JPEGImages") if d]
    names = [filename] if filename else []
    # labelImg users rename and re-encode images; fall back to the XML stem with any suffix.
    stems = {Path(filename).stem, xml_path.stem} if filename else {xml_path.stem}
    names += [s + suf for s in stems for suf in IMAGE_SUFFIXES + tuple(x.upper() for x in IMAGE_SUFFIXES)]
    for folder in folders:
        for name in names:
            candidate = folder / name
            if candidate.is_file():
                return candidate
    looked = ", ".join(str(f) for f in folders)
    raise ImageError(xml_path, f"image '{filename or xml_path.stem}' not found (looked in {looked})",
                     "put it next to the XML or in ../JPEGImages, or pass --images DIR")


def _text(node: etree._Element, tag: str) -> str | None:
    child = node.find(tag)
    if child is None or child.text is None:
        return None
    return child.text.strip()


def _number(xml_path: Path, node: etree._Element, tag: str, what: str) -> float:
    raw = _text(node, tag)
    if raw is None:
        raise VocError(xml_path, f"{what} has no <{tag}>", "fix or re-save the file in labelImg")
    try:
        value = float(raw)
    except ValueError:
        raise VocError(xml_path, f"{what} <{tag}> is '{raw}', not a number",
                       "fix or re-save the file in labelImg") from None
    if not math.isfinite(value):
        raise VocError(xml_path, f"{what} <{tag}> is '{raw}'", "use finite pixel coordinates")
    return value


def image_size(image_path: Path) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(image_path) as im:
            return im.size
    except (OSError, UnidentifiedImageError):
        raise ImageError(image_path, "cannot read the image header",
                         "replace the file with a valid JPEG or PNG") from None


def parse_voc(xml_path: str | Path, label_map: LabelMap, images_dir: str | Path | None = None,
              source: str = "", need_image: bool = True) -> VocRecord:
    """Parse one labelImg XML into a ``VocRecord`` with canonical labels and 0-based boxes.

    Raises ``VocError`` for malformed XML, unknown labels and invalid boxes, and
    ``ImageError`` when the image cannot be found. Prediction files, which are
    scored without their pixels, pass ``need_image=False``.
    """
    xml_path = Path(xml_path)
    if not xml_path.is_file():
        raise VocError(xml_path, "annotation file not found", "check the path")
    try:
        root = etree.parse(str(xml_path), etree.XMLParser(resolve_entities=False, no_network=True)).getroot()
    except etree.XMLSyntaxError as e:
        raise VocError(xml_path, f"malformed XML ({e.msg}, line {e.lineno})",
                       "fix the file or re-save it in labelImg") from None
    except (OSError, etree.LxmlError) as e:  # lxml reports some encoding faults as I/O errors
        raise VocError(xml_path, f"cannot be read as XML ({str(e).split(': ')[-1][:120]})",
                       "fix the file or re-save it in labelImg") from None
    if root.tag != "annotation":
        raise VocError(xml_path, f"root element is <{root.tag}>, not <annotation>",
                       "this is not a Pascal VOC file; re-save it in labelImg")

    filename = _text(root, "filename") or ""
    try:
        image_path = find_image(xml_path, filename, Path(images_dir) if images_dir else None)
    except ImageError:
        if need_image:
            raise
        image_path = xml_path.parent / (filename or xml_path.stem)

    size = root.find("size")
    width = height = 0
    if size is not None and _text(size, "width") and _text(size, "height"):
        width = int(_number(xml_path, size, "width", "<size>"))
        height = int(_number(xml_path, size, "height", "<size>"))
    if width <= 0 or height <= 0:  # labelImg writes 0 when it could not read the image
        if not image_path.is_file():
            raise VocError(xml_path, "<size> is missing and the image is not there to measure",
                           "add <size><width>/<height> or put the image next to the XML")
        width, height = image_size(image_path)

    objects = []
    for i, obj in enumerate(root.iter("object"), start=1):
        what = f"object {i}"
        name = _text(obj, "name")
        if not name:
            raise VocError(xml_path, f"{what} has no <name>", "label it in labelImg")
        try:
            label = label_map.resolve(name)
        except KeyError:
            raise VocError(xml_path, f"unknown label '{name}' ({what})",
                           f"add it to 'classes:' or 'aliases:' of the label map ({label_map.source}) "
                           "or pass --labels") from None
        bnd = obj.find("bndbox")
        if bnd is None:
            raise VocError(xml_path, f"{what} ('{name}') has no <bndbox>", "draw its box in labelImg")
        coords = [_number(xml_path, bnd, t, f"{what} ('{name}')") for t in ("xmin", "ymin", "xmax", "ymax")]
        x0, y0, x1, y1 = voc_to_box(*coords)
        if x1 <= x0 or y1 <= y0:
            raise VocError(xml_path, f"{what} ('{name}') has zero or negative size "
                           f"(xmin={coords[0]:g} ymin={coords[1]:g} xmax={coords[2]:g} ymax={coords[3]:g})",
                           "redraw the box in labelImg")
        t = EDGE_TOLERANCE
        if x0 < -t or y0 < -t or x1 > width + t or y1 > height + t:
            raise VocError(xml_path, f"{what} ('{name}') lies outside the {width}x{height} image "
                           f"(xmin={coords[0]:g} ymin={coords[1]:g} xmax={coords[2]:g} ymax={coords[3]:g})",
                           "redraw the box inside the image or fix <size>")
        box = (max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1))
        if box[2] <= box[0] or box[3] <= box[1]:  # e.g. xmin=xmax=0 from a 0-based tool: nothing left inside
            raise VocError(xml_path, f"{what} ('{name}') has no area inside the {width}x{height} image "
                           f"(xmin={coords[0]:g} ymin={coords[1]:g} xmax={coords[2]:g} ymax={coords[3]:g})",
                           "redraw the box inside the image (VOC pixels start at 1)")
        if label is None:  # listed under ignore:
            continue
        difficult = (_text(obj, "difficult") or "0") not in ("0", "false", "False", "")
        score_text = _text(obj, "score")
        score = None
        if score_text is not None:
            score = _number(xml_path, obj, "score", what)
        flags = [None if _text(obj, tag) is None else _text(obj, tag) not in ("0", "false", "False")
                 for tag in ("counted", "shown")]  # detect's drawn-versus-counted marks
        objects.append(VocObject(label, box, difficult, score, *flags))
    return VocRecord(image_path, width, height, tuple(objects), xml_path, source)


def read_voc_dir(path: str | Path, label_map: LabelMap, images_dir: str | Path | None = None,
                 source: str = "", need_image: bool = True) -> list[VocRecord]:
    """Every ``*.xml`` in a labelImg folder (or ``path/Annotations``), sorted by name."""
    from lesiondet.fileio import list_dir

    folder = annotations_dir(path)
    xmls = [p for p in list_dir(folder) if p.suffix.lower() == ".xml"]
    if not xmls:
        raise VocError(folder, "no .xml annotation files in this folder",
                       "point --voc at the folder labelImg saved to (or its parent with Annotations/)")
    return [parse_voc(x, label_map, images_dir, source or folder.parent.name, need_image) for x in xmls]


def _fmt(v: float) -> str:
    return str(int(round(v))) if abs(v - round(v)) < 1e-6 else f"{v:.2f}"


def voc_xml(record: VocRecord, depth: int = 3) -> bytes:
    """Serialise a record in labelImg's layout; detections get ``<score>``, ``<counted>`` and ``<shown>``."""
    root = etree.Element("annotation")
    etree.SubElement(root, "folder").text = record.image_path.parent.name
    etree.SubElement(root, "filename").text = record.image_path.name
    etree.SubElement(root, "path").text = str(record.image_path)
    src = etree.SubElement(root, "source")
    etree.SubElement(src, "database").text = "Unknown"
    size = etree.SubElement(root, "size")
    etree.SubElement(size, "width").text = str(record.width)
    etree.SubElement(size, "height").text = str(record.height)
    etree.SubElement(size, "depth").text = str(depth)
    etree.SubElement(root, "segmented").text = "0"
    for o in record.objects:
        obj = etree.SubElement(root, "object")
        etree.SubElement(obj, "name").text = o.label
        etree.SubElement(obj, "pose").text = "Unspecified"
        etree.SubElement(obj, "truncated").text = "0"
        etree.SubElement(obj, "difficult").text = "1" if o.difficult else "0"
        if o.score is not None:
            etree.SubElement(obj, "score").text = f"{o.score:.4f}"
        for tag in ("counted", "shown"):  # what the rules counted, what the drawing shows
            if getattr(o, tag) is not None:
                etree.SubElement(obj, tag).text = "1" if getattr(o, tag) else "0"
        bnd = etree.SubElement(obj, "bndbox")
        for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), box_to_voc(o.box)):
            etree.SubElement(bnd, tag).text = _fmt(v)
    return etree.tostring(root, pretty_print=True, encoding="utf-8")


def write_voc(record: VocRecord, path: str | Path) -> Path:
    """Write ``record`` as labelImg XML, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(voc_xml(record))
    return path


def present_labels(records: Iterable[VocRecord]) -> set[str]:
    return {o.label for r in records for o in r.objects}
