"""Random streams: seeding, and saving them in a checkpoint in plain types so a resumed run continues exactly."""
from __future__ import annotations

import random
from typing import Any, Mapping

import albumentations as A
import numpy as np
import torch


def rng_state() -> dict[str, Any]:
    """Every global random stream, in plain types (NumPy's key array becomes a tensor)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss,
                                                    gauss], "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(tuple(v if not isinstance(v, list) else tuple(v) for v in state["python"]))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def seed_augment(tf: A.Compose, seed: int) -> None:
    """Draw every augmentation from one stream seeded with ``seed``.

    Albumentations keeps its own generators, untouched by ``np.random.seed``;
    one shared stream (rather than ``Compose.set_random_seed``, which gives each
    transform the same seed and so flips horizontally exactly when it flips
    vertically) makes runs repeatable and lets ``last.pt`` carry the state.
    """
    tf.set_random_state(np.random.default_rng(seed), random.Random(seed))


def augment_state(tf: A.Compose) -> dict[str, Any]:
    return {"numpy": tf.random_generator.bit_generator.state, "python": tf.py_random.getstate()}


def set_augment_state(tf: A.Compose, state: Mapping[str, Any]) -> None:
    tf.random_generator.bit_generator.state = state["numpy"]
    tf.py_random.setstate(state["python"])
