"""Shared fixtures: small VOC folders written on the fly, the shared real data, a tiny trained model."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SAMPLE = ROOT / "annotations"


def write_xml(path: Path, filename: str = "img.jpg", size=(64, 48), objects=(), extra: str = "") -> Path:
    """labelImg-style XML; ``objects`` are (name, xmin, ymin, xmax, ymax[, difficult]) in VOC pixels."""
    objs = ""
    for o in objects:
        name, x0, y0, x1, y1 = o[:5]
        diff = o[5] if len(o) > 5 else 0
        objs += (f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
                 f"<difficult>{diff}</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
                 f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>")
    w, h = size
    path.write_text(f"<annotation><folder>x</folder><filename>{filename}</filename>{extra}"
                    f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>"
                    f"<segmented>0</segmented>{objs}</annotation>")
    return path


def write_image(path: Path, size=(64, 48)) -> Path:
    w, h = size
    img = np.full((h, w, 3), 120, np.uint8)
    cv2.imwrite(str(path), img)
    return path


@pytest.fixture
def voc_dir(tmp_path: Path):
    """Factory: a folder with one image and its XML; returns the XML path."""
    def make(objects=(), size=(64, 48), extra: str = "", name: str = "img") -> Path:
        write_image(tmp_path / f"{name}.jpg", size)
        return write_xml(tmp_path / f"{name}.xml", f"{name}.jpg", size, objects, extra)
    return make


#: Fixtures that train a model (through the CLI) or read the shared real data sets: a test using one is end-to-end.
E2E_FIXTURES = {"trained_run", "oct_run", "onnx_file", "shared_data", "grader_run", "srahim_subset", "seg_run"}


def pytest_collection_modifyitems(config, items):
    """``pytest -m "not e2e"`` is the fast tier: unit tests only, under a minute."""
    for item in items:
        if E2E_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(autouse=True)
def _run_in_tmp(tmp_path, monkeypatch):
    """Each test runs in its own folder, so default outputs (runs/…) never land in the repository."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session", autouse=True)
def _onnx_cache(tmp_path_factory):
    """ONNX copies made on first use (``export.runtime``) go to a fresh cache, never the user's."""
    import os

    old = os.environ.get("LESIONDET_CACHE")
    os.environ["LESIONDET_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("LESIONDET_CACHE", None)
    else:
        os.environ["LESIONDET_CACHE"] = old


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED / "fundus").is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED


@pytest.fixture(scope="session")
def tiny_sample(tmp_path_factory) -> Path:
    """A 256-px synthetic set: 6 train, 2 val, 2 test images."""
    from lesiondet.synth import write_sample

    return write_sample(tmp_path_factory.mktemp("tiny") / "sample", 6, 2, 2, size=256, seed=7)


# 128-px tiles on 256-px images, so the fast tests go through slicing too.
TINY_CONFIG = """
tiling:
  tile: 128
  zoom: 1
  tiles_per_image: 2
model:
  fpn_channels: 64
  anchor_sizes: [[4, 8], [16, 32], [48, 64], [96, 128]]
train:
  epochs: 1
  batch: 2
  workers: 0
  warmup_iters: 2
"""


def _config_file(tmp_path_factory, text: str) -> Path:
    p = tmp_path_factory.mktemp("cfg") / "config.yaml"
    p.write_text(text)
    return p


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory) -> Path:
    return _config_file(tmp_path_factory, TINY_CONFIG)


@pytest.fixture(scope="session")
def trained_run(tiny_sample: Path, tiny_config: Path, tmp_path_factory) -> Path:
    """One short training run through the CLI; returns the run folder."""
    from lesiondet.cli import main

    out = tmp_path_factory.mktemp("runs") / "train"
    # the folder as a labelImg user splits by hand (train/, val/, test/): its sub-folders are the splits
    rc = main(["train", "--voc", str(tiny_sample), "--config", str(tiny_config), "--out", str(out), "--device", "cpu"])
    assert rc == 0
    return out


OCT_FAST = "oct:\n  size: 64\n  linear_sizes: [64, 96]\n  batch: 8\n  head_epochs: 1\n  epochs: 1\n  min_steps: 2\n"


@pytest.fixture(scope="session")
def oct_sample(tmp_path_factory) -> Path:
    """A synthetic OCT class-per-folder set: 6 scans per class from 3 patients."""
    from lesiondet.synth import write_oct_sample

    return write_oct_sample(tmp_path_factory.mktemp("oct") / "data", per_class=6, patients=3, seed=3,
                            width=128, height=96)


@pytest.fixture(scope="session")
def oct_fast_config(tmp_path_factory) -> Path:
    return _config_file(tmp_path_factory, OCT_FAST)


@pytest.fixture(scope="session")
def oct_run(oct_sample, oct_fast_config, tmp_path_factory) -> Path:
    """One short OCT training run through the CLI; returns the run folder."""
    from lesiondet.cli import main

    out = tmp_path_factory.mktemp("octrun") / "run"
    assert main(["oct", "train", "--data", str(oct_sample), "--config", str(oct_fast_config),
                 "--out", str(out), "--device", "cpu"]) == 0
    return out


GRADER_FAST = "grader:\n  size: 64\n  batch: 8\n  head_epochs: 1\n  epochs: 1\n  min_steps: 2\n"


@pytest.fixture(scope="session")
def srahim_subset(shared_data, tmp_path_factory) -> Path:
    """A grading CSV of 40 shared graded photographs (20 patients, every grade), paths absolute."""
    import csv

    rows = list(csv.DictReader(open(shared_data / "grading" / "srahim" / "labels.csv", newline="")))
    by_patient: dict[str, list[dict]] = {}
    for r in rows:
        by_patient.setdefault(r["patient"], []).append(r)
    chosen, seen = [], {}
    for pid, rs in sorted(by_patient.items()):
        g = max(int(r["dr_grade"]) for r in rs)
        if seen.get(g, 0) < 4:
            seen[g] = seen.get(g, 0) + 1
            chosen += rs
    out = tmp_path_factory.mktemp("srahim") / "labels.csv"
    with open(out, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "dr_grade", "maculopathy", "patient"])
        for r in chosen:
            w.writerow([shared_data / "grading" / "srahim" / r["image"], r["dr_grade"], r["maculopathy"], r["patient"]])
    return out


@pytest.fixture(scope="session")
def grader_run(srahim_subset, tmp_path_factory) -> Path:
    """One short grading-CNN run through the CLI on the shared photographs; returns the run folder."""
    from lesiondet.cli import main

    cfg = _config_file(tmp_path_factory, GRADER_FAST)
    out = tmp_path_factory.mktemp("graderrun") / "run"
    assert main(["grader", "train", "--data", str(srahim_subset), "--config", str(cfg),
                 "--out", str(out), "--device", "cpu"]) == 0
    return out


SEG_FAST = "segment:\n  width: 128\n  height: 96\n  epochs: 1\n  min_steps: 2\n"


@pytest.fixture(scope="session")
def seg_run(shared_data, tmp_path_factory) -> Path:
    """One short fluid U-Net run through the CLI on the shared Duke scans; returns the run folder."""
    from lesiondet.cli import main

    cfg = _config_file(tmp_path_factory, SEG_FAST)
    out = tmp_path_factory.mktemp("segrun") / "run"
    assert main(["oct", "segment", "train", "--data", str(shared_data / "oct_fluid" / "scans.csv"),
                 "--config", str(cfg), "--out", str(out), "--device", "cpu"]) == 0
    return out
