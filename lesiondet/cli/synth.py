"""``lesiondet synth``: the synthetic sample datasets."""
from __future__ import annotations

import argparse

from lesiondet.cli.common import positive_int, say


def add(sub) -> None:
    s = sub.add_parser("synth", help="write the synthetic sample dataset")
    s.add_argument("out", help="folder to write train/, val/ and test/ into")
    s.add_argument("--n-train", type=positive_int, default=24, help="training images")
    s.add_argument("--n-val", type=positive_int, default=6, help="validation images")
    s.add_argument("--n-test", type=positive_int, default=6, help="test images")
    s.add_argument("--size", type=positive_int, default=512, help="image side in pixels")
    s.add_argument("--seed", type=int, default=0, help="random seed (the same seed writes the same images)")
    s.add_argument("--oct", action="store_true", help="write a synthetic OCT class-per-folder set instead")
    s.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from lesiondet import api

    out = api.synth(a.out, n_train=a.n_train, n_val=a.n_val, n_test=a.n_test, size=a.size, seed=a.seed, oct=a.oct)
    say(f"wrote a synthetic OCT dataset to {out} (CNV/, DME/, DRUSEN/, NORMAL/)" if a.oct
        else f"wrote a synthetic labelImg dataset to {out} (train/, val/, test/)")
    return 0
