"""Other annotation formats to labelImg VOC and back: lesion masks, COCO JSON, YOLO txt.

Coordinates, once and for all (``lesiondet.io.voc`` keeps boxes 0-based and continuous):

* VOC (labelImg): 1-based inclusive pixels, ``xmin = x0 + 1``, ``xmax = x1``;
* COCO: 0-based ``[x, y, w, h]`` = ``[x0, y0, x1 - x0, y1 - y0]``;
* YOLO: ``class cx cy w h`` normalised by the image width and height;
* masks: the pixels of an 8-connected component ``[x, x + w) x [y, y + h)`` are the box
  ``(x, y, x + w, y + h)``, so a one-pixel lesion is a 1x1 VOC box.

A converted folder is a labelImg folder (``Annotations/`` + ``JPEGImages/`` + ``predefined_classes.txt``)
written to a temporary folder and renamed into place, so a failed or killed run leaves nothing half-written.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from lesiondet.errors import LesiondetError
from lesiondet.images import IMAGE_SUFFIXES
from lesiondet.io.voc import VocObject, VocRecord, image_size, voc_xml

#: The colours of the IDRiD segmentation masks in ../shared/data/fundus/idrid/masks (RGB).
IDRID_COLOURS: dict[str, tuple[int, int, int]] = {
    "MA": (255, 255, 255), "HE": (255, 0, 0), "EX": (0, 0, 255), "SE": (0, 255, 0), "OD": (255, 255, 0)}
YOLO_DECIMALS = 6  # normalised floats written with 6 decimals: under 0.01 px on a 4288-px image


# --------------------------------------------------------------------------- masks
def load_colours(spec: str | Path) -> dict[str, tuple[int, int, int]]:
    """``idrid`` or a YAML file mapping each class to ``[R, G, B]``."""
    if str(spec).lower() == "idrid":
        return dict(IDRID_COLOURS)
    from lesiondet.fileio import read_yaml

    raw = read_yaml(Path(spec), "colour map", "write one 'CLASS: [R, G, B]' line per class")
    out: dict[str, tuple[int, int, int]] = {}
    for name, rgb in raw.items():
        if not (isinstance(rgb, (list, tuple)) and len(rgb) == 3 and all(isinstance(v, int) and 0 <= v <= 255
                                                                          for v in rgb)):
            raise LesiondetError(spec, f"class '{name}' has colour {rgb!r}", "give three whole numbers 0-255: [R, G, B]")
        out[str(name)] = (int(rgb[0]), int(rgb[1]), int(rgb[2]))
    if len(set(out.values())) < len(out):
        raise LesiondetError(spec, "two classes share a colour", "give every class its own colour")
    return out


def components(binary: np.ndarray, min_area: int = 0, merge_distance: float = 0) -> list[tuple[float, ...]]:
    """Boxes of the 8-connected components of ``binary``; small ones dropped, near ones joined."""
    import cv2

    n, _, stats, _ = cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=8)
    boxes = [(float(x), float(y), float(x + w), float(y + h)) for x, y, w, h, area in stats[1:]
             if area >= min_area]
    return _join_near(boxes, merge_distance) if merge_distance > 0 else boxes


def _join_near(boxes: list[tuple[float, ...]], distance: float) -> list[tuple[float, ...]]:
    """Union of boxes whose gap (in x and in y) is at most ``distance`` pixels, until none is."""
    boxes = list(boxes)
    merged = True
    while merged:
        merged = False
        out: list[list[float]] = []
        for b in boxes:
            for o in out:
                if max(o[0] - b[2], b[0] - o[2], o[1] - b[3], b[1] - o[3]) <= distance:
                    o[:] = [min(o[0], b[0]), min(o[1], b[1]), max(o[2], b[2]), max(o[3], b[3])]
                    merged = True
                    break
            else:
                out.append(list(b))
        boxes = [tuple(o) for o in out]
    return boxes


def _read_mask(path: Path, colour: bool) -> np.ndarray:
    """An 8-bit mask: (H, W, 3) RGB for colour masks, (H, W) for one class (palette indices kept)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode in ("I;16", "I;16B", "I", "F"):
                raise LesiondetError(path, f"mask is {im.mode} (not 8-bit)", "save the mask as an 8-bit PNG")
            im.load()
            arr = np.asarray(im.convert("RGB") if colour else (im if im.mode in ("L", "P", "1") else im.convert("L")))
    except (UnidentifiedImageError, OSError) as e:
        raise LesiondetError(path, f"not a readable image ({type(e).__name__})", "re-export the mask as PNG") from None
    return arr


def _mask_objects(mask: np.ndarray, colours: Mapping[str, tuple[int, int, int]], path: Path, min_area: int,
                  merge_distance: float, unknown_ok: bool, notes: list[str]) -> list[VocObject]:
    flat = mask.reshape(-1, 3)
    codes = (flat[:, 0].astype(np.int64) << 16) | (flat[:, 1].astype(np.int64) << 8) | flat[:, 2]
    found, counts = np.unique(codes, return_counts=True)
    known = {(r << 16) | (g << 8) | b for r, g, b in colours.values()} | {0}
    unknown = [(int(c), int(n)) for c, n in zip(found, counts) if int(c) not in known]
    if unknown:
        listed = ", ".join(f"({c >> 16}, {(c >> 8) & 255}, {c & 255}): {n} px" for c, n in
                           sorted(unknown, key=lambda cn: -cn[1])[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        if not unknown_ok:
            raise LesiondetError(path, f"{len(unknown)} colour(s) not in the colour map: {listed}{more}",
                                 "add them to --colours (CLASS: [R, G, B]), or pass --unknown-colours ignore "
                                 "to count those pixels as background")
        notes.append(f"{path.name}: {len(unknown)} colour(s) not in the colour map, counted as background: "
                     f"{listed}{more}")
    objs = []
    for name, (r, g, b) in colours.items():
        binary = (codes == ((r << 16) | (g << 8) | b)).reshape(mask.shape[:2])
        objs += [VocObject(name, box) for box in components(binary, min_area, merge_distance)]
    return objs


def mask_index(folder: Path) -> dict[str, Path]:
    """Masks in ``folder`` by the image stem they belong to: ``stem.ext`` or ``stem_ANYTHING.ext``
    (IDRiD's ``IDRiD_01_MA.tif``); an exact stem wins over a prefix."""
    index: dict[str, Path] = {}
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES + (".gif",)) \
        if folder.is_dir() else []
    for p in files:  # prefixes first, so the exact stems written after them take precedence
        parts = p.stem.split("_")
        for k in range(1, len(parts)):
            index.setdefault("_".join(parts[:k]), p)
    for p in files:
        index[p.stem] = p
    return index


def _images(folder: str | Path) -> list[tuple[Path, int, int]]:
    """``(path, width, height)`` of every image in ``folder``; none is an error."""
    from lesiondet.images import list_images

    return [(p, *image_size(p)) for p in list_images(folder)]


def masks_to_records(masks: str | Path, images: str | Path, colours: str | Path | None = None,
                     class_dirs: bool = False, min_area: int = 0, merge_distance: float = 0,
                     unknown_colours: str = "error", notes: list[str] | None = None) -> list[VocRecord]:
    """One record per image with boxes from its mask(s): one colour-coded mask, or one binary mask per class.

    A colour outside the map is an error naming the mask, the colours and their pixel counts; with
    ``unknown_colours="ignore"`` those pixels count as background and ``notes`` says so.
    """
    notes = notes if notes is not None else []
    from lesiondet.fileio import list_dir

    masks, images = Path(masks), Path(images)
    if (colours is None) == (not class_dirs):
        raise LesiondetError(None, "masks need either --colours or --class-dirs", "pass one of them")
    cmap = load_colours(colours) if colours is not None else None
    class_folders = sorted(p for p in list_dir(masks) if p.is_dir()) if class_dirs else []
    if class_dirs and not class_folders:
        raise LesiondetError(masks, "no class sub-folders", "put each class's masks in a folder named after it")
    indexes = [(folder, mask_index(folder)) for folder in class_folders or [masks]]
    records = []
    for img, w, h in _images(images):
        objs: list[VocObject] = []
        for folder, index in indexes:
            m = index.get(img.stem)
            if m is None:
                if class_dirs:
                    continue  # this class is absent from this image
                raise LesiondetError(img, f"no mask named {img.stem}.* in {masks}", "give every image its mask")
            arr = _read_mask(m, colour=cmap is not None)
            if arr.shape[:2] != (h, w):
                raise LesiondetError(m, f"mask is {arr.shape[1]}x{arr.shape[0]} but its image is {w}x{h}",
                                     f"export the mask at the size of {img.name}")
            if cmap is not None:
                objs += _mask_objects(arr, cmap, m, min_area, merge_distance, unknown_colours == "ignore", notes)
            else:
                objs += [VocObject(folder.name, b) for b in components(arr > 0, min_area, merge_distance)]
        records.append(VocRecord(img, w, h, tuple(objs)))
    return records


# --------------------------------------------------------------------------- COCO
def records_to_coco(records: Sequence[VocRecord], classes: Sequence[str]) -> dict[str, Any]:
    """A COCO detection dict; ``difficult`` travels as ``attributes.difficult`` (CVAT's place for it)."""
    cats = [{"id": i + 1, "name": c, "supercategory": "lesion"} for i, c in enumerate(classes)]
    cid = {c: i + 1 for i, c in enumerate(classes)}
    images, anns = [], []
    for i, r in enumerate(records, 1):
        images.append({"id": i, "file_name": r.image_path.name, "width": r.width, "height": r.height})
        for o in r.objects:
            x0, y0, x1, y1 = o.box
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cid[o.label],
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0,
                         "segmentation": [], "attributes": {"difficult": bool(o.difficult)},
                         **({"score": o.score} if o.score is not None else {})})
    return {"images": images, "annotations": anns, "categories": cats}


def coco_to_records(json_path: str | Path, images: str | Path) -> tuple[list[VocRecord], list[str]]:
    """Records and class names from a COCO detection file, read by pycocotools' own loader."""
    from pycocotools.coco import COCO

    p, images = Path(json_path), Path(images)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LesiondetError(p, f"not a readable COCO JSON file ({type(e).__name__})", "check the file") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            raise LesiondetError(p, f"no '{key}' list", "pass a COCO detection file (images, annotations, categories)")
    coco = COCO()
    coco.dataset = data
    try:
        coco.createIndex()
    except (KeyError, TypeError) as e:
        raise LesiondetError(p, f"an entry lacks the key {e}", "every image needs id and file_name, every "
                             "annotation id, image_id, category_id and bbox") from None
    cats = {c["id"]: str(c["name"]) for c in data["categories"]}
    records = []
    for img_id, img in sorted(coco.imgs.items()):
        path = images / Path(str(img["file_name"])).name
        if not path.is_file():
            raise LesiondetError(p, f"image {img['file_name']} (id {img_id}) is not in {images}",
                                 "pass --images DIR holding the files the JSON names")
        w, h = (int(img["width"]), int(img["height"])) if "width" in img and "height" in img else image_size(path)
        objs = []
        for a in coco.imgToAnns.get(img_id, []):
            if a["category_id"] not in cats:
                raise LesiondetError(p, f"annotation {a.get('id')} has category_id {a['category_id']}, "
                                        "which is not in categories", "add the category or drop the annotation")
            x, y, bw, bh = map(float, a["bbox"])
            diff = bool((a.get("attributes") or {}).get("difficult", a.get("iscrowd", 0)))
            objs.append(VocObject(cats[a["category_id"]], (x, y, x + bw, y + bh), diff, a.get("score")))
        records.append(VocRecord(path, w, h, tuple(objs)))
    bad = set(coco.anns) and {a["image_id"] for a in data["annotations"]} - set(coco.imgs)
    if bad:
        raise LesiondetError(p, f"annotations refer to image id(s) {sorted(bad)[:5]} that are not in images",
                             "add those images or drop their annotations")
    return records, [cats[k] for k in sorted(cats)]


# --------------------------------------------------------------------------- YOLO
def read_names(path: str | Path) -> list[str]:
    """Class names from Ultralytics' ``data.yaml`` (``names:`` list or dict) or a one-per-line text file."""
    p = Path(path)
    if p.suffix.lower() in (".yaml", ".yml"):
        from lesiondet.fileio import read_yaml

        names = read_yaml(p, "YOLO names", "give 'names: [MA, HE, ...]'").get("names")
        if isinstance(names, dict):
            names = [names[k] for k in sorted(names)]
        if not isinstance(names, list) or not names:
            raise LesiondetError(p, "no 'names' list", "give 'names: [MA, HE, ...]' as Ultralytics' data.yaml does")
        return [str(n) for n in names]
    try:
        names = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except OSError as e:
        raise LesiondetError(p, f"cannot read the class names ({e.strerror})", "pass classes.txt or data.yaml") from None
    if not names:
        raise LesiondetError(p, "no class names", "write one class name per line")
    return names


def yolo_to_records(labels: str | Path, names: str | Path, images: str | Path) -> tuple[list[VocRecord], list[str]]:
    """Records from YOLO txt files (``class cx cy w h``, normalised); an image without a txt has no objects."""

    classes, labels = read_names(names), Path(labels)
    records = []
    for img, w, h in _images(images):
        txt = labels / f"{img.stem}.txt"
        objs = []
        lines = txt.read_text(encoding="utf-8").splitlines() if txt.is_file() else []
        for n, line in enumerate(lines, 1):
            f = line.split()
            if not f:
                continue
            if len(f) != 5:
                raise LesiondetError(txt, f"line {n} has {len(f)} fields", "write 'class cx cy w h' (5 fields)")
            try:
                k, (cx, cy, bw, bh) = int(f[0]), map(float, f[1:])
            except ValueError:
                raise LesiondetError(txt, f"line {n} is not numbers", "write 'class cx cy w h'") from None
            if not 0 <= k < len(classes):
                raise LesiondetError(txt, f"line {n}: class {k} is not in {names} ({len(classes)} names)",
                                     "add the name or fix the class index")
            x0, y0, x1, y1 = cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2
            tol = 1e-6
            if not (all(0 <= v <= 1 for v in (cx, cy, bw, bh)) and bw > 0 and bh > 0
                    and -tol <= x0 and x1 <= 1 + tol and -tol <= y0 and y1 <= 1 + tol):
                raise LesiondetError(txt, f"line {n}: box ({cx}, {cy}, {bw}, {bh}) is outside [0, 1]",
                                     "YOLO coordinates are centre and size divided by the image width and height")
            # back to pixels; 6 decimals bring integer pixels back within 0.01 px, so snap those
            px = [min(max(v, 0.0), 1.0) * s for v, s in ((x0, w), (y0, h), (x1, w), (y1, h))]
            objs.append(VocObject(classes[k], tuple(float(round(v)) if abs(v - round(v)) < 0.01 else v for v in px)))
        records.append(VocRecord(img, w, h, tuple(objs)))
    return records, classes


def yolo_lines(record: VocRecord, classes: Sequence[str]) -> str:
    out = []
    for o in record.objects:
        x0, y0, x1, y1 = o.box
        vals = ((x0 + x1) / 2 / record.width, (y0 + y1) / 2 / record.height, (x1 - x0) / record.width,
                (y1 - y0) / record.height)
        out.append(f"{list(classes).index(o.label)} " + " ".join(f"{v:.{YOLO_DECIMALS}f}" for v in vals))
    return "\n".join(out) + ("\n" if out else "")


# --------------------------------------------------------------------------- writing folders
class _Staging:
    """Write a whole output folder beside ``out`` and rename it into place at the end."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        if self.out.exists() and any(self.out.iterdir()):
            raise LesiondetError(self.out, "output folder exists and is not empty", "choose a new --out")
        self.tmp = self.out.parent / f".{self.out.name}.converting-{os.getpid()}"

    def __enter__(self) -> Path:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir()
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        if self.out.exists():
            self.out.rmdir()  # empty, checked above
        os.replace(self.tmp, self.out)


def _place_image(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)  # same file system: no copy of a 4288x2848 photograph
    except OSError:
        shutil.copy2(src, dst)


def write_labelimg_folder(records: Iterable[VocRecord], classes: Sequence[str], out: str | Path,
                          extra: Mapping[str, Path] | None = None) -> Path:
    """``out/Annotations/*.xml``, ``out/JPEGImages/*`` and ``out/predefined_classes.txt`` for labelImg.

    ``extra`` maps further files to place (relative name → source), e.g. the masks kept beside the XML.
    """
    records = list(records)
    with _Staging(out) as tmp:
        for rel, src in (extra or {}).items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            _place_image(Path(src), tmp / rel)
        (tmp / "Annotations").mkdir()
        (tmp / "JPEGImages").mkdir()
        for r in records:
            _place_image(r.image_path, tmp / "JPEGImages" / r.image_path.name)
            final = VocRecord(Path(out) / "JPEGImages" / r.image_path.name, r.width, r.height, r.objects)
            (tmp / "Annotations" / f"{r.image_path.stem}.xml").write_bytes(voc_xml(final))
        (tmp / "predefined_classes.txt").write_text("\n".join(classes) + "\n", encoding="utf-8")
    return Path(out)


def write_coco(records: Sequence[VocRecord], classes: Sequence[str], out: str | Path) -> Path:
    from lesiondet.fileio import write_json

    write_json(out, records_to_coco(records, classes))
    return Path(out)


def write_yolo(records: Sequence[VocRecord], classes: Sequence[str], out: str | Path) -> Path:
    """Ultralytics' layout: ``images/`` and ``labels/`` side by side, ``classes.txt`` and ``data.yaml``."""
    import yaml

    with _Staging(out) as tmp:
        (tmp / "images").mkdir()
        (tmp / "labels").mkdir()
        for r in records:
            _place_image(r.image_path, tmp / "images" / r.image_path.name)
            (tmp / "labels" / f"{r.image_path.stem}.txt").write_text(yolo_lines(r, classes), encoding="utf-8")
        (tmp / "classes.txt").write_text("\n".join(classes) + "\n", encoding="utf-8")
        (tmp / "data.yaml").write_text(yaml.safe_dump({"path": str(Path(out).resolve()), "train": "images",
                                                       "val": "images", "names": list(classes)}, sort_keys=False))
    return Path(out)
