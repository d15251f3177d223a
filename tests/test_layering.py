"""The layers: CLI → API → pipeline → task packages → shared floors.

A task package returns data and imports no other task; only the pipeline above them composes
tasks and reporting. The shared floors are ordered (``FLOOR_ORDER``), and each imports only floors
below its own level: errors and progress at the bottom, then fileio, device and nn, then config,
export and images, then io (and camera), then reporting and synth, then engine, then weights. So a
folder that looks shared is shared, and a low floor never reaches up. ``io`` reads and writes data
and draws nothing. No two packages import each other, directly or round a longer circle. Relative
imports and ``importlib.import_module("lesiondet...")`` calls count as imports.
"""
import ast
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "lesiondet"
TASKS = ("detection", "grading", "oct")
ABOVE = ("pipeline", "api", "cli")
#: the shared floors, lowest first; a floor imports only floors of a lower level
FLOOR_ORDER = (("errors", "progress"), ("fileio", "device", "nn"), ("config", "export", "images"),
               ("io", "camera"), ("reporting", "synth"), ("engine",), ("weights",))
FLOORS = tuple(f for level in FLOOR_ORDER for f in level)
LEVEL = {f: k for k, level in enumerate(FLOOR_ORDER) for f in level}


def modules_imported(path: Path) -> set[str]:
    """Every ``lesiondet`` module ``path`` imports, at the top or inside functions, ``TYPE_CHECKING`` aside:
    absolute and relative imports, and ``importlib.import_module`` calls with a literal name."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING"
                   for n in ast.walk(node)}
    # the package a relative import starts from: lesiondet/io/voc.py is in lesiondet.io
    here = ["lesiondet", *path.relative_to(PKG).with_suffix("").parts]
    package = here if path.stem == "__init__" else here[:-1]
    mods = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # from . import x, from ..io import voc
                up = package[:len(package) - (node.level - 1)] if node.level > 1 else package
                base = ".".join([*up, *([node.module] if node.module else [])])
            if base:
                mods.add(base)
                mods.update(f"{base}.{a.name}" for a in node.names)  # "from lesiondet import api"
        elif isinstance(node, ast.Import):
            mods.update(a.name for a in node.names)
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            mods.add(node.args[0].value)
    return {m for m in mods if m == "lesiondet" or m.startswith("lesiondet.")}


def unit_of(module: str) -> str | None:
    """The first-level package or module a ``lesiondet.x.y`` name belongs to (``x``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def files_of(unit: str) -> list[Path]:
    folder = PKG / unit
    return sorted(folder.rglob("*.py")) if folder.is_dir() else [PKG / f"{unit}.py"]


def imports_of(unit: str) -> dict[str, set[str]]:
    """``{file: the other units it imports}``."""
    out = {}
    for f in files_of(unit):
        units = {unit_of(m) for m in modules_imported(f)} - {None, unit}
        out[str(f.relative_to(PKG))] = {u for u in units if (PKG / u).is_dir() or (PKG / f"{u}.py").is_file()}
    return out


def test_every_top_level_unit_has_a_layer():
    units = {p.stem for p in PKG.glob("*.py") if p.stem not in ("__init__", "__main__")} | \
            {p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert units <= set(TASKS) | set(ABOVE) | set(FLOORS), "a new unit: give it a layer in this test"


@pytest.mark.parametrize("floor", FLOORS)
def test_a_shared_floor_imports_no_task_and_nothing_above_one(floor):
    bad = {f: sorted(u & set(TASKS + ABOVE)) for f, u in imports_of(floor).items() if u & set(TASKS + ABOVE)}
    assert not bad, f"{floor} imports a task or what sits above the tasks: {bad}"


def floors_above(floor: str) -> dict[str, list[str]]:
    """``{file: the floors it imports that are not below ``floor``'s level}``."""
    return {f: sorted(x for x in u if x in LEVEL and LEVEL[x] >= LEVEL[floor])
            for f, u in imports_of(floor).items() if any(x in LEVEL and LEVEL[x] >= LEVEL[floor] for x in u)}


@pytest.mark.parametrize("floor", FLOORS)
def test_a_shared_floor_imports_only_lower_floors(floor):
    bad = floors_above(floor)
    assert not bad, f"{floor} (level {LEVEL[floor]} of FLOOR_ORDER) imports floors at or above its level: {bad}"


@pytest.mark.parametrize("task", TASKS)
def test_a_task_package_imports_no_other_task_and_nothing_above_it(task):
    forbidden = (set(TASKS) - {task}) | set(ABOVE)
    bad = {f: sorted(u & forbidden) for f, u in imports_of(task).items() if u & forbidden}
    assert not bad, f"{task}/ imports what sits beside or above it: {bad}"


def test_io_draws_nothing():
    drawing = ("matplotlib", "lesiondet.reporting")
    bad = {str(f.relative_to(PKG)): sorted(m for m in mods if m.startswith(drawing))
           for f in files_of("io") for mods in [modules_imported(f) | _third_party(f)]
           if any(m.startswith(drawing) for m in mods)}
    assert not bad, f"io/ draws: {bad}"


def _third_party(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module} | \
           {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}


def circles(units: set[str]) -> list[list[str]]:
    """Every circle of imports between ``units``, each once, from its smallest member."""
    graph = {u: set().union(set(), *imports_of(u).values()) & units for u in units}
    cycles = []

    def visit(node, path):
        for nxt in sorted(graph[node]):
            if nxt == path[0]:
                cycles.append(path + [nxt])
            elif nxt not in path and nxt > path[0]:  # each circle once, from its smallest member
                visit(nxt, path + [nxt])

    for u in sorted(units):
        visit(u, [u])
    return cycles


def test_no_two_units_import_each_other_round_any_circle():
    cycles = circles(set(TASKS) | set(ABOVE) | set(FLOORS))
    assert not cycles, "circles between packages: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_an_upward_import_a_circle_and_a_floor_out_of_order(tmp_path, monkeypatch):
    """The rules above can fail: a floor importing a task, two floors importing each other, and a floor
    importing one at or above its level (through a relative import or importlib too) are caught."""
    fake = tmp_path / "lesiondet"
    for unit, body in {"io": "from lesiondet.detection.model import x\n",
                       "detection": "from lesiondet.io.voc import y\n",
                       "engine": "from lesiondet.reporting import plots\n",
                       "reporting": "import lesiondet.engine.trainer\n"}.items():
        (fake / unit).mkdir(parents=True)
        (fake / unit / "__init__.py").write_text("")
        (fake / unit / "m.py").write_text(body)
    (fake / "config").mkdir()
    (fake / "config" / "__init__.py").write_text("")
    (fake / "config" / "m.py").write_text("from ..engine import trainer\n")  # a relative import, up a level
    (fake / "fileio.py").write_text("import importlib\nimportlib.import_module('lesiondet.io.voc')\n")
    monkeypatch.setattr(sys.modules[__name__], "PKG", fake)
    assert imports_of("io") == {"io/__init__.py": set(), "io/m.py": {"detection"}}
    assert imports_of("config")["config/m.py"] == {"engine"}
    assert floors_above("config") == {"config/m.py": ["engine"]}  # config sits below engine
    assert floors_above("fileio") == {"fileio.py": ["io"]}  # seen through importlib
    assert floors_above("engine") == {}  # engine may import reporting, which sits below it ...
    assert floors_above("reporting") == {"reporting/m.py": ["engine"]}  # ... and not the other way
    assert sorted(map(tuple, circles({"io", "detection", "engine", "reporting"}))) == [
        ("detection", "io", "detection"), ("engine", "reporting", "engine")]


@pytest.mark.parametrize("package", [u for u in TASKS + ABOVE + FLOORS if (PKG / u).is_dir()])
def test_no_two_modules_of_a_package_import_each_other(package):
    """Inside a package too: a helper two modules share lives in one of them, or in a third."""
    mods = {f.stem: f for f in (PKG / package).glob("*.py") if f.stem != "__init__"}
    graph = {m: {x.split(".")[2] for x in modules_imported(f) if x.startswith(f"lesiondet.{package}.")
                 and len(x.split(".")) > 2} & set(mods) - {m} for m, f in mods.items()}
    both = sorted((a, b) for a in graph for b in graph[a] if a < b and a in graph.get(b, ()))
    assert not both, f"{package}/: modules importing each other: {both}"
