"""List files: a day's manifest, as text or CSV, relative to its own folder."""
from pathlib import Path

import pytest

from lesiondet.errors import LesiondetError
from lesiondet.io.lists import read_image_list


def test_a_list_file_reads_text_and_csv_relative_to_its_folder(tmp_path):
    (tmp_path / "a.txt").write_text("# today's photographs\nx/1.jpg\n\n/abs/2.jpg\n")
    assert read_image_list(tmp_path / "a.txt") == [tmp_path / "x/1.jpg", Path("/abs/2.jpg")]
    (tmp_path / "b.csv").write_text("patient,path\n7,x/1.jpg\n8,x/2.jpg\n")
    assert read_image_list(tmp_path / "b.csv") == [tmp_path / "x/1.jpg", tmp_path / "x/2.jpg"]
    (tmp_path / "c.csv").write_text("x/1.jpg\n")  # no header: the first column
    assert read_image_list(tmp_path / "c.csv") == [tmp_path / "x/1.jpg"]
    (tmp_path / "empty.txt").write_text("\n# nothing\n")
    with pytest.raises(LesiondetError, match="empty.txt: lists no photographs"):
        read_image_list(tmp_path / "empty.txt")
