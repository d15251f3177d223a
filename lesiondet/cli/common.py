"""What every command shares: one-line argument errors, number types, slicing and --trust-legacy flags."""
from __future__ import annotations

import argparse
import os
import sys


class DefaultsFormatter(argparse.HelpFormatter):
    """Help that shows each option's default, unless its text already says it or there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        d = action.default
        if ("default" in text or d is None or d is False or d is argparse.SUPPRESS or action.nargs == 0
                or not action.option_strings):
            return text
        return f"{text} (default: {d})"


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line, like every other error, and shows defaults."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _number(s: str, kind: type) -> float:
    try:
        return kind(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{s}' is not {'a whole number' if kind is int else 'a number'}") from None


def positive_int(s: str) -> int:
    v = int(_number(s, int))
    if v < 1:
        raise argparse.ArgumentTypeError(f"{v} must be at least 1")
    return v


def positive_float(s: str) -> float:
    v = _number(s, float)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"{v} must be above 0")
    return v


def number_in(lo: float, hi: float, hi_included: bool):
    """argparse type: a number from ``lo`` (included) to ``hi``."""
    def parse(s: str) -> float:
        v = _number(s, float)
        if not (lo <= v <= hi if hi_included else lo <= v < hi):
            raise argparse.ArgumentTypeError(f"{v} must be between {lo:g} and {hi:g}")
        return v
    return parse


def fraction(s: str) -> float:
    v = positive_float(s)
    if v >= 1:
        raise argparse.ArgumentTypeError(f"{v} must be below 1")
    return v


def fraction_or_zero(s: str) -> float:
    """A held-out share below 1, or 0: train on everything (the final model, once a recipe is chosen)."""
    try:
        if float(s) == 0:
            return 0.0
    except ValueError:
        pass
    return fraction(s)


score = number_in(0.0, 1.0, hi_included=True)
overlap = number_in(0.0, 0.9, hi_included=False)


def tiling_overrides(a: argparse.Namespace) -> dict:
    """Slicing options given on the command line (None: keep what the checkpoint says)."""
    return {"tile": a.tile, "overlap": a.overlap, "merge": a.merge, "merge_pad": a.merge_pad,
            "nested_ios": a.nested_ios, "retina_px": a.retina_px, "zoom": a.zoom,
            "slice": False if a.no_slice else None, "tta": True if a.tta else None}


def add_tiling_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("slicing (defaults: what the model was trained with)")
    g.add_argument("--tile", type=positive_int, help="tile side in model pixels")
    g.add_argument("--overlap", type=overlap, help="share of a tile that neighbours overlap (0-0.9)")
    g.add_argument("--merge", choices=("nms", "wbf"), help="merge tiles by class-wise NMS or weighted box fusion")
    g.add_argument("--merge-pad", type=number_in(0.0, 64.0, hi_included=True), metavar="PX",
                   help="model px added round each box before the merge's IoU, so a tiny lesion seen a pixel off "
                        "by two tiles is one box (default 8; 0: plain IoU)")
    g.add_argument("--nested-ios", type=score, metavar="S",
                   help="drop a box lying this share inside a better one of its class (default 0.8; 0: keep all)")
    g.add_argument("--retina-px", type=number_in(0.0, 16384.0, hi_included=True), metavar="PX",
                   help="working field-of-view diameter: each photograph is resized so its retina is this many px "
                        "across (default: the model's; 0: native pixels times the model's zoom)")
    g.add_argument("--zoom", type=number_in(0.0, 16.0, hi_included=True), metavar="Z",
                   help="the most a photograph whose retina is smaller than --retina-px is enlarged (default: the "
                        "model's; a screening photograph's 800-px retina reaches 2,200 px at 2.75)")
    g.add_argument("--no-slice", action="store_true", help="one pass over the whole image at training scale")
    g.add_argument("--tta", action="store_true",
                   help="also predict on the mirrored image and merge the two (twice the time)")


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto",
                   help="auto (the GPU when CUDA is present, else the CPU), cpu, cuda or cuda:N")


def add_trust_legacy(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-legacy", action="store_true",
                   help="load a lesiondet 0.1 model file, which unpickles it WITH code execution: only for files "
                        "you wrote yourself or got from someone you trust")


def say(msg: str) -> None:
    """Progress for people, on stderr; under torchrun only rank 0 speaks."""
    if os.environ.get("RANK", "0") == "0":
        print(msg, file=sys.stderr, flush=True)


def error(msg: str) -> None:
    print(f"lesiondet: error: {msg}", file=sys.stderr)
