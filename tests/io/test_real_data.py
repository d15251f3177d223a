"""Every shared real annotation reads with its dataset config, and scores 1.0 against itself."""
from pathlib import Path

import pytest

from lesiondet.detection.metrics import coco_map
from lesiondet.io.labels import load_label_map
from lesiondet.io.voc import read_voc_dir

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "datasets"


@pytest.mark.parametrize("name,min_images,classes", [
    ("codras", 484, ("OD", "EX", "HE_MA")),  # HE_MA is a partial label: the model's classes are HE and MA
    ("heimed", 136, ("EX", "MA", "HE", "SE")),
    ("idrid", 49, ("MA", "HE", "EX", "SE", "OD")),
])
def test_shared_dataset_reads_and_scores_perfectly_against_itself(shared_data, name, min_images, classes):
    lm = load_label_map(CONFIGS / f"{name}.yaml")
    assert tuple(lm.scored_names()) == classes
    recs = read_voc_dir(shared_data / "fundus" / name, lm)
    assert len(recs) >= min_images
    assert all(r.image_path.is_file() for r in recs)
    assert all(0 <= o.box[0] < o.box[2] <= r.width and 0 <= o.box[1] < o.box[3] <= r.height
               for r in recs for o in r.objects)
    # pycocotools on the first 12 photographs: IDRiD's 12-megapixel masks give thousands of boxes, and the
    # claim (a set scored against itself is 1.0 for each class it has) does not need them all
    recs = recs[:12] + [r for r in recs[12:] if any(o.label not in {x.label for q in recs[:12] for x in q.objects}
                                                     for o in r.objects)][:2]
    result = coco_map(recs, recs, list(classes))
    assert result["mAP"] == pytest.approx(1.0) and result["mAP50"] == pytest.approx(1.0)
    for c in classes:
        if result["per_class"][c]["n_gt"]:
            assert result["per_class"][c]["AP"] == pytest.approx(1.0), c


def test_heimed_negatives_are_kept(shared_data):
    recs = read_voc_dir(shared_data / "fundus" / "heimed", load_label_map(CONFIGS / "heimed.yaml"))
    assert sum(1 for r in recs if not r.objects) == 87
