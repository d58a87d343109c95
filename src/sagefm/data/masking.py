"""Random hiding of a share of the centre spot's observed genes (the pretraining task)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _hidden_positions(
    candidates: np.ndarray, fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """``round(fraction * n)`` of ``candidates`` (at least 1 when there is any), uniformly
    without replacement."""
    n_hide = max(1, round(fraction * candidates.size)) if candidates.size else 0
    return rng.choice(candidates, size=n_hide, replace=False)


def mask_observed_genes(
    observed: np.ndarray, fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Choose ``round(fraction * n_observed)`` of the observed genes (at least 1 when any is observed).

    ``observed`` (V,) bool; returns (V,) bool, True = hidden. Uniform without replacement, so each
    observed gene is equally likely to be hidden and unobserved genes never are.
    """
    hidden = np.zeros(observed.shape, dtype=bool)
    hidden[_hidden_positions(np.flatnonzero(observed), fraction, rng)] = True
    return hidden


def mask_centres(
    observed: np.ndarray, fraction: float, seeds: Sequence[Sequence[int]]
) -> np.ndarray:
    """`mask_observed_genes` for B centres at once: (B, V) bool from (B, V) ``observed``, row b
    drawn from ``numpy.random.default_rng(seeds[b])``.

    Each row is exactly the mask `mask_observed_genes` gives with that generator (exact resumption
    depends on it); the observed positions and the result are handled for the whole batch, so
    only the draw itself runs per centre.
    """
    rows, genes = np.nonzero(observed)
    bounds = np.searchsorted(rows, np.arange(len(seeds) + 1))
    chosen = [
        b * observed.shape[1]
        + _hidden_positions(genes[bounds[b] : bounds[b + 1]], fraction, np.random.default_rng(seed))
        for b, seed in enumerate(seeds)
    ]
    hidden = np.zeros(observed.shape, dtype=bool)
    hidden.reshape(-1)[np.concatenate(chosen) if chosen else []] = True
    return hidden
