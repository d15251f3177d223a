"""The front page: its pictures and commands, its models table quoted from the result files, and the
Python API example of docs/api.md, run as written."""
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.e2e
def test_the_python_api_example_runs(tmp_path, monkeypatch, capsys):
    text = (ROOT / "docs" / "api.md").read_text()
    code = re.search(r"<!-- readme-example -->\s*```python\n(.*?)```", text, re.S).group(1)
    for d in ("annotations", "configs"):  # the example's relative paths, in a scratch copy of the repo root
        shutil.copytree(ROOT / d, tmp_path / d)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "docs/api.md", "exec"), {})
    out = capsys.readouterr().out
    assert out.count("; rule grade") == 6 and "AP50" in out and "MA FROC" in out
    assert (tmp_path / "runs/api/detect/report.html").is_file()
    assert (tmp_path / "runs/api/train/best.onnx").is_file()
    assert len(list((tmp_path / "runs/api/detect-onnx").glob("*.xml"))) == 6


def test_the_models_table_and_docs_results_quote_the_result_files():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, str(ROOT / "tools" / "results_page.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_the_readme_is_a_front_page_with_its_pictures():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(pictures) >= 2 and all((ROOT / p).is_file() for p in pictures), pictures
    for command in ("lesiondet train --voc annotations/\n", "lesiondet eval --map\n", "--grade\n"):
        assert command in text
