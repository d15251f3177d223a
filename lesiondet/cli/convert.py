"""``lesiondet convert``: lesion masks, COCO or YOLO into a labelImg folder, and VOC into COCO or YOLO."""
from __future__ import annotations

import argparse

from lesiondet.cli.common import number_in, say

_non_negative = number_in(0.0, float("inf"), hi_included=True)


def add(sub) -> None:
    c = sub.add_parser("convert", help="masks/COCO/YOLO to labelImg VOC, or VOC to COCO/YOLO",
                       description="Into labelImg: --from masks|coco|yolo ... --out DIR. "
                                   "Out of VOC: --voc DIR --to coco --out F.json, or --to yolo --out DIR.")
    c.add_argument("--from", dest="source", choices=("masks", "coco", "yolo"), help="what to convert into VOC")
    c.add_argument("--to", choices=("coco", "yolo"), help="what to convert a VOC folder (--voc) into")
    c.add_argument("--voc", help="labelImg folder to convert (with --to)")
    c.add_argument("--labels", help="label map YAML for --voc (default: the canonical lesion classes)")
    c.add_argument("--images", help="the photographs (masks, coco, yolo; or for --voc if not beside the XML)")
    c.add_argument("--masks", help="one colour-coded mask per image (with --colours), or class sub-folders "
                                   "of binary masks (with --class-dirs); matched to images by file name")
    g = c.add_mutually_exclusive_group()
    g.add_argument("--colours", help="YAML mapping each class to [R, G, B], or 'idrid' (MA white, HE red, EX blue, "
                                     "SE green, OD yellow)")
    g.add_argument("--class-dirs", action="store_true", help="--masks holds a folder of binary masks per class")
    c.add_argument("--min-area", type=int, default=0, help="drop mask components of fewer pixels (default 0)")
    c.add_argument("--merge-distance", type=_non_negative, default=0,
                   help="join components of one class whose boxes are this many pixels apart or closer")
    c.add_argument("--keep-masks", action="store_true", help="copy the masks into OUT/masks/ beside the XML")
    c.add_argument("--unknown-colours", choices=("error", "ignore"), default="error",
                   help="a mask colour outside --colours: stop and list them (default), or count them as background")
    c.add_argument("--json", help="COCO detection JSON (with --from coco)")
    c.add_argument("--yolo", help="folder of YOLO .txt label files (with --from yolo)")
    c.add_argument("--names", help="YOLO class names: data.yaml (names:) or classes.txt (with --from yolo)")
    c.add_argument("--out", required=True, help="labelImg folder, COCO .json or YOLO folder to write (new)")
    c.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from lesiondet import api

    r = api.convert(a.out, source=a.source, to=a.to, voc=a.voc, label_map=a.labels, masks=a.masks,
                    images=a.images, colours=a.colours, class_dirs=a.class_dirs, min_area=a.min_area,
                    merge_distance=a.merge_distance, keep_masks=a.keep_masks, json=a.json, labels=a.yolo,
                    names=a.names, unknown_colours=a.unknown_colours)
    for n in r["notes"]:
        say(f"note: {n}")
    say(f"wrote {r['out']}: {r['images']} images, {r['objects']} objects, classes {', '.join(r['classes'])}")
    return 0
