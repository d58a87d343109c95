"""Synthetic Visium HD-like binned tissue, made from the synthetic Visium tissue.

`synthetic_binned_tissue` draws one synthetic Visium slide (`synthetic_tissue`) and splits each
spot's counts over the square bins (2, 8 or 16 µm) of its lattice cell, the hexagon of tissue
nearer to it than to any other spot: every UMI goes to one of those bins, uniformly. The biology
(domains, programmes, ligand→receptor effects) is therefore the spot slide's, at the spot scale,
and summing the bins of a cell gives back the spot's counts exactly. Bins are what a Visium HD
user holds: sparse (tens of UMIs), a square lattice, 14 nearest neighbours within ~30 µm.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from scipy.spatial import cKDTree

from sagefm._constants import VISIUM_CENTRE_TO_CENTRE_UM, Keys
from sagefm.datasets.synthetic import UM_PER_UNIT, synthetic_tissue
from sagefm.errors import ConfigError
from sagefm.io.lattice import VISIUM_HD_BIN_SIZES_UM

logger = logging.getLogger(__name__)

#: ``obs`` column of the bins: the synthetic spot whose counts each bin holds a share of.
SOURCE_SPOT_KEY = "source_spot"


def synthetic_binned_tissue(
    bin_size_um: float = 8.0, *, seed: int = 0, **overrides: Any
) -> tuple[AnnData, AnnData]:
    """One synthetic Visium HD-like slide of square bins, and the spot slide it was made from.

    ``overrides`` go to `synthetic_tissue` (e.g. ``grid_rows``, ``n_genes``); the spot slide
    covers ``grid_rows x grid_cols`` spots 100 µm apart, so an 8 µm binning holds ~135 bins per
    spot. Returns ``(bins, spots)``: ``bins`` has raw counts (CSR int32), ``obsm["spatial"]`` bin
    centres in µm (``uns["sagefm"]["um_per_unit"] = 1``, ``"resolution": "visium_hd"``), ``obs``
    ``array_row``/``array_col`` of the bin grid, ``domain`` and ``source_spot`` (the spot's
    index in ``spots``), and the spot slide's ``var``.
    """
    if not any(math.isclose(bin_size_um, size) for size in VISIUM_HD_BIN_SIZES_UM):
        raise ConfigError(f"bin_size_um must be one of {VISIUM_HD_BIN_SIZES_UM}, got {bin_size_um}")
    (spots,) = synthetic_tissue(n_slides=1, seed=seed, **overrides)
    spot_um = np.asarray(spots.obsm[Keys.SPATIAL], dtype=np.float64) * UM_PER_UNIT
    low, high = spot_um.min(axis=0) - VISIUM_CENTRE_TO_CENTRE_UM, spot_um.max(axis=0)
    xs = np.arange(low[0], high[0] + VISIUM_CENTRE_TO_CENTRE_UM, bin_size_um)
    ys = np.arange(low[1], high[1] + VISIUM_CENTRE_TO_CENTRE_UM, bin_size_um)
    # Bins in a spot's hexagonal cell are within its circumradius (100 µm / √3) of its centre.
    spot_of_bin, bin_xy, bin_rc = _bins_in_cells(spot_um, xs, ys)
    counts = _split_counts(
        sp.csr_matrix(spots.X), spot_of_bin, np.random.default_rng([seed, int(bin_size_um * 10)])
    )
    sample_id = f"{spots.obs[Keys.SAMPLE_ID].iloc[0]}_hd_{bin_size_um:g}um"
    obs = pd.DataFrame(
        {
            "array_row": bin_rc[:, 0],
            "array_col": bin_rc[:, 1],
            Keys.SAMPLE_ID: pd.Categorical([sample_id] * len(bin_xy)),
            "domain": spots.obs["domain"].to_numpy()[spot_of_bin],
            SOURCE_SPOT_KEY: spot_of_bin,
        },
        index=pd.Index([f"{sample_id}_{r}_{c}" for r, c in bin_rc]),
    )
    bins = AnnData(X=counts, obs=obs, var=spots.var.copy(), obsm={Keys.SPATIAL: bin_xy})
    bins.uns[Keys.UNS] = {
        Keys.UM_PER_UNIT: 1.0,
        Keys.SCALE_SOURCE: "synthetic",
        Keys.PLATFORM: "unknown",  # a square bin grid, not a spot lattice
        "resolution": "visium_hd",
        "bin_size_um": float(bin_size_um),
    }
    logger.info(
        "synthetic %g µm bins: %d bins from %d spots (%.1f UMIs per bin)",
        bin_size_um,
        bins.n_obs,
        spots.n_obs,
        counts.sum() / max(bins.n_obs, 1),
    )
    return bins, spots


def _bins_in_cells(
    spot_um: np.ndarray, xs: np.ndarray, ys: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For the bins of the grid ``xs x ys`` inside some spot's cell: that spot (n,), the bin
    centres (n, 2) µm and their (row, col) on the grid (n, 2). Row by row, so memory stays
    at the size of the result."""
    tree = cKDTree(spot_um)
    radius = VISIUM_CENTRE_TO_CENTRE_UM / math.sqrt(3.0)
    spot_of, xy, rc = [], [], []
    for row, y in enumerate(ys):
        centres = np.column_stack([xs, np.full_like(xs, y)])
        dist, nearest = tree.query(centres, distance_upper_bound=radius)
        inside = np.isfinite(dist)
        spot_of.append(nearest[inside])
        xy.append(centres[inside])
        rc.append(np.column_stack([np.full(inside.sum(), row), np.flatnonzero(inside)]))
    return np.concatenate(spot_of), np.concatenate(xy), np.concatenate(rc).astype(np.int64)


def _split_counts(
    spot_counts: sp.csr_matrix, spot_of_bin: np.ndarray, rng: np.random.Generator
) -> sp.csr_matrix:
    """(n_bins, G) CSR int32: every UMI of a spot moved to one of its bins, uniformly at random."""
    n_spots = spot_counts.shape[0]
    bins_by_spot = np.argsort(spot_of_bin, kind="stable")
    n_bins = np.bincount(spot_of_bin, minlength=n_spots)
    first_bin = np.concatenate([[0], np.cumsum(n_bins)[:-1]])
    coo = spot_counts.tocoo()
    keep = n_bins[coo.row] > 0  # spots without any bin (cannot happen on a full grid)
    umi_spot = np.repeat(coo.row[keep], coo.data[keep].astype(np.int64))  # one entry per UMI
    umi_gene = np.repeat(coo.col[keep], coo.data[keep].astype(np.int64))
    pick = (rng.random(umi_spot.size) * n_bins[umi_spot]).astype(np.int64)
    umi_bin = bins_by_spot[first_bin[umi_spot] + pick]
    del umi_spot, pick
    counts = sp.csr_matrix(
        (np.ones(umi_bin.size, dtype=np.int32), (umi_bin, umi_gene)),
        shape=(spot_of_bin.size, spot_counts.shape[1]),
    )
    counts.sum_duplicates()
    return counts
