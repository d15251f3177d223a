"""Linear heads stored as plain numbers give scikit-learn's own probabilities."""
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lesiondet.nn.logistic import PlainLogistic


@pytest.mark.parametrize("n_classes", [2, 4])
def test_plain_arrays_reproduce_sklearn_predict_proba(n_classes):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 5)) * [1, 10, 0.1, 3, 1]
    y = rng.integers(0, n_classes, 120)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, y)
    plain = PlainLogistic.from_dict(PlainLogistic.from_sklearn(clf).to_dict())
    assert np.allclose(plain.predict_proba(X), clf.predict_proba(X), atol=1e-10)
    assert plain.classes_.tolist() == clf.classes_.tolist()
