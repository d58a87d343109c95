"""Spatial building blocks of the tissue: smooth random fields and neighbourhood means."""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from scipy.spatial import cKDTree

_N_FOURIER_FEATURES = 64


def smooth_fields(
    rng: np.random.Generator, xy_um: NDArray[np.float64], n_fields: int, length_um: float
) -> NDArray[np.float64]:
    """(N, n_fields) Gaussian random fields (squared-exponential kernel), standardised per column.

    Random Fourier features rather than a Cholesky factor: O(N * M) and independent of the lattice.
    """
    m = _N_FOURIER_FEATURES
    omega = rng.normal(0.0, 1.0 / length_um, (2, n_fields * m))  # rad / µm
    phase = rng.uniform(0.0, 2 * math.pi, n_fields * m)
    weight = rng.standard_normal(n_fields * m)
    features = np.cos(xy_um @ omega + phase) * weight  # (N, F * M)
    values = features.reshape(xy_um.shape[0], n_fields, m).sum(axis=2) * math.sqrt(2 / m)
    return standardize(values)


def standardize(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """Columns to mean 0, standard deviation 1 (a constant column becomes 0)."""
    centred = values - values.mean(axis=0)
    sd = centred.std(axis=0)
    return np.asarray(centred / np.where(sd > 0, sd, 1.0), dtype=np.float64)


def neighbour_mean(
    xy_um: NDArray[np.float64], values: NDArray[np.float64], radius_um: float
) -> NDArray[np.float64]:
    """(N, C) mean of ``values`` (N, C) over the spots within ``radius_um``, the spot excluded.

    A spot with no neighbour gets the slide mean, i.e. no signal after standardisation.
    """
    n = xy_um.shape[0]
    pairs = cKDTree(xy_um).query_pairs(radius_um, output_type="ndarray")  # (E, 2), i < j
    rows = np.concatenate([pairs[:, 0], pairs[:, 1]])
    cols = np.concatenate([pairs[:, 1], pairs[:, 0]])
    adjacency = sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n))
    degree = np.asarray(adjacency.sum(axis=1)).ravel()  # (N,)
    summed = np.asarray(adjacency @ values)
    return np.where(
        degree[:, None] > 0, summed / np.maximum(degree, 1.0)[:, None], values.mean(axis=0)
    )
