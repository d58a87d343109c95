"""Random hiding of a share of the centre spot's observed genes (the pretraining task)."""

from __future__ import annotations

import numpy as np


def mask_observed_genes(
    observed: np.ndarray, fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Choose ``round(fraction * n_observed)`` of the observed genes (at least 1 when any is observed).

    ``observed`` (V,) bool; returns (V,) bool, True = hidden. Uniform without replacement, so each
    observed gene is equally likely to be hidden and unobserved genes never are.
    """
    candidates = np.flatnonzero(observed)
    n_hide = max(1, round(fraction * candidates.size)) if candidates.size else 0
    hidden = np.zeros(observed.shape, dtype=bool)
    hidden[rng.choice(candidates, size=n_hide, replace=False)] = True
    return hidden
