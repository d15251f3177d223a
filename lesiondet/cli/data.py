"""``lesiondet data stats``: look at a labelled folder before training on it."""
from __future__ import annotations

import argparse

from lesiondet.cli.common import Parser, say


def add(sub) -> None:
    d = sub.add_parser("data", help="inspect a labelled dataset")
    dsub = d.add_subparsers(dest="data_command", required=True, parser_class=Parser)
    s = dsub.add_parser("stats", help="counts, lesion sizes, empty images, border boxes, warnings, duplicates")
    s.add_argument("--voc", required=True, help="labelImg folder (or a parent with Annotations/)")
    s.add_argument("--labels", help="label map YAML (default: the canonical lesion classes)")
    s.add_argument("--images", help="image folder, if not next to the XML or in ../JPEGImages")
    s.add_argument("--against", metavar="OTHER_VOC", help="another split: report photographs found in both")
    s.add_argument("--out", default="runs/stats", help="folder for stats.json, sizes.png, stats.html; numbered")
    s.set_defaults(func=run_stats)


def run_stats(a: argparse.Namespace) -> int:
    from lesiondet import api

    st = api.data_stats(a.voc, labels=a.labels, images=a.images, against=a.against, out=a.out)
    print(f"{st['images']} images, {st['objects']} objects, {len(st['empty_images'])} without objects; "
          f"sizes {', '.join(f'{k} ({n})' for k, n in st['image_sizes'].items())}")
    print(f"{'class':<8} {'images':>6} {'objects':>7} " + " ".join(f"{'p' + str(p):>6}" for p in (5, 25, 50, 75, 95))
          + f" {'border':>6}   (size: sqrt of box area, px)")
    for c, v in st["classes"].items():
        print(f"{c:<8} {v['images']:>6} {v['objects']:>7} " + " ".join(f"{x:>6.1f}" for x in v["size_px"].values())
              + f" {v['touching_border']:>6}")
    for w in st["warnings"]:
        print(f"warning: {w}")
    if "against" in st:
        print(f"against {a.against} ({st['against']['images']} images): "
              f"{len(st['against']['duplicates'])} photograph(s) on both sides")
    say(f"stats.json, sizes.png and stats.html in {st['out']}")
    return 0
