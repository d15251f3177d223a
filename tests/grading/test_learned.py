"""Lesion features read back from ``detect --grade`` results, for the grade readout."""
import json

import numpy as np
import pytest

from lesiondet.errors import LesiondetError
from lesiondet.grading.combined import final_grade
from lesiondet.grading.learned import FEATURES, features, read_lesion_features
from lesiondet.grading.rules import grade
from lesiondet.io.voc import VocObject


def write_result(folder, stem, n_he):
    objs = [VocObject("HE", (100 + 30 * i, 100, 110 + 30 * i, 110), score=0.9) for i in range(n_he)]
    g = grade(objs, image_size=(1024, 1024))
    (folder / f"{stem}.json").write_text(json.dumps({"grade": final_grade(g, None, None)}))
    return g


def test_features_are_read_per_photograph_in_order(tmp_path):
    a, b = write_result(tmp_path, "a", 1), write_result(tmp_path, "b", 7)
    X = read_lesion_features(tmp_path, ["x/b.jpg", "y/a.png"])
    assert X.shape == (2, len(FEATURES))
    assert np.allclose(X, [features(b), features(a)])


@pytest.mark.parametrize("case, words", [("no_folder", "lesion folder not found"),
                                         ("no_json", "no detections for b.jpg"),
                                         ("broken", "not a 'lesiondet detect --grade' result")])
def test_a_missing_or_wrong_result_is_one_error_naming_the_file_and_the_command(tmp_path, case, words):
    write_result(tmp_path, "a", 1)
    if case == "broken":
        (tmp_path / "b.json").write_text('{"boxes": []}')
    folder = tmp_path / "nowhere" if case == "no_folder" else tmp_path
    with pytest.raises(LesiondetError, match=words) as e:
        read_lesion_features(folder, ["a.jpg", "b.jpg"])
    assert "lesiondet detect" in str(e.value)
