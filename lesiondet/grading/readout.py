"""The grade readout: linear models on a grading CNN's multi-scale features, with the lesion evidence beside them.

Why not fine-tune the CNN on the graded photographs instead? With a few hundred
photographs and a CPU, fine-tuning at 224 px loses the small lesions that
separate grades 1 and 2, and the network forgets what it learnt from thousands
of APTOS photographs. A network pre-trained on those already orders the grades;
its pooled features read at several input sizes (224 px sees the whole eye,
512 px keeps microaneurysm-sized detail) carry the rest. On them:

* a ridge regression gives a continuous grade score, cut into grades 0-4;
* logistic regressions give P(referable) and P(maculopathy);
* a multinomial one gives the grade probabilities that are reported.

The lesion evidence (``grading.learned.features`` of the detector's boxes) is a
second block of the same four models. The variant ``cnn+lesions`` mixes the two
blocks' scores, logits and probabilities (late fusion: neither block's many
features drown the other's few). With ``readout_fusion: stacked`` each output's
mix is the weight that fits the out-of-fold predictions best (squared error for
the grade score, log-loss for the rest), so a weak block is weighted down instead
of pulling a strong one halfway to it; ``mean`` is the plain average older
checkpoints used. The weights, cut points and referable threshold of each variant
are tuned on out-of-fold predictions, grouped by patient, so every photograph
trains the models and none is set aside for tuning.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lesiondet.errors import LesiondetError

N_GRADES = 5
#: which blocks each variant mixes; ``cnn+lesions`` needs the detector's lesion features at prediction time
VARIANTS: dict[str, tuple[str, ...]] = {"cnn": ("cnn",), "cnn+lesions": ("cnn", "lesions")}


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-np.clip(z, -40, 40)))


@dataclass
class Block:
    """Standardisation, then the four linear models of one feature block (weights as plain arrays)."""

    mean: np.ndarray
    scale: np.ndarray
    grade_w: np.ndarray  # ridge: standardised features → grade score
    grade_b: float
    ref_w: np.ndarray  # logistic: → referable logit
    ref_b: float
    mac_w: np.ndarray  # logistic: → maculopathy logit
    mac_b: float
    prob_w: np.ndarray  # multinomial: [n_grades, d]; grades never seen get -inf bias
    prob_b: np.ndarray

    def outputs(self, X: np.ndarray) -> dict[str, np.ndarray]:
        Z = (np.asarray(X, np.float64) - self.mean) / self.scale
        logits = Z @ self.prob_w.T + self.prob_b
        logits = logits - logits.max(1, keepdims=True)
        p = np.exp(logits)
        return {"score": Z @ self.grade_w + self.grade_b, "ref": Z @ self.ref_w + self.ref_b,
                "mac": Z @ self.mac_w + self.mac_b, "probs": p / p.sum(1, keepdims=True)}

    def to_dict(self) -> dict[str, Any]:
        return {k: (np.asarray(v, np.float32) if isinstance(v, np.ndarray) else float(v))
                for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Block:
        arr = {k: np.asarray(v.numpy() if hasattr(v, "numpy") else v, np.float64) for k, v in d.items()}
        return cls(**{k: (float(v) if v.ndim == 0 else v) for k, v in arr.items()})


def _logistic(Z: np.ndarray, y: np.ndarray, C: float) -> tuple[np.ndarray, float]:
    """Weights and bias of a logistic regression; a one-class target gives the prior (no slope)."""
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(y, int)
    if len(np.unique(y)) < 2:
        prior = (y.mean() * len(y) + 0.5) / (len(y) + 1)
        return np.zeros(Z.shape[1]), float(np.log(prior / (1 - prior)))
    m = LogisticRegression(C=C, max_iter=5000).fit(Z, y)
    return m.coef_[0].astype(np.float64), float(m.intercept_[0])


def fit_block(X: np.ndarray, grade: np.ndarray, referable: np.ndarray, maculopathy: np.ndarray,
              ridge: float, C: float) -> Block:
    """The four models on one block of features (``maculopathy`` -1: unknown, left out of that model)."""
    from sklearn.linear_model import LogisticRegression, Ridge

    X = np.asarray(X, np.float64)
    mean, scale = X.mean(0), X.std(0)
    scale[scale < 1e-8] = 1.0  # a constant feature stays constant instead of dividing by zero
    Z = (X - mean) / scale
    r = Ridge(alpha=ridge).fit(Z, grade)
    ref_w, ref_b = _logistic(Z, referable, C)
    known = maculopathy >= 0
    mac_w, mac_b = _logistic(Z[known], maculopathy[known], C) if known.any() else (np.zeros(Z.shape[1]), 0.0)
    prob_w, prob_b = np.zeros((N_GRADES, Z.shape[1])), np.full(N_GRADES, -1e9)
    seen = np.unique(grade)
    if len(seen) > 1:
        m = LogisticRegression(C=C, max_iter=5000).fit(Z, grade)
        prob_w[m.classes_], prob_b[m.classes_] = m.coef_, m.intercept_
    else:
        prob_b[seen] = 0.0
    return Block(mean, scale, r.coef_.astype(np.float64), float(r.intercept_), ref_w, ref_b, mac_w, mac_b,
                 prob_w, prob_b)


OUTPUTS = ("score", "ref", "mac", "probs")
FUSIONS = ("stacked", "mean")
#: the grid of stacking weights (the first block's share; the second block gets the rest)
FUSION_GRID = tuple(round(0.05 * k, 2) for k in range(21))


def fuse(outputs: Sequence[Mapping[str, np.ndarray]], weights: Mapping[str, float] | None = None
         ) -> dict[str, np.ndarray]:
    """Late fusion of one or two blocks: per output, ``w * first + (1 - w) * second``; no weights: the mean."""
    if len(outputs) == 1:
        return {k: outputs[0][k] for k in OUTPUTS}
    first, second = outputs
    w = {k: 0.5 if weights is None else float(weights.get(k, 0.5)) for k in OUTPUTS}
    return {k: w[k] * first[k] + (1 - w[k]) * second[k] for k in OUTPUTS}


def _fusion_loss(k: str, pred: np.ndarray, y: np.ndarray, ref: np.ndarray, mac: np.ndarray) -> float:
    """How well one fused output fits: squared error of the grade score, log-loss of the probabilities."""
    eps = 1e-7
    if k == "score":
        return float(np.mean((pred - y) ** 2))
    if k == "probs":
        return float(-np.mean(np.log(np.clip(pred[np.arange(len(y)), y], eps, 1))))
    t, keep = (ref, np.ones(len(ref), bool)) if k == "ref" else (mac, mac >= 0)
    if not keep.any():
        return 0.0
    p = np.clip(_sigmoid(pred[keep]), eps, 1 - eps)
    return float(-np.mean(t[keep] * np.log(p) + (1 - t[keep]) * np.log(1 - p)))


def stack_weights(first: Mapping[str, np.ndarray], second: Mapping[str, np.ndarray], y: np.ndarray,
                  ref: np.ndarray, mac: np.ndarray) -> dict[str, float]:
    """Per output, the first block's share (on ``FUSION_GRID``) that fits out-of-fold predictions best; ties
    go to the share nearest an even mix."""
    weights = {}
    for k in OUTPUTS:
        losses = [(_fusion_loss(k, w * first[k] + (1 - w) * second[k], y, ref, mac), abs(w - 0.5), w)
                  for w in FUSION_GRID]
        weights[k] = min(losses)[2]
    return weights


@dataclass
class Readout:
    """What ``grader fit`` adds to a grading CNN's checkpoint."""

    sizes: list[int]  # input sides the CNN's features are read at, concatenated in this order
    blocks: dict[str, Block]
    cuts: dict[str, list[float]]  # variant → the four cut points on its score
    thresholds: dict[str, float]  # variant → referable threshold on its P(referable)
    sensitivity: float  # the referable sensitivity the thresholds were tuned for (out of fold)
    tta: bool = True  # features averaged over the photograph and its two mirrors (as fitted, so as predicted)
    fusion: dict[str, dict[str, float]] = field(default_factory=dict)  # variant → the first block's share
    # per output (stacked); a variant not listed averages its blocks (checkpoints before stacking)

    def variant(self, lesions: bool) -> str:
        return "cnn+lesions" if lesions and "lesions" in self.blocks else "cnn"

    def predict(self, E: np.ndarray, L: np.ndarray | None = None) -> dict[str, Any]:
        """Grades and probabilities from multi-scale CNN features ``E`` (and lesion features ``L``)."""
        name = self.variant(L is not None)
        feats = {"cnn": E, "lesions": L}
        d = fuse([self.blocks[b].outputs(feats[b]) for b in VARIANTS[name]], self.fusion.get(name))
        p_ref, p_mac = _sigmoid(d["ref"]), _sigmoid(d["mac"])
        grade = apply_cuts(d["score"], self.cuts[name])
        return {"variant": name, "grade": grade, "score": d["score"], "probabilities": d["probs"],
                "p_referable": p_ref, "p_maculopathy": p_mac,
                "referable": (grade >= 2) | (p_ref >= self.thresholds[name])}

    def to_dict(self) -> dict[str, Any]:
        return {"sizes": list(self.sizes), "blocks": {k: b.to_dict() for k, b in self.blocks.items()},
                "cuts": self.cuts, "thresholds": self.thresholds, "sensitivity": self.sensitivity, "tta": self.tta,
                "fusion": self.fusion}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Readout:
        return cls([int(s) for s in d["sizes"]], {k: Block.from_dict(b) for k, b in d["blocks"].items()},
                   {k: [float(c) for c in v] for k, v in d["cuts"].items()},
                   {k: float(v) for k, v in d["thresholds"].items()}, float(d["sensitivity"]),
                   bool(d.get("tta", True)),
                   {v: {k: float(w) for k, w in ws.items()} for v, ws in dict(d.get("fusion") or {}).items()})


def apply_cuts(score: np.ndarray, cuts: Sequence[float]) -> np.ndarray:
    """Grade = number of cut points the score passes."""
    return np.searchsorted(np.asarray(cuts, float), np.asarray(score, float), side="right")


def tune_cuts(score: np.ndarray, y: Sequence[int], start: Sequence[float] = (0.5, 1.5, 2.5, 3.5)) -> list[float]:
    """Cut points maximising quadratic-weighted kappa on (score, grade) pairs, by coordinate search.

    Starts from the plain rounding points and only moves a cut when kappa strictly improves,
    so with little validation data the answer stays near rounding.
    """
    from lesiondet.grading.learned import quadratic_weighted_kappa as qwk

    cuts = list(start)
    best = qwk(y, apply_cuts(score, cuts))
    for _ in range(3):
        for i in range(len(cuts)):
            lo = cuts[i - 1] + 0.05 if i else 0.0
            hi = cuts[i + 1] - 0.05 if i + 1 < len(cuts) else N_GRADES - 1.0
            for c in np.linspace(lo, hi, 40):
                trial = cuts[:i] + [float(c)] + cuts[i + 1:]
                k = qwk(y, apply_cuts(score, trial))
                if k > best + 1e-9:
                    best, cuts = k, trial
    return [round(c, 4) for c in cuts]


def tune_referable(p: np.ndarray, truth: Sequence[bool], sensitivity: float) -> float:
    """The highest threshold on ``p`` whose sensitivity on ``truth`` reaches ``sensitivity`` (0.5 without positives)."""
    truth = np.asarray(truth, bool)
    if not truth.any():
        return 0.5
    pos = np.sort(p[truth])[::-1]
    k = int(np.ceil(sensitivity * len(pos))) - 1
    return float(pos[min(max(k, 0), len(pos) - 1)])


def cached_features(cache: str | Path | None, weights: str | Path, paths: Sequence[Path], sizes: Sequence[int],
                     preprocessed: bool, compute: Callable[[], Any], tta: bool = True) -> Any:
    """``compute()``, or what ``cache`` (an ``.npz``) holds for the same network digest, photographs, sizes and
    preprocessing; a new result replaces it. Refitting a readout on new lesion evidence then reads no photograph."""
    from json import dumps as json_dumps

    from lesiondet.fileio import atomic_path, sha256

    if cache is None:
        return compute()
    key = {"weights": sha256(weights), "images": [str(p) for p in paths], "sizes": list(sizes),
           "preprocessed": preprocessed}
    if not tta:  # (mirror-averaged features were the only kind when caches were first written)
        key["tta"] = False
    key = json_dumps(key)
    cache = Path(cache)
    if cache.is_file():
        with np.load(cache) as z:
            if str(z["key"]) == key:
                return z["E"]
    E = compute()
    with atomic_path(cache) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, E=E, key=np.array(key))
    return E


def _fit_blocks(feats: Mapping[str, np.ndarray], idx: np.ndarray, y: np.ndarray, ref: np.ndarray, mac: np.ndarray,
                params: Mapping[str, tuple[float, float]]) -> dict[str, Block]:
    return {b: fit_block(X[idx], y[idx], ref[idx], mac[idx], *params[b]) for b, X in feats.items()}


def fit_readout(E: np.ndarray, L: np.ndarray | None, grades: Sequence[int], referable: Sequence[bool],
                maculopathy: Sequence[int | None], patients: Sequence[str], sizes: Sequence[int],
                cfg: Mapping[str, Any], tta: bool = True) -> tuple[Readout, dict[str, dict[str, np.ndarray]]]:
    """Fit every block on all photographs; tune each variant's cut points and referable threshold on
    patient-grouped out-of-fold predictions. Returns the readout and those out-of-fold predictions
    (an honest estimate of how it grades new patients)."""
    from lesiondet.io.splits import group_folds

    fusion_mode = str(cfg["readout_fusion"])
    if fusion_mode not in FUSIONS:  # before any model is fitted
        raise LesiondetError(None, f"unknown readout_fusion '{fusion_mode}'", f"use one of {', '.join(FUSIONS)}")
    y = np.asarray(grades, int)
    ref = np.asarray(referable, bool).astype(int)
    mac = np.array([-1 if m is None else int(m) for m in maculopathy])
    feats = {"cnn": np.asarray(E, np.float64)}
    if L is not None:
        feats["lesions"] = np.asarray(L, np.float64)
    params = {"cnn": (float(cfg["readout_ridge"]), float(cfg["readout_C"])),
              "lesions": (float(cfg["lesion_ridge"]), float(cfg["lesion_C"]))}
    names = [v for v, bs in VARIANTS.items() if all(b in feats for b in bs)]
    per_block = {b: {"score": np.zeros(len(y)), "ref": np.zeros(len(y)), "mac": np.zeros(len(y)),
                     "probs": np.zeros((len(y), N_GRADES))} for b in feats}
    for tr, te in group_folds(list(patients), y, int(cfg["readout_folds"]), int(cfg["seed"]), "photographs"):
        blocks = _fit_blocks(feats, tr, y, ref, mac, params)
        for b, o in per_block.items():
            for k, v in blocks[b].outputs(feats[b][te]).items():
                o[k][te] = v
    fusion = {v: stack_weights(*[per_block[b] for b in VARIANTS[v]], y, ref, mac)
              for v in names if len(VARIANTS[v]) == 2 and fusion_mode == "stacked"}
    oof = {v: fuse([per_block[b] for b in VARIANTS[v]], fusion.get(v)) for v in names}
    sens = float(cfg["referable_sensitivity"])
    cuts, thresholds = {}, {}
    for v in names:
        o = oof[v]
        cuts[v] = tune_cuts(o["score"], y)
        o["grade"] = apply_cuts(o["score"], cuts[v])
        o["p_referable"], o["p_maculopathy"] = _sigmoid(o["ref"]), _sigmoid(o["mac"])
        thresholds[v] = _referable_threshold(o["p_referable"], o["grade"], ref.astype(bool), sens)
        o["referable"] = (o["grade"] >= 2) | (o["p_referable"] >= thresholds[v])
    blocks = _fit_blocks(feats, np.arange(len(y)), y, ref, mac, params)
    return Readout([int(s) for s in sizes], blocks, cuts, thresholds, sens, tta, fusion), oof


def _referable_threshold(p: np.ndarray, grade: np.ndarray, truth: np.ndarray, sensitivity: float) -> float:
    """The highest threshold at which "grade >= 2 or P(referable) >= threshold" reaches ``sensitivity``.

    The grade already refers the eyes it calls 2 or worse, so the threshold only has to find the
    referable eyes the cut points missed.
    """
    missed = truth & (grade < 2)
    need = sensitivity * truth.sum() - (truth & (grade >= 2)).sum()
    if need <= 0 or not missed.any():
        return 1.0 + 1e-9 if need <= 0 else 0.0
    return tune_referable(p[missed], np.ones(missed.sum(), bool), min(1.0, need / missed.sum()))
