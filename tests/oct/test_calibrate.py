"""OCT calibration: one temperature fitted on held-out probabilities, and the "uncertain" cut."""
import numpy as np
import pytest

from lesiondet.oct.calibrate import expected_calibration_error, fit_temperature, uncertain_cut, with_temperature


def overconfident(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Calibrated probabilities, labels drawn from them, and the same probabilities sharpened (T = 1/3)."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet([1.0, 1.0, 1.0, 1.0], n)
    y = np.array([rng.choice(4, p=row) for row in p])
    return p, y, with_temperature(p, 1 / 3)


def test_temperature_one_changes_nothing_and_rows_stay_probabilities():
    p, _, sharp = overconfident(50)
    assert np.allclose(with_temperature(p, 1.0), p)
    assert np.allclose(sharp.sum(1), 1) and (sharp.argmax(1) == p.argmax(1)).all()


def test_the_fitted_temperature_undoes_overconfidence_and_lowers_the_calibration_error():
    p, y, sharp = overconfident()
    t = fit_temperature(sharp, y)
    assert t == pytest.approx(3.0, rel=0.15)
    assert expected_calibration_error(with_temperature(sharp, t), y) < expected_calibration_error(sharp, y) / 2
    assert expected_calibration_error(p, y) < 0.05


def test_the_uncertain_cut_keeps_the_confident_answers_at_the_target_accuracy():
    p, y, _ = overconfident()
    cut = uncertain_cut(p, y, target_accuracy=0.8)
    keep = p.max(1) >= cut["threshold"]
    assert (p.argmax(1)[keep] == y[keep]).mean() >= 0.8
    assert cut["coverage"] == pytest.approx(keep.mean()) and 0 < cut["coverage"] < 1
    # a lower target answers more scans
    assert uncertain_cut(p, y, target_accuracy=0.6)["coverage"] > cut["coverage"]


def test_an_unreachable_target_still_answers_at_least_half_of_the_scans():
    p, y, _ = overconfident()
    cut = uncertain_cut(p, np.roll(y, 1), target_accuracy=0.99)  # labels unrelated to the probabilities
    assert cut["coverage"] >= 0.5
