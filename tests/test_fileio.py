"""Atomic writes: the old file or the new one, never half of either; and the mode open() would give."""
import os
import stat

import pytest

from lesiondet.fileio import atomic_path, write_json, write_text


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "summary.csv"
    write_text(target, "old\n")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.csv"]


def test_a_written_file_gets_the_mode_open_would_give_it(tmp_path):
    write_json(tmp_path / "a.json", {"grade": 2})
    with open(tmp_path / "b.txt", "w") as fh:  # what open() gives under this process's umask
        fh.write("x")
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(tmp_path / "a.json") == mode(tmp_path / "b.txt")
    umask = os.umask(0)
    os.umask(umask)
    if not umask & 0o044:
        assert mode(tmp_path / "a.json") & 0o044  # others can read it, unlike mkstemp's 0600
