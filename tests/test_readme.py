"""The README's Python API example runs as written."""
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.e2e


def test_the_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    text = (ROOT / "README.md").read_text()
    code = re.search(r"<!-- readme-example -->\s*```python\n(.*?)```", text, re.S).group(1)
    for d in ("annotations", "configs"):  # the example's relative paths, in a scratch copy of the repo root
        shutil.copytree(ROOT / d, tmp_path / d)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert out.count("; rule grade") == 6 and "AP50" in out and "MA FROC" in out
    assert (tmp_path / "runs/api/detect/report.html").is_file()
    assert (tmp_path / "runs/api/train/best.onnx").is_file()
    assert len(list((tmp_path / "runs/api/detect-onnx").glob("*.xml"))) == 6
