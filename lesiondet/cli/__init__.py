"""``lesiondet`` command line: one module per command, each parsing its arguments and calling one
``lesiondet.api`` function.

Every user-fixable problem surfaces as one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lesiondet.cli import calibrate, convert, data, detect, eval, export, grade, grader, oct, synth, train
from lesiondet.cli.common import Parser, error
from lesiondet.errors import LesiondetError

COMMANDS = (train, detect, eval, calibrate, grade, grader, oct, export, convert, data, synth)


def build_parser() -> argparse.ArgumentParser:
    from lesiondet import __version__

    p = Parser(prog="lesiondet", description="Retinal lesion detection (Faster R-CNN) from labelImg VOC data.")
    p.add_argument("--version", action="version", version=f"lesiondet {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in COMMANDS:
        command.add(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except LesiondetError as e:
        error(str(e))
        return 2
    except OSError as e:  # unreadable file, full disk: the OS says what, we say where
        where = f"{e.filename}: " if e.filename else ""
        error(f"{where}{e.strerror or e}; check the path, its permissions and free space")
        return 2
    except KeyboardInterrupt:
        print("lesiondet: interrupted", file=sys.stderr)
        return 130
