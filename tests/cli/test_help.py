"""Help that answers: every option says what it does and its default, and docs/cli.md is the parsers'."""
from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from lesiondet.cli import build_parser
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
from cli_docs import commands  # noqa: E402


def _options():
    for name, p in commands(build_parser()):
        for a in p._actions:
            if not isinstance(a, (argparse._SubParsersAction, argparse._HelpAction, argparse._VersionAction)):
                yield name, a


@pytest.mark.parametrize("name,action", list(_options()), ids=lambda v: v if isinstance(v, str) else
                         (v.option_strings or [v.dest])[0])
def test_every_option_of_every_command_has_help(name, action):
    assert action.help and len(action.help) > 8, f"{name} {(action.option_strings or [action.dest])[0]}"


def test_help_shows_defaults():
    text = dict(commands(build_parser()))["lesiondet synth"].format_help()
    assert "(default: 24)" in text and "(default: 512)" in text
    text = dict(commands(build_parser()))["lesiondet detect"].format_help()
    assert "default: auto" in " ".join(text.split())  # --device


def test_one_option_means_one_thing_train_starts_with_from():
    text = dict(commands(build_parser()))["lesiondet train"].format_help()
    assert "--pretrained" not in text and "torchvision" in text


def test_docs_cli_md_is_generated_from_the_parsers():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "cli_docs.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
