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

Photographs from other cameras. A readout fitted on one camera's photographs
alone reads a 400-px JPEG of a healthy eye as grade 4 with certainty: its ridge
weights were never shown what a small, compressed photograph does to the
features. So the CNN block is also fitted on ``views``, camera-shifted copies of
every training photograph (``camera.CameraShift``: smaller fields of view, JPEG,
crops, colour), with the photograph's own grade and patient. And a readout knows
where it was fitted (``Familiarity``): features far from every training
photograph's, or a grade score outside the range the training photographs gave,
make the answer "unfamiliar" instead of a grade.
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
class Familiarity:
    """How far a photograph's CNN features lie from the training photographs': PCA on the standardised
    features, Hotelling's T² inside the first components and the squared residual outside them (SPE),
    each divided by its limit (the ``quantile`` of out-of-fold photographs' values times ``margin``).
    A photograph is unfamiliar when either ratio exceeds 1, or its grade score leaves ``score_range``."""

    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray  # [k, d] orthonormal rows
    variances: np.ndarray  # [k]
    t2_limit: float
    spe_limit: float
    score_range: tuple[float, float]

    def ratios(self, X: np.ndarray) -> np.ndarray:
        """``[n, 2]``: T² and SPE of each row over their limits (above 1: outside what was fitted)."""
        t2, spe = _novelty(np.asarray(X, np.float64), self.mean, self.scale, self.components, self.variances)
        return np.column_stack([t2 / self.t2_limit, spe / self.spe_limit])

    def to_dict(self) -> dict[str, Any]:
        return {"mean": np.asarray(self.mean, np.float32), "scale": np.asarray(self.scale, np.float32),
                "components": np.asarray(self.components, np.float32),
                "variances": np.asarray(self.variances, np.float32), "t2_limit": float(self.t2_limit),
                "spe_limit": float(self.spe_limit), "score_range": [float(v) for v in self.score_range]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Familiarity:
        def arr(v: Any) -> np.ndarray:
            return np.asarray(v.numpy() if hasattr(v, "numpy") else v, np.float64)

        lo, hi = (float(v) for v in d["score_range"])
        return cls(arr(d["mean"]), arr(d["scale"]), arr(d["components"]), arr(d["variances"]),
                   float(d["t2_limit"]), float(d["spe_limit"]), (lo, hi))


def _pca(X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    mean, scale = X.mean(0), X.std(0)
    scale[scale < 1e-8] = 1.0
    Z = (X - mean) / scale
    _, sv, vt = np.linalg.svd(Z, full_matrices=False)
    k = min(k, len(sv))
    return mean, scale, vt[:k], np.maximum(sv[:k] ** 2 / max(len(Z) - 1, 1), 1e-8)


def _novelty(X: np.ndarray, mean: np.ndarray, scale: np.ndarray, comps: np.ndarray, var: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    Z = (X - mean) / scale
    P = Z @ comps.T
    t2 = (P ** 2 / var).sum(1)
    spe = ((Z - P @ comps) ** 2).mean(1)
    return t2, spe


def fit_familiarity(X: np.ndarray, folds: Sequence[tuple[np.ndarray, np.ndarray]], scores: np.ndarray,
                    cfg: Mapping[str, Any]) -> Familiarity:
    """Limits from out-of-fold rows (each fold's PCA scores the rows it did not see), the model on every row."""
    k, q, margin = int(cfg["familiar_components"]), float(cfg["familiar_quantile"]), float(cfg["familiar_margin"])
    t2, spe = np.zeros(len(X)), np.zeros(len(X))
    for tr, te in folds:
        t2[te], spe[te] = _novelty(X[te], *_pca(X[tr], k))
    pad = float(cfg["score_margin"])
    return Familiarity(*_pca(X, k), float(np.quantile(t2, q)) * margin, float(np.quantile(spe, q)) * margin,
                       (float(scores.min()) - pad, float(scores.max()) + pad))


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
    familiarity: Familiarity | None = None  # None: fitted before the check existed (every photograph familiar)
    views: int = 0  # camera-shifted copies of each training photograph the CNN block was also fitted on

    def variant(self, lesions: bool) -> str:
        return "cnn+lesions" if lesions and "lesions" in self.blocks else "cnn"

    def predict(self, E: np.ndarray, L: np.ndarray | None = None) -> dict[str, Any]:
        """Grades and probabilities from multi-scale CNN features ``E`` (and lesion features ``L``)."""
        name = self.variant(L is not None)
        feats = {"cnn": E, "lesions": L}
        d = fuse([self.blocks[b].outputs(feats[b]) for b in VARIANTS[name]], self.fusion.get(name))
        p_ref, p_mac = _sigmoid(d["ref"]), _sigmoid(d["mac"])
        grade = apply_cuts(d["score"], self.cuts[name])
        out = {"variant": name, "grade": grade, "score": np.clip(d["score"], 0.0, N_GRADES - 1.0),
               "raw_score": d["score"], "probabilities": d["probs"], "p_referable": p_ref, "p_maculopathy": p_mac,
               "referable": (grade >= 2) | (p_ref >= self.thresholds[name]),
               "familiar": np.ones(len(E), bool), "novelty": np.zeros(len(E)), "in_range": np.ones(len(E), bool)}
        if self.familiarity is not None:
            # the CNN block's own score is checked too: the lesions can pull a runaway fused score back
            cnn_score = self.blocks["cnn"].outputs(E)["score"]
            lo, hi = self.familiarity.score_range
            in_range = (cnn_score >= lo) & (cnn_score <= hi) & (d["score"] >= lo) & (d["score"] <= hi)
            novelty = self.familiarity.ratios(E).max(1)
            out.update(familiar=(novelty <= 1) & in_range, novelty=novelty, in_range=in_range)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"sizes": list(self.sizes), "blocks": {k: b.to_dict() for k, b in self.blocks.items()},
                "cuts": self.cuts, "thresholds": self.thresholds, "sensitivity": self.sensitivity, "tta": self.tta,
                "fusion": self.fusion, "views": self.views,
                **({"familiarity": self.familiarity.to_dict()} if self.familiarity is not None else {})}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Readout:
        return cls([int(s) for s in d["sizes"]], {k: Block.from_dict(b) for k, b in d["blocks"].items()},
                   {k: [float(c) for c in v] for k, v in d["cuts"].items()},
                   {k: float(v) for k, v in d["thresholds"].items()}, float(d["sensitivity"]),
                   bool(d.get("tta", True)),
                   {v: {k: float(w) for k, w in ws.items()} for v, ws in dict(d.get("fusion") or {}).items()},
                   Familiarity.from_dict(d["familiarity"]) if d.get("familiarity") else None,
                   int(d.get("views", 0)))


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
                     preprocessed: bool, compute: Callable[[], Any], tta: bool = True,
                     extra: Mapping[str, Any] | None = None) -> Any:
    """``compute()``, or what ``cache`` (an ``.npz``) holds for the same network digest, photographs, sizes,
    preprocessing recipe and ``extra`` (e.g. which camera view); a new result replaces it. Refitting a readout
    on new lesion evidence then reads no photograph."""
    from json import dumps as json_dumps

    from lesiondet.fileio import atomic_path, sha256
    from lesiondet.grading.fundus import RECIPE

    if cache is None:
        return compute()
    key = {"weights": sha256(weights), "images": [str(p) for p in paths], "sizes": list(sizes),
           "preprocessed": preprocessed, "recipe": RECIPE, **dict(extra or {})}
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
                params: Mapping[str, tuple[float, float]], views: np.ndarray | None = None) -> dict[str, Block]:
    """Each block on the rows ``idx``; the CNN block also on those rows' camera-shifted ``views``."""
    blocks = {}
    for b, X in feats.items():
        Xb, yb, rb, mb = X[idx], y[idx], ref[idx], mac[idx]
        if b == "cnn" and views is not None:
            k = views.shape[1]
            Xb = np.vstack([Xb, views[idx].reshape(-1, X.shape[1])])
            yb, rb, mb = (np.concatenate([a, np.repeat(a, k)]) for a in (yb, rb, mb))
        blocks[b] = fit_block(Xb, yb, rb, mb, *params[b])
    return blocks


def fit_readout(E: np.ndarray, L: np.ndarray | None, grades: Sequence[int], referable: Sequence[bool],
                maculopathy: Sequence[int | None], patients: Sequence[str], sizes: Sequence[int],
                cfg: Mapping[str, Any], tta: bool = True, views: np.ndarray | None = None
                ) -> tuple[Readout, dict[str, dict[str, np.ndarray]]]:
    """Fit every block on all photographs; tune each variant's cut points and referable threshold on
    patient-grouped out-of-fold predictions. Returns the readout and those out-of-fold predictions
    (an honest estimate of how it grades new patients).

    ``views``: ``[n, k, d]`` CNN features of ``k`` camera-shifted copies of each photograph. The CNN
    block is fitted on them beside the photographs; the ``cnn`` variant's cut points, threshold and
    familiarity limits are tuned on their out-of-fold predictions too, which ``oof["cnn@views"]`` holds
    (one row per copy, photograph by photograph)."""
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
    V = None if views is None or not np.size(views) else np.asarray(views, np.float64)
    k = 0 if V is None else V.shape[1]
    params = {"cnn": (float(cfg["readout_ridge"]), float(cfg["readout_C"])),
              "lesions": (float(cfg["lesion_ridge"]), float(cfg["lesion_C"]))}
    names = [v for v, bs in VARIANTS.items() if all(b in feats for b in bs)]

    def empty(n: int) -> dict[str, np.ndarray]:
        return {"score": np.zeros(n), "ref": np.zeros(n), "mac": np.zeros(n), "probs": np.zeros((n, N_GRADES))}

    per_block = {b: empty(len(y)) for b in feats}
    on_views = empty(len(y) * k)
    folds = group_folds(list(patients), y, int(cfg["readout_folds"]), int(cfg["seed"]), "photographs")
    for tr, te in folds:
        blocks = _fit_blocks(feats, tr, y, ref, mac, params, V)
        for b, o in per_block.items():
            for key, v in blocks[b].outputs(feats[b][te]).items():
                o[key][te] = v
        if k:
            rows = (te[:, None] * k + np.arange(k)).ravel()
            for key, v in blocks["cnn"].outputs(V[te].reshape(-1, V.shape[2])).items():
                on_views[key][rows] = v
    fusion = {v: stack_weights(*[per_block[b] for b in VARIANTS[v]], y, ref, mac)
              for v in names if len(VARIANTS[v]) == 2 and fusion_mode == "stacked"}
    oof = {v: fuse([per_block[b] for b in VARIANTS[v]], fusion.get(v)) for v in names}
    yv, refv, macv = (np.repeat(a, k) for a in (y, ref, mac))
    sens = float(cfg["referable_sensitivity"])
    cuts, thresholds = {}, {}
    for v in names:
        o = oof[v]
        if v == "cnn" and k:  # the image model alone grades photographs of any camera: tuned on both
            both = {key: np.concatenate([o[key], on_views[key]]) for key in OUTPUTS}
            cuts[v] = tune_cuts(both["score"], np.concatenate([y, yv]))
            g_both = apply_cuts(both["score"], cuts[v])
            thresholds[v] = _referable_threshold(_sigmoid(both["ref"]), g_both,
                                                 np.concatenate([ref, refv]).astype(bool),
                                                 float(cfg.get("referable_sensitivity_any_camera", sens)))
        else:
            cuts[v] = tune_cuts(o["score"], y)
            thresholds[v] = _referable_threshold(_sigmoid(o["ref"]), apply_cuts(o["score"], cuts[v]),
                                                 ref.astype(bool), sens)
    if k:
        oof["cnn@views"] = on_views
        cuts["cnn@views"], thresholds["cnn@views"] = cuts["cnn"], thresholds["cnn"]
    for v, o in oof.items():
        o["grade"] = apply_cuts(o["score"], cuts[v])
        o["p_referable"], o["p_maculopathy"] = _sigmoid(o["ref"]), _sigmoid(o["mac"])
        o["referable"] = (o["grade"] >= 2) | (o["p_referable"] >= thresholds[v])
    cuts.pop("cnn@views", None), thresholds.pop("cnn@views", None)  # (only for the out-of-fold figures)
    blocks = _fit_blocks(feats, np.arange(len(y)), y, ref, mac, params, V)
    familiarity = None
    if cfg.get("familiar_components"):
        # every row the CNN block saw, photographs and their views, with its patient's folds
        X = feats["cnn"] if not k else np.vstack([feats["cnn"], V.reshape(-1, V.shape[2])])
        n = len(y)
        rows = [(np.concatenate([tr, n + (tr[:, None] * k + np.arange(k)).ravel()]),
                 np.concatenate([te, n + (te[:, None] * k + np.arange(k)).ravel()])) for tr, te in folds]
        scores = [o["score"] for o in oof.values()]
        familiarity = fit_familiarity(X, rows, np.concatenate(scores), cfg)
    return Readout([int(s) for s in sizes], blocks, cuts, thresholds, sens, tta, fusion, familiarity, k), oof


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
