"""Neighbourhood subgraphs: every spot with its nearest spots, and the edge weights among them.

A subgraph has ``k + 1`` nodes (the paper: k = 14): node 0 is the centre, nodes 1..k its nearest
spots by physical distance. Ties (frequent on a lattice: the hexagonal Visium grid has 6 spots at
distance 2 of which 2 are needed to reach 14) are broken by y, then x, then spot order, so the
choice does not depend on how the spots are listed.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp
import torch
from scipy.spatial import cKDTree

from sagefm.config import EdgeScheme, GraphNorm
from sagefm.errors import InputDataError

logger = logging.getLogger(__name__)

#: distances are compared at this resolution (µm) so that float noise does not break lattice ties
_TIE_RESOLUTION_UM = 1e-3
#: (spots x neighbours) looked up at once: bounds the work arrays to ~50 MB however large the
#: slide or however many spots share a position (a million spots at once would need ~1.5 GB)
_QUERY_ELEMENTS = 1 << 20
#: neighbourhoods reaching less far than this (µm, median over spots) are of bins or cells, not of
#: spots: on Visium the 14th neighbour is 200 µm away, on 8 µm bins or cells ~20-30 µm
MIN_SPOT_REACH_UM = 100.0


def build_neighbourhoods(coords_um: np.ndarray, n_neighbours: int = 14) -> np.ndarray:
    """Indices of each spot's subgraph: (n_spots, n_neighbours + 1) int64, column 0 the spot itself.

    ``coords_um`` is (n_spots, 2) in micrometres. Boundary spots still get ``n_neighbours``
    neighbours (they are simply farther away). Raises `InputDataError` for fewer than
    ``n_neighbours + 1`` spots or non-finite coordinates.
    """
    coords = np.asarray(coords_um, dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise InputDataError(f"coordinates must be (n_spots, 2), got shape {coords.shape}")
    n = coords.shape[0]
    if n < n_neighbours + 1:
        raise InputDataError(
            f"a slide needs at least {n_neighbours + 1} spots to build {n_neighbours}-neighbour "
            f"subgraphs, this one has {n}"
        )
    if not np.isfinite(coords).all():
        raise InputDataError(
            "spot coordinates contain NaN or infinite values; drop or fix those spots"
        )
    if np.ptp(coords, axis=0).max() == 0:  # every spot would tie with every other
        raise InputDataError('all spots share one position: check obsm["spatial"] (x, y per spot)')
    out = np.empty((n, n_neighbours + 1), dtype=np.int64)
    out[:, 0] = np.arange(n)
    _fill_nearest(cKDTree(coords), coords, np.arange(n), out, min(n, n_neighbours + 1 + 16))
    _warn_if_subcellular_scale(coords, out)
    return out


def neighbourhood_reach_um(coords_um: np.ndarray, neighbours: np.ndarray) -> float:
    """Median distance (µm) from a spot to the farthest node of its subgraph, over <= 10,000 spots."""
    spots = np.linspace(0, len(neighbours) - 1, min(len(neighbours), 10_000)).astype(np.int64)
    far = coords_um[neighbours[spots, -1]] - coords_um[spots]
    return float(np.median(np.hypot(far[:, 0], far[:, 1])))


def _warn_if_subcellular_scale(coords_um: np.ndarray, neighbours: np.ndarray) -> None:
    reach = neighbourhood_reach_um(coords_um, neighbours)
    if reach < MIN_SPOT_REACH_UM:
        logger.warning(
            "each subgraph spans only ~%.0f µm (Visium spots: ~200 µm): the slide looks binned "
            "(Visium HD) or single-cell; sum it into Visium-sized pseudo-spots with "
            "sagefm.pp.aggregate_to_spots first (or check its scale)",
            reach,
        )


def _fill_nearest(
    tree: cKDTree, coords: np.ndarray, pending: np.ndarray, out: np.ndarray, k_query: int
) -> None:
    """Write the nearest spots of the spots ``pending`` into ``out[pending, 1:]`` (see above)."""
    n, n_neighbours = coords.shape[0], out.shape[1] - 1
    while pending.size:
        if pending.size > 1 and pending.size * k_query > _QUERY_ELEMENTS:
            for part in np.array_split(pending, -(-pending.size * k_query // _QUERY_ELEMENTS)):
                _fill_nearest(tree, coords, part, out, k_query)
            return
        dist, idx = tree.query(coords[pending], k=k_query)  # (P, K) each
        if not np.isfinite(dist).all():  # squared distances overflow float64 beyond ~1e154
            raise InputDataError(
                f"spot coordinates are too large to measure distances (up to "
                f'{np.abs(coords).max():.3g} µm): rescale obsm["spatial"] or fix '
                'adata.uns["sagefm"]["um_per_unit"]'
            )
        dist = np.round(dist / _TIE_RESOLUTION_UM)
        dist[idx == pending[:, None]] = -1.0  # the spot itself sorts first, even among duplicates
        order = np.lexsort((idx, coords[idx, 0], coords[idx, 1], dist), axis=-1)
        chosen = np.take_along_axis(idx, order[:, : n_neighbours + 1], axis=1)
        last = np.take_along_axis(dist, order[:, n_neighbours : n_neighbours + 1], axis=1)[:, 0]
        # If the last chosen distance equals the farthest queried one, the tie may continue beyond
        # what was queried: ask again for those spots with more neighbours.
        unresolved = (last >= dist.max(axis=1)) if k_query < n else np.zeros(len(pending), bool)
        done = ~unresolved
        out[pending[done], 1:] = chosen[done, 1:]
        pending = pending[unresolved]
        k_query = min(n, 2 * k_query)


def neighbourhood_matrix(neighbours: np.ndarray, *, include_self: bool) -> sp.csr_matrix:
    """(n, n) 0/1 sparse matrix whose row i marks spot i's neighbours (and i itself if asked).

    ``neighbours`` is `build_neighbourhoods` output (column 0 = the spot). ``M @ values`` sums each
    spot's neighbourhood without the (n, k, G) gather ``values[neighbours]`` would allocate.
    """
    cols = neighbours if include_self else neighbours[:, 1:]
    n, k = cols.shape
    rows = np.repeat(np.arange(n), k)
    return sp.csr_matrix((np.ones(n * k), (rows, cols.ravel())), shape=(n, neighbours.shape[0]))


def neighbour_average(
    values: np.ndarray, neighbours: np.ndarray, *, include_self: bool = True
) -> np.ndarray:
    """(n_spots, d) float32: each spot's rows of ``values`` (n_spots, d) averaged over its subgraph.

    ``neighbours`` is `build_neighbourhoods` output (n, k + 1), column 0 the spot: the mean is over
    the k + 1 spots, or over the k neighbours alone with ``include_self=False``.
    """
    operator = neighbourhood_matrix(neighbours, include_self=include_self)
    n_spots = neighbours.shape[1] - (0 if include_self else 1)
    return np.asarray(operator @ values / n_spots, dtype=np.float32)


def subgraph_adjacency(
    node_coords_um: torch.Tensor,
    *,
    scheme: EdgeScheme,
    bandwidth_um: torch.Tensor | float,
    norm: GraphNorm = "symmetric",
) -> torch.Tensor:
    """Normalised adjacency (B, N, N) of B subgraphs from node coordinates (B, N, 2) in µm.

    ``"weighted"``: a Gaussian kernel ``A_ij = exp(-d_ij² / (2 σ²))`` over all node pairs, σ =
    ``bandwidth_um`` (scalar or (B,)); the diagonal is exp(0) = 1, i.e. unit self-loops as in
    GCNConv. A Gaussian (not 1/d) because it is finite at d = 0, smooth, and with σ = the lattice
    spacing it weighs ring-1 neighbours exp(-1/2) ≈ 0.61 and ring-2 ones ≈ 0.2, keeping aggregation
    local while every node still sees the whole subgraph.
    ``"complete"``: all ones (the reference code's unweighted fully connected graph with self-loops).
    ``norm="symmetric"``: D^-1/2 A D^-1/2 (Kipf & Welling / GCNConv); ``"row"``: D^-1 A (a weighted mean).
    """
    batch, nodes, _ = node_coords_um.shape
    if scheme == "complete":
        adj = torch.ones(
            batch, nodes, nodes, dtype=node_coords_um.dtype, device=node_coords_um.device
        )
    else:
        sigma = torch.as_tensor(
            bandwidth_um, dtype=node_coords_um.dtype, device=node_coords_um.device
        )
        sigma = sigma.reshape(-1, 1, 1) if sigma.ndim else sigma
        sq_dist = torch.cdist(node_coords_um, node_coords_um).square()
        adj = torch.exp(-sq_dist / (2.0 * sigma**2))
    degree = adj.sum(dim=-1)  # (B, N), >= 1 because of the self-loop
    if norm == "row":
        return adj / degree.unsqueeze(-1)
    inv_sqrt = degree.rsqrt()
    return inv_sqrt.unsqueeze(-1) * adj * inv_sqrt.unsqueeze(-2)
