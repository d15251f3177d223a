"""The grade readout: linear models on CNN features (and lesion features), tuned out of fold, by patient."""
import numpy as np

from lesiondet.grading.learned import quadratic_weighted_kappa as qwk
from lesiondet.grading.readout import Readout, fit_readout

CFG = {"readout_ridge": 10.0, "readout_C": 0.1, "lesion_ridge": 1.0, "lesion_C": 1.0, "readout_folds": 5,
       "readout_fusion": "stacked", "seed": 0, "referable_sensitivity": 0.9}


def graded_set(n_patients=80, signal=1.0, seed=0):
    """Two eyes per patient; image features and lesion features both carry the grade (with noise)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(rng.integers(0, 5, n_patients), 2)
    mac = (rng.random(len(y)) < 0.1 + 0.15 * y).astype(int)
    E = rng.normal(size=(len(y), 40))
    E[:, :3] += signal * y[:, None] + 0.5 * signal * mac[:, None]
    L = rng.normal(size=(len(y), 6))
    L[:, 0] += signal * y
    patients = [f"P{i // 2}" for i in range(len(y))]
    referable = (y >= 2) | (mac == 1)
    return E, L, y, referable, mac, patients


def fit(E, L, y, referable, mac, patients, cfg=CFG):
    return fit_readout(E, L, y, referable, list(mac), patients, [224, 384], cfg)


def test_informative_features_grade_well_out_of_fold_and_noise_does_not():
    E, L, y, ref, mac, pat = graded_set()
    readout, oof = fit(E, L, y, ref, mac, pat)
    assert set(oof) == {"cnn", "cnn+lesions"}
    assert qwk(y, oof["cnn"]["grade"]) > 0.7 and qwk(y, oof["cnn+lesions"]["grade"]) > 0.7
    _, noise = fit(*graded_set(signal=0.0)[:1], None, y, ref, mac, pat)
    assert set(noise) == {"cnn"} and qwk(y, noise["cnn"]["grade"]) < 0.3


def test_cut_points_are_ordered_and_the_referable_threshold_reaches_its_sensitivity_out_of_fold():
    E, L, y, ref, mac, pat = graded_set(signal=0.6)
    readout, oof = fit(E, L, y, ref, mac, pat)
    for v, o in oof.items():
        assert readout.cuts[v] == sorted(readout.cuts[v]) and len(readout.cuts[v]) == 4
        assert o["referable"][ref].mean() >= CFG["referable_sensitivity"] - 1e-9
        assert np.all(o["referable"][o["grade"] >= 2])  # grade 2 or worse is always referred


def test_lesion_features_are_used_only_when_given_and_the_variant_says_so():
    E, L, y, ref, mac, pat = graded_set()
    readout, _ = fit(E, L, y, ref, mac, pat)
    assert readout.predict(E[:4])["variant"] == "cnn"
    both = readout.predict(E[:4], L[:4])
    assert both["variant"] == "cnn+lesions" and both["probabilities"].shape == (4, 5)
    assert np.allclose(both["probabilities"].sum(1), 1)
    assert not np.allclose(readout.predict(E[:4], L[:4] + 5)["score"], both["score"])


def test_the_readout_survives_a_weights_only_checkpoint(tmp_path):
    from lesiondet.engine.checkpoint import load_checkpoint, save_checkpoint

    E, L, y, ref, mac, pat = graded_set()
    readout, _ = fit(E, L, y, ref, mac, pat)
    save_checkpoint(tmp_path / "g.pt", {"readout": readout.to_dict()})
    again = Readout.from_dict(load_checkpoint(tmp_path / "g.pt")["readout"])
    a, b = readout.predict(E, L), again.predict(E, L)
    assert np.array_equal(a["grade"], b["grade"]) and np.allclose(a["p_referable"], b["p_referable"], atol=1e-5)


def test_unknown_or_one_class_maculopathy_and_a_missing_grade_do_not_break_the_fit():
    E, L, y, ref, mac, pat = graded_set()
    mac = [None] * len(y)
    y = np.where(y == 4, 3, y)  # no grade 4 at all
    readout, oof = fit(E, L, y, ref, mac, pat)
    p = readout.predict(E, L)
    assert np.allclose(p["probabilities"][:, 4], 0) and np.all(np.isfinite(p["p_maculopathy"]))


def test_raw_photographs_get_ben_graham_even_for_a_network_pre_trained_on_processed_ones(tmp_path):
    import cv2

    from lesiondet.grading.cnn import embed_photographs
    from lesiondet.grading.fundus import ben_graham

    img = np.zeros((300, 400, 3), np.uint8)
    cv2.circle(img, (200, 150), 140, (150, 70, 30), -1)
    cv2.circle(img, (150, 120), 6, (90, 20, 10), -1)
    path = tmp_path / "eye.png"
    cv2.imwrite(str(path), img[:, :, ::-1])

    class Network:  # stands in for GraderCNN: hands back what it was given
        preprocessed = True  # trained on the source-processed APTOS copy

        def embed(self, images, sizes, tta=True):
            return np.stack([im.astype(float).ravel() for im in images])

    seen = embed_photographs(Network(), [path], [64])
    assert np.array_equal(seen[0], ben_graham(img, 64).astype(float).ravel())
    as_is = embed_photographs(Network(), [path], [64], preprocessed=True)
    assert not np.array_equal(as_is, seen)


def test_grader_fit_reuses_cached_features_only_for_the_same_network_and_photographs(tmp_path):
    import numpy as np

    from lesiondet.grading.readout import cached_features

    w1, w2 = tmp_path / "a.pt", tmp_path / "b.pt"
    w1.write_bytes(b"network one")
    w2.write_bytes(b"network two")
    calls = []

    def compute():
        calls.append(1)
        return np.arange(6.0).reshape(2, 3) + len(calls)

    cache = tmp_path / "f.npz"
    paths = [tmp_path / "x.jpg", tmp_path / "y.jpg"]
    first = cached_features(cache, w1, paths, [224], False, compute)
    again = cached_features(cache, w1, paths, [224], False, compute)
    assert len(calls) == 1 and np.array_equal(first, again)
    cached_features(cache, w2, paths, [224], False, compute)           # another network
    cached_features(cache, w2, paths[:1], [224], False, compute)       # other photographs
    cached_features(cache, w2, paths[:1], [224, 384], False, compute)  # other sizes
    assert len(calls) == 4


def test_a_readout_fitted_without_mirrors_says_so_and_older_ones_were_fitted_with_them(tmp_path):
    from lesiondet.engine.checkpoint import load_checkpoint, save_checkpoint

    E, L, y, ref, mac, pat = graded_set()
    readout, _ = fit_readout(E, L, y, ref, list(mac), pat, [224], CFG, tta=False)
    save_checkpoint(tmp_path / "g.pt", {"readout": readout.to_dict()})
    assert Readout.from_dict(load_checkpoint(tmp_path / "g.pt")["readout"]).tta is False
    older = {k: v for k, v in readout.to_dict().items() if k != "tta"}  # written before mirrors were a choice
    assert Readout.from_dict(older).tta is True


def test_the_grader_reads_features_the_way_its_readout_was_fitted(monkeypatch):
    from lesiondet.grading import cnn

    E, L, y, ref, mac, pat = graded_set()
    g = object.__new__(cnn.GraderCNN)  # no network needed: embed is replaced below
    calls = []
    g.readout = fit_readout(E, None, y, ref, list(mac), pat, [224], CFG, tta=False)[0]
    g.embed = lambda images, sizes=None, tta=True: calls.append(tta) or E[:len(images)]
    g.predict_images([np.zeros((8, 8, 3), np.uint8)] * 2)
    g.readout.tta = True
    g.predict_images([np.zeros((8, 8, 3), np.uint8)] * 2)
    g.predict_images([np.zeros((8, 8, 3), np.uint8)] * 2, tta=False)  # an explicit choice wins
    assert calls == [False, True, False]


def test_stacking_weighs_down_a_block_that_only_adds_noise():
    from lesiondet.grading.readout import stack_weights

    rng = np.random.default_rng(1)
    y = rng.integers(0, 5, 400)
    ref, mac = (y >= 2).astype(int), -np.ones(400, int)

    def block(noise):
        score = y + noise * rng.normal(size=400)
        probs = np.full((400, 5), 0.2)
        return {"score": score, "ref": 3 * (score - 1.5), "mac": np.zeros(400), "probs": probs}

    good, bad = block(0.3), block(3.0)
    w = stack_weights(good, bad, y, ref, mac)
    assert w["score"] >= 0.8 and w["ref"] >= 0.8
    assert stack_weights(bad, good, y, ref, mac)["score"] <= 0.2  # the weight follows the block, not its place
    assert w["probs"] == 0.5 and w["mac"] == 0.5  # blocks that are equally (un)informative stay an even mix


def test_a_stacked_readout_keeps_its_weights_and_older_ones_average_their_blocks():
    E, L, y, ref, mac, pat = graded_set(signal=0.6)
    readout, oof = fit(E, L, y, ref, mac, pat)
    assert set(readout.fusion) == {"cnn+lesions"} and set(readout.fusion["cnn+lesions"]) == {"score", "ref", "mac",
                                                                                              "probs"}
    again = Readout.from_dict(readout.to_dict())
    assert again.fusion == readout.fusion
    older = Readout.from_dict({k: v for k, v in readout.to_dict().items() if k != "fusion"})
    a, b = readout.blocks["cnn"].outputs(E), readout.blocks["lesions"].outputs(L)
    assert np.allclose(older.predict(E, L)["raw_score"], (a["score"] + b["score"]) / 2)
    mean, _ = fit(E, L, y, ref, mac, pat, {**CFG, "readout_fusion": "mean"})
    assert mean.fusion == {}


# ---------------------------------------------------------------- other cameras: views and familiarity
FAMILIAR = {**CFG, "familiar_components": 8, "familiar_quantile": 0.995, "familiar_margin": 1.5, "score_margin": 0.75}


def shifted(E, seed=1, strength=3.0):
    """What a smaller, compressed photograph does to the features: the fine-detail ones (10-19) lose what they
    carried and take on the compression's own pattern."""
    rng = np.random.default_rng(seed)
    out = E.copy()
    out[:, 10:20] = strength * rng.random((len(E), 1)) + rng.normal(0, 1.0, (len(E), 10))
    return out


def test_a_readout_shown_camera_shifted_views_grades_shifted_photographs_and_keeps_its_own():
    E, L, y, ref, mac, pat = graded_set(signal=0.6)
    E[:, 10:20] += 0.6 * y[:, None]  # fine detail carries the grade in the camera's own photographs
    views = np.stack([shifted(E, s) for s in (1, 2)], 1)
    plain, _ = fit_readout(E, None, y, ref, list(mac), pat, [224], FAMILIAR)
    robust, oof = fit_readout(E, None, y, ref, list(mac), pat, [224], FAMILIAR, views=views)
    assert robust.views == 2 and oof["cnn@views"]["grade"].shape == (len(y) * 2,)
    test = shifted(E, seed=9)
    err_plain = np.abs(plain.predict(test)["raw_score"] - y).mean()
    err_robust = np.abs(robust.predict(test)["raw_score"] - y).mean()
    assert err_robust < 0.8 * err_plain
    assert qwk(y, robust.predict(E)["grade"]) > 0.7


def test_features_far_from_every_training_photograph_are_unfamiliar_and_near_ones_are_not():
    E, L, y, ref, mac, pat = graded_set(signal=0.6)
    readout, _ = fit_readout(E, None, y, ref, list(mac), pat, [224], FAMILIAR)
    near = readout.predict(graded_set(signal=0.6, seed=5)[0])
    assert near["familiar"].mean() > 0.95
    far = readout.predict(np.random.default_rng(0).normal(0, 6, E.shape))
    assert not far["familiar"].any() and (far["novelty"] > 1).all()


def test_a_grade_score_outside_the_fitted_range_is_unfamiliar_and_the_reported_score_is_bounded():
    E, L, y, ref, mac, pat = graded_set(signal=0.6)
    readout, _ = fit_readout(E, None, y, ref, list(mac), pat, [224], FAMILIAR)
    lo, hi = readout.familiarity.score_range
    assert lo < 0.5 and hi > 3.5 and hi - lo < 8
    # a photograph along the grade direction, ten times further than any grade-4 eye
    runaway = E[:3].copy()
    runaway[:, :3] = 40
    d = readout.predict(runaway)
    assert (d["raw_score"] > hi).all() and not d["in_range"].any() and not d["familiar"].any()
    assert (d["score"] <= 4).all() and (readout.predict(E)["score"] >= 0).all()


def test_familiarity_travels_in_the_checkpoint_and_older_readouts_call_everything_familiar(tmp_path):
    from lesiondet.engine.checkpoint import load_checkpoint, save_checkpoint

    E, L, y, ref, mac, pat = graded_set(signal=0.6)
    readout, _ = fit_readout(E, None, y, ref, list(mac), pat, [224], FAMILIAR, views=shifted(E)[:, None])
    save_checkpoint(tmp_path / "g.pt", {"readout": readout.to_dict()})
    again = Readout.from_dict(load_checkpoint(tmp_path / "g.pt")["readout"])
    far = np.random.default_rng(0).normal(0, 6, E.shape)
    assert np.allclose(again.predict(far)["novelty"], readout.predict(far)["novelty"], rtol=1e-4)
    assert again.views == 1
    older = Readout.from_dict({k: v for k, v in readout.to_dict().items() if k not in ("familiarity", "views")})
    assert older.familiarity is None and older.predict(far)["familiar"].all()
