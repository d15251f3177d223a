"""The screening run: a worklist row per photograph, written as each finishes, and resume after a kill."""
import csv
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lesiondet.cli import main
from lesiondet.errors import LesiondetError
from lesiondet.pipeline.screening import SUMMARY, Worklist, check_names, summary_columns


def _rows(out: Path) -> list[dict]:
    with open(out / SUMMARY, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_every_photograph_gets_one_worklist_row_failed_ones_included(trained_run, tiny_sample, tmp_path):
    d = tmp_path / "in"
    shutil.copytree(tiny_sample / "test" / "JPEGImages", d)
    (d / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    rc = main(["detect", str(d), "--weights", str(trained_run / "best.pt"), "--grade", "--grader", "none",
               "--report", "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert rc == 1  # one photograph failed
    rows = _rows(tmp_path / "o")
    assert sorted(Path(r["image"]).name for r in rows) == sorted(p.name for p in d.iterdir())
    by = {Path(r["image"]).name: r for r in rows}
    assert by["broken.jpg"]["status"] == "failed" and by["broken.jpg"]["error"]
    ok = [r for n, r in by.items() if n != "broken.jpg"]
    assert all(r["status"] == "ok" and r["grade"] in "0123" and r["grade_source"] == "rules" for r in ok)
    for r in ok:  # counts match the photograph's JSON
        doc = json.loads((tmp_path / "o" / f"{Path(r['image']).stem}.json").read_text())
        assert {k[2:]: int(v) for k, v in r.items() if k.startswith("n_") and int(v)} == doc["counts"]
    assert "href='summary.csv'" in (tmp_path / "o" / "report.html").read_text()


def test_a_half_written_last_row_is_dropped_on_resume(tmp_path):
    cols = summary_columns(["MA"])
    w = Worklist(tmp_path / SUMMARY, cols, resume=False)
    w.add({"image": "a.jpg", "status": "ok", "n_MA": 1})
    w.close()
    with open(tmp_path / SUMMARY, "a", encoding="utf-8") as fh:
        fh.write("b.jpg,o")  # the kill came mid-row
    again = Worklist(tmp_path / SUMMARY, cols, resume=True)
    again.close()
    assert list(again.done) == ["a.jpg"]
    assert (tmp_path / SUMMARY).read_text().endswith("\n")


def test_a_killed_folder_run_resumes_to_the_same_result(trained_run, tiny_sample, tmp_path):
    src = sorted((tiny_sample / "test" / "JPEGImages").iterdir())
    d = tmp_path / "in"
    d.mkdir()
    for k in range(20):  # enough photographs that the kill lands partway
        shutil.copy(src[k % len(src)], d / f"p{k:02d}.jpg")
    args = [str(d), "--weights", str(trained_run / "best.pt"), "--grade", "--grader", "none", "--device", "cpu"]
    assert main(["detect", *args, "--out", str(tmp_path / "whole")]) == 0

    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "lesiondet", "detect", *args, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (out / SUMMARY).is_file() and len((out / SUMMARY).read_text().splitlines()) >= 4:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    partial = len(_rows(out))
    assert 3 <= partial < 20

    assert main(["detect", *args, "--out", str(out), "--resume"]) == 0
    rows, whole = _rows(out), _rows(tmp_path / "whole")
    assert sorted(r["image"] for r in rows) == sorted(r["image"] for r in whole)  # each photograph exactly once
    key = lambda r: r["image"]  # noqa: E731
    assert sorted(rows, key=key) == sorted(whole, key=key)
    assert sorted(p.name for p in out.glob("*.json")) == sorted(p.name for p in (tmp_path / "whole").glob("*.json"))


def test_resume_refuses_a_worklist_of_another_model(tmp_path):
    (tmp_path / SUMMARY).write_text("image,status,n_XX\n")
    with pytest.raises(Exception, match="other columns"):
        Worklist(tmp_path / SUMMARY, summary_columns(["MA"]), resume=True)


def test_two_inputs_with_one_name_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(LesiondetError, match=r"b/eye.jpg: has the same name as .*a/eye.png"):
        check_names([Path("a/eye.png"), Path("b/eye.jpg")])
    check_names([Path("a/eye.png"), Path("a/eye.png"), Path("b/other.jpg")])  # the same file twice is fine


def test_a_worklist_is_sorted_into_input_order_one_row_per_image(tmp_path):
    cols = summary_columns(["MA"])
    w = Worklist(tmp_path / SUMMARY, cols, resume=False)
    for name in ("c.jpg", "a.jpg", "b.jpg", "a.jpg"):
        w.add({"image": name, "status": "ok", "n_MA": 1})
    w.close()
    w.sort(["a.jpg", "b.jpg", "c.jpg"])
    assert [r["image"] for r in _rows(tmp_path)] == ["a.jpg", "b.jpg", "c.jpg"]


def test_a_run_too_large_to_hold_keeps_its_results_on_disk_only(trained_run, tiny_sample, tmp_path, monkeypatch,
                                                                capsys):
    from lesiondet.pipeline import screening

    monkeypatch.setattr(screening, "KEEP_MAX", 1)  # a national day's worth, in miniature
    d = tiny_sample / "test" / "JPEGImages"
    rc = main(["detect", str(d), "--weights", str(trained_run / "best.pt"), "--grade", "--grader", "none",
               "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert rc == 0
    assert "counts and grades are in" in capsys.readouterr().err
    assert len(_rows(tmp_path / "o")) == len(list(d.iterdir())) == len(list((tmp_path / "o").glob("*.json")))
