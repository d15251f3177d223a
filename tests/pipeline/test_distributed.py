"""The screening run on Ray: the serial run's outputs, every input answered once, a killed worker retried.

One local Ray instance (2 CPUs, as on CI) serves the module; no cluster is needed.
"""
import csv
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import ray

from lesiondet import api
from lesiondet.cli import main
from lesiondet.errors import LesiondetError
from lesiondet.pipeline.screening import SUMMARY


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def photos(tiny_sample, tmp_path_factory) -> Path:
    """The sample's ten distinct photographs in one folder."""
    d = tmp_path_factory.mktemp("photos")
    for p in sorted(tiny_sample.glob("*/JPEGImages/*.jpg")):
        shutil.copy(p, d / p.name)
    assert len(list(d.iterdir())) == 10
    return d


def _rows(out: Path) -> list[dict]:
    with open(out / SUMMARY, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _worker_pids() -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and b"ray::ScreeningWorker" in (d / "cmdline").read_bytes():
                pids.append(int(d.name))
        except OSError:
            continue
    return pids


def test_ray_writes_what_the_serial_run_writes(local_ray, photos, trained_run, tmp_path):
    common = dict(weights=trained_run / "best.pt", grade=True, report=True, device="cpu", exist_ok=True)
    serial = api.detect([photos], out=tmp_path / "serial", **common)  # the shipped grading CNN as well
    ray_run = api.detect([photos], out=tmp_path / "ray", engine="ray", workers=2, threads=1, **common)

    assert ray_run.classes == serial.classes and not ray_run.failures
    a, b = _rows(tmp_path / "serial"), _rows(tmp_path / "ray")
    assert [r["image"] for r in b] == [r["image"] for r in a]  # input order, each once
    for ra, rb in zip(a, b):
        pa, pb = ra.pop("p_referable"), rb.pop("p_referable")
        assert ra == rb  # counts, grade, referable, source
        assert float(pa) == pytest.approx(float(pb), abs=1e-3)
    for p in sorted(photos.iterdir()):
        da = json.loads((tmp_path / "serial" / f"{p.stem}.json").read_text())
        db = json.loads((tmp_path / "ray" / f"{p.stem}.json").read_text())
        assert da["image"] == db["image"] and da["counts"] == db["counts"]
        assert da["grade"]["grade"] == db["grade"]["grade"]
        boxes = lambda d: np.array([x["box"] for x in d["detections"]]).reshape(-1, 4)  # noqa: E731
        np.testing.assert_allclose(boxes(da), boxes(db), atol=0.05)
        assert (tmp_path / "ray" / f"{p.stem}.png").is_file() and (tmp_path / "ray" / f"{p.stem}.xml").is_file()
    report = (tmp_path / "ray" / "report.html").read_text()
    assert all(p.name in report for p in photos.iterdir())


def test_a_killed_worker_is_restarted_and_every_photograph_is_answered_once(local_ray, photos, trained_run,
                                                                            tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    src = sorted(photos.iterdir())
    for k in range(40):  # enough that the kill lands partway
        shutil.copy(src[k % len(src)], d / f"p{k:02d}.jpg")
    out = tmp_path / "o"
    result: dict = {}

    def go() -> None:
        result["run"] = api.detect([d], weights=trained_run / "best.pt", grade=True, grader="none", device="cpu",
                                   out=out, exist_ok=True, engine="ray", workers=2, threads=1)

    t = threading.Thread(target=go)
    t.start()
    killed, rows_then = None, None
    deadline = time.time() + 120
    while time.time() < deadline and t.is_alive() and killed is None:
        pids = _worker_pids()
        if pids and (out / SUMMARY).is_file() and len(_rows(out)) >= 2:
            rows_then = len(_rows(out))
            killed = pids[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.01)
    t.join(300)
    assert killed is not None, "the run finished before a worker could be killed"
    assert rows_then < 40
    rows = _rows(out)
    assert [r["image"] for r in rows] == [str(p) for p in sorted(d.iterdir())]  # each exactly once, in order
    assert all(r["status"] == "ok" for r in rows)  # the dead worker's photographs were done again
    assert len(list(out.glob("p*.json"))) == 40 and not result["run"].failures


def test_a_list_file_with_missing_paths_gives_failed_rows_with_reasons(local_ray, photos, trained_run, tmp_path):
    names = sorted(p.name for p in photos.iterdir())[:3]
    listing = tmp_path / "day.csv"
    rel = os.path.relpath(photos, tmp_path)
    listing.write_text("image,site\n" + f"{rel}/{names[0]},a\n" + "gone/missing.jpg,a\n"
                       + "".join(f"{photos / n},b\n" for n in names[1:]) + f"{photos}/nowhere.jpg,b\n")
    rc = main(["detect", str(listing), "--engine", "ray", "--weights", str(trained_run / "best.pt"), "--grade",
               "--grader", "none", "--device", "cpu", "--out", str(tmp_path / "o"), "--exist-ok"])
    assert rc == 1
    rows = _rows(tmp_path / "o")
    assert [Path(r["image"]).name for r in rows] == [names[0], "missing.jpg", *names[1:], "nowhere.jpg"]
    failed = {Path(r["image"]).name: r["error"] for r in rows if r["status"] == "failed"}
    assert set(failed) == {"missing.jpg", "nowhere.jpg"} and all("not found" in e for e in failed.values())
    listed = (tmp_path / "o" / "failures.txt").read_text()
    assert "missing.jpg" in listed and "nowhere.jpg" in listed


def test_a_driver_killed_mid_run_resumes_with_each_photograph_once(local_ray, photos, trained_run, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    src = sorted(photos.iterdir())
    for k in range(40):
        shutil.copy(src[k % len(src)], d / f"p{k:02d}.jpg")
    out = tmp_path / "o"
    args = [str(d), "--engine", "ray", "--weights", str(trained_run / "best.pt"), "--grade", "--grader", "none",
            "--device", "cpu", "--workers", "2", "--threads", "1"]
    address = ray.get_runtime_context().gcs_address  # the module's instance: no second start-up
    proc = subprocess.Popen([sys.executable, "-m", "lesiondet", "detect", *args, "--out", str(out),
                             "--address", address], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (out / SUMMARY).is_file() and len(_rows(out)) >= 3:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert 3 <= len(_rows(out)) < 40

    assert main(["detect", *args, "--out", str(out), "--resume"]) == 0
    rows = _rows(out)
    assert [r["image"] for r in rows] == [str(p) for p in sorted(d.iterdir())]
    assert all(r["status"] == "ok" for r in rows) and len(list(out.glob("p*.json"))) == 40


def test_without_ray_the_engine_says_how_to_install_it(monkeypatch):
    from lesiondet.pipeline import distributed

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(LesiondetError, match=r"pip install -e '\.\[ray\]'"):
        distributed._ray()


def test_a_worker_that_cannot_load_the_models_is_a_one_line_error(local_ray, photos, trained_run, tmp_path):
    broken = tmp_path / "grader.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(LesiondetError, match="a Ray worker could not load the models") as e:
        api.detect([photos], weights=trained_run / "best.pt", grade=True, grader=broken, device="cpu",
                   out=tmp_path / "o", exist_ok=True, engine="ray", workers=1)
    assert "\n" not in str(e.value) and "grader.pt" in str(e.value)
