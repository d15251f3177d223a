"""The layers: task packages return data; only the pipeline above them composes tasks and reporting."""
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "lesiondet"


def imported(folder: Path) -> dict[str, set[str]]:
    """``{file: modules it imports}`` for every module of a package folder (top-level and inside functions)."""
    out = {}
    for f in sorted(folder.glob("*.py")):
        mods = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                mods.add(node.module)
            elif isinstance(node, ast.Import):
                mods.update(a.name for a in node.names)
        out[f.name] = mods
    return out


@pytest.mark.parametrize("task, forbidden", [
    ("detection", ("lesiondet.grading", "lesiondet.reporting", "lesiondet.pipeline", "lesiondet.oct")),
    ("grading", ("lesiondet.pipeline", "lesiondet.oct")),
    ("oct", ("lesiondet.pipeline", "lesiondet.detection")),
])
def test_a_task_package_imports_no_other_task_and_no_pipeline(task, forbidden):
    bad = {f: sorted(m for m in mods if m.startswith(forbidden)) for f, mods in imported(PKG / task).items()}
    assert not {f: m for f, m in bad.items() if m}, f"{task}/ imports what sits beside or above it"
