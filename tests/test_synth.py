"""The synthetic sample: deterministic, boxes exactly around what was drawn."""
import numpy as np

from lesiondet.synth import SynthSpec, make_fundus


def test_same_seed_same_image():
    a, oa = make_fundus(5)
    b, ob = make_fundus(5)
    assert np.array_equal(a, b) and oa == ob


def test_lesions_lie_inside_the_field_of_view_with_tight_boxes():
    img, objs = make_fundus(1, SynthSpec(size=256, n_ma=5, n_he=2, n_ex=3))
    assert {o.label for o in objs} == {"MA", "HE", "EX", "OD"}
    for o in objs:
        x0, y0, x1, y1 = map(int, o.box)
        assert img[y0:y1, x0:x1].max() > 0  # not on the black border
    ma = [o for o in objs if o.label == "MA"]
    assert all(o.width <= 8 for o in ma)
