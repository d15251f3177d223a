"""``lesiondet train``: a detector from labelImg folders or dataset YAMLs."""
from __future__ import annotations

import argparse

from lesiondet.cli.common import add_device, add_trust_legacy, fraction, overlap, positive_float, positive_int, say


def add(sub) -> None:
    t = sub.add_parser("train", help="train a detector on a labelImg VOC folder")
    t.add_argument("--voc", action="append",
                   help="folder of labelImg .xml (or its parent holding Annotations/), or a dataset YAML "
                        "(configs/datasets/*.yaml); repeat to train on several datasets together")
    t.add_argument("--images", help="folder of the images, if not next to the XML or in ../JPEGImages")
    g = t.add_mutually_exclusive_group()
    g.add_argument("--val", help="validation folder (labelImg VOC)")
    g.add_argument("--val-split", type=fraction, default=0.2, help="share of --voc held out (default 0.2)")
    t.add_argument("--labels", help="label map YAML (default: canonical classes found in the data)")
    t.add_argument("--config", help="training preset YAML (configs/models/*.yaml); "
                                    "defaults in lesiondet/config/defaults.yaml")
    t.add_argument("--epochs", type=positive_int, help="training epochs (default: train.epochs, 20)")
    t.add_argument("--batch", type=positive_int, help="tiles per step (default: train.batch, 2)")
    t.add_argument("--lr", type=positive_float,
                   help="learning rate (default: train.lr 0.01 from ImageNet, train.finetune_lr 0.002 from a detector)")
    t.add_argument("--workers", type=int, help="data-loader processes")
    add_device(t)
    t.add_argument("--time-limit", type=positive_float, metavar="MINUTES",
                   help="stop cleanly after this many minutes, keeping best.pt")
    t.add_argument("--resume", metavar="LAST_PT", help="continue a run from its last.pt")
    t.add_argument("--from", dest="start", metavar="auto|shipped|imagenet|torchvision|none|CHECKPOINT", default="auto",
                   help="where a new run starts: auto (the shipped detector when it knows one of your classes and "
                        "the network is its own, else imagenet), shipped, a detector best.pt (classes matched by "
                        "name), or a fresh detector whose backbone starts from imagenet (the offline "
                        "EfficientNet-Lite0 weights), torchvision (its hub cache) or none (random)")
    t.add_argument("--out", default="runs/train", help="run folder; numbered if it exists (default runs/train)")
    t.add_argument("--tile", type=positive_int, help="tile side in model pixels (default 512)")
    t.add_argument("--overlap", type=overlap, help="tile overlap share at validation (default 0.2)")
    add_trust_legacy(t)
    t.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from lesiondet import api

    s = api.train(a.voc, val=a.val, val_split=a.val_split, labels=a.labels, images=a.images, config=a.config,
                  epochs=a.epochs, batch=a.batch, lr=a.lr, workers=a.workers, tile=a.tile,
                  overlap=a.overlap, device=a.device, time_limit=a.time_limit, resume=a.resume, out=a.out,
                  trust_legacy=a.trust_legacy, start=a.start, log=say)
    say(f"done: {s['epochs_done']} epoch(s), best val mAP50 {max(s['best_fitness'], 0):.3f}; "
        f"weights {s['out_dir']}/best.pt, curves {s['out_dir']}/curves.png")
    return 0
