"""Write docs/cli.md from the command-line parsers, so the reference never drifts from the code.

    python tools/cli_docs.py            # rewrite docs/cli.md
    python tools/cli_docs.py --check    # exit 1 when docs/cli.md is not what the parsers say

tests/cli/test_help.py runs the check.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "docs" / "cli.md"


def commands(parser: argparse.ArgumentParser, name: str = "lesiondet"):
    """``(full command name, parser)`` for the program and every sub-command, depth first."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, p in action.choices.items():
                yield from commands(p, f"{name} {sub}")


def render() -> str:
    from lesiondet.cli import build_parser

    os.environ["COLUMNS"] = "100"  # the same line breaks on every terminal
    lines = ["# Command-line reference", "",
             "Generated from the parsers by `python tools/cli_docs.py`; a test fails when it is stale. Every",
             "option shows its default; configuration keys are in `lesiondet/config/defaults.yaml`",
             "(docs/configuration.md).", ""]
    for name, p in commands(build_parser()):
        if name == "lesiondet":
            continue
        lines += [f"## `{name}`", "", "```text", p.format_help().rstrip(), "```", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail when docs/cli.md is stale instead of writing it")
    a = ap.parse_args()
    text = render()
    if a.check:
        if not OUT.is_file() or OUT.read_text() != text:
            print("docs/cli.md is stale: run python tools/cli_docs.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
