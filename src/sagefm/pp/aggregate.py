"""Visium-sized pseudo-spots from binned (Visium HD) or single-cell (Xenium) slides.

sagefm's subgraphs are a spot and its 14 nearest spots. On Visium (100 µm centre to centre) they
span ~500 µm of tissue, the scale the model learns; on 8 µm bins or on cells they would span
~30 µm, a different problem. Summing the counts of the bins or cells that fall in each cell of a
Visium-like lattice gives pseudo-spots whose neighbourhoods again span ~500 µm: this is the
documented path for any resolution (`aggregate_to_spots`, then `SageFM.embed` on the result).
"""

from __future__ import annotations

import logging
import math
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from sagefm._constants import VISIUM_CENTRE_TO_CENTRE_UM, Keys
from sagefm.data.slides import spot_coordinates_um
from sagefm.errors import InputDataError
from sagefm.io.lattice import Resolution, resolution_from_coordinates, resolution_from_name
from sagefm.io.scale import sagefm_info

logger = logging.getLogger(__name__)

Lattice = Literal["hex", "square"]

#: `obs` column of the input: the pseudo-spot each bin or cell was summed into (NaN: none).
SPOT_KEY = "sagefm_spot"


def detect_resolution(adata: ad.AnnData, platform: str | None = None) -> Resolution:
    """The slide's platform by resolution: "visium", "legacy_st", "visium_hd", "single_cell" or
    "unknown".

    ``platform`` (e.g. "Visium HD", "xenium") states it; else a name recorded in
    ``uns["sagefm"]["resolution"]``; else it is recognised from the positions in µm (see
    `resolution_from_coordinates`).
    """
    for name in (platform, sagefm_info(adata).get("resolution")):
        if name is not None and resolution_from_name(name) != "unknown":
            return resolution_from_name(name)
    if platform is not None:
        raise InputDataError(
            f"unknown platform {platform!r}: give one of 'visium', 'legacy_st', 'visium_hd', "
            "'xenium' (or 'single_cell'), or None to detect it from the positions"
        )
    return resolution_from_coordinates(spot_coordinates_um(adata))


def lattice_cells(
    coords_um: np.ndarray, spacing_um: float, lattice: Lattice
) -> tuple[np.ndarray, np.ndarray]:
    """``array_row`` and ``array_col`` (n,) int64 of the lattice cell (the Voronoi cell of the
    nearest lattice point) of each position (n, 2) µm, in Space Ranger's convention (hex: columns
    step by 2 within a row and ``row + col`` is even; square: steps of 1). The lattice starts at
    the positions' lower-left corner (see `lattice_centres`).
    """
    xy = np.asarray(coords_um, dtype=np.float64)[:, :2]
    xy = xy - xy.min(axis=0)
    if lattice == "square":
        col, row = np.round(xy / spacing_um).astype(np.int64).T
        return row, col
    # A hexagonal lattice is two rectangular ones (p, p√3) offset by (p/2, p√3/2): the nearest
    # hex point is the nearer of the two rectangular lattices' nearest points.
    step = np.array([spacing_um, spacing_um * math.sqrt(3.0)])
    even = np.round(xy / step) * step
    odd = np.round((xy - step / 2) / step) * step + step / 2
    use_odd = ((xy - odd) ** 2).sum(axis=1) < ((xy - even) ** 2).sum(axis=1)
    centre = np.where(use_odd[:, None], odd, even)
    return (
        np.round(centre[:, 1] / (step[1] / 2)).astype(np.int64),
        np.round(centre[:, 0] / (spacing_um / 2)).astype(np.int64),
    )


def lattice_centres(
    row: np.ndarray, col: np.ndarray, spacing_um: float, lattice: Lattice
) -> np.ndarray:
    """(n, 2) µm centres of lattice cells (`lattice_cells` output), from the lattice's origin."""
    rows, cols = np.asarray(row, dtype=np.float64), np.asarray(col, dtype=np.float64)
    if lattice == "square":
        return np.column_stack([cols, rows]) * spacing_um
    return np.column_stack([cols * spacing_um / 2, rows * spacing_um * math.sqrt(3.0) / 2])


def aggregate_to_spots(
    adata: ad.AnnData,
    *,
    spot_spacing_um: float = VISIUM_CENTRE_TO_CENTRE_UM,
    lattice: Lattice = "hex",
    spot_diameter_um: float | None = None,
    min_fraction: float = 0.25,
    platform: str | None = None,
    key_added: str = SPOT_KEY,
) -> ad.AnnData:
    """Sum the raw counts of bins or cells into pseudo-spots on a Visium-like lattice.

    ``adata`` has raw counts in X and positions in ``obsm["spatial"]`` with a physical scale (see
    `sagefm.io.physical_scale`). Each bin/cell goes to the lattice cell (hexagonal by default,
    ``spot_spacing_um`` centre to centre, 100 µm as Visium) whose centre is nearest; with
    ``spot_diameter_um`` (e.g. 55 µm, Visium's capture area) only those within that circle of the
    centre count. Pseudo-spots with fewer than ``min_fraction`` times the median number of
    bins/cells per pseudo-spot (tissue edges) are dropped.

    Returns a new AnnData (n_pseudo_spots, n_genes): X CSR summed counts, ``obsm["spatial"]``
    centres in µm in the input's frame (``uns["sagefm"]["um_per_unit"] = 1``; platform
    "visium" for a 100 µm hex lattice, so the model sees the geometry it was pretrained on),
    ``obs`` ``array_row``, ``array_col``, ``n_aggregated``, ``sample_id``; ``var`` as the
    input's. Writes the pseudo-spot
    name of each bin/cell into ``adata.obs[key_added]`` (NaN for those not summed).
    """
    if not (math.isfinite(spot_spacing_um) and spot_spacing_um > 0):
        raise InputDataError(f"spot_spacing_um must be a positive number, got {spot_spacing_um}")
    if lattice not in ("hex", "square"):
        raise InputDataError(f"lattice must be 'hex' or 'square', got {lattice!r}")
    if not 0.0 <= min_fraction <= 1.0:
        raise InputDataError(f"min_fraction must be in [0, 1], got {min_fraction}")
    resolution = detect_resolution(adata, platform)
    if resolution in ("visium", "legacy_st"):
        logger.warning(
            "the slide is already on a %s spot lattice: the model embeds it as it is, summing "
            "its spots into pseudo-spots coarsens it",
            resolution,
        )
    coords_um = spot_coordinates_um(adata)
    cells, n_in, member, target = _assign(
        coords_um, spot_spacing_um, lattice, spot_diameter_um, min_fraction
    )
    # Summing with a sparse (spots x bins) indicator: one pass over X, memory of X's size.
    assign = sp.csr_matrix(
        (np.ones(member.size, dtype=np.float32), (target, member)),
        shape=(len(cells), adata.n_obs),
    )
    counts = sp.csr_matrix(assign @ sp.csr_matrix(adata.X, dtype=np.float32))
    spots = _pseudo_spot_table(adata, cells, n_in)
    out = ad.AnnData(X=counts, obs=spots, var=adata.var.copy())
    out.obsm[Keys.SPATIAL] = coords_um.min(axis=0) + lattice_centres(
        cells[:, 0], cells[:, 1], spot_spacing_um, lattice
    )
    out.uns[Keys.UNS] = {
        Keys.UM_PER_UNIT: 1.0,
        Keys.SCALE_SOURCE: "aggregated",
        Keys.PLATFORM: _lattice_platform(spot_spacing_um, lattice),
        "aggregated_from": {
            "resolution": resolution,
            "n_obs": int(adata.n_obs),
            "n_aggregated": int(member.size),
            "spot_spacing_um": float(spot_spacing_um),
            "lattice": lattice,
            "spot_diameter_um": spot_diameter_um,
            "min_fraction": float(min_fraction),
        },
    }
    codes = np.full(adata.n_obs, -1, dtype=np.int64)  # -1: NaN, summed into no pseudo-spot
    codes[member] = target
    adata.obs[key_added] = pd.Categorical.from_codes(codes, categories=spots.index)
    logger.info(
        "%d %s positions summed into %d pseudo-spots (%g µm %s lattice, median %d per spot)",
        member.size,
        resolution,
        len(cells),
        spot_spacing_um,
        lattice,
        int(np.median(n_in)),
    )
    return out


def _assign(
    coords_um: np.ndarray,
    spacing_um: float,
    lattice: Lattice,
    spot_diameter_um: float | None,
    min_fraction: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The kept pseudo-spots' (array_row, array_col) (m, 2) and their number of positions (m,),
    and which positions (member, (k,)) go to which kept pseudo-spot (target, (k,))."""
    row, col = lattice_cells(coords_um, spacing_um, lattice)
    inside = np.ones(len(coords_um), dtype=bool)
    if spot_diameter_um is not None:
        centres = coords_um.min(axis=0) + lattice_centres(row, col, spacing_um, lattice)
        inside = ((coords_um - centres) ** 2).sum(axis=1) <= (spot_diameter_um / 2) ** 2
    cells, spot_of, n_in = np.unique(
        np.column_stack([row, col])[inside], axis=0, return_inverse=True, return_counts=True
    )
    spot_of = spot_of.ravel()
    kept = n_in >= min_fraction * np.median(n_in) if n_in.size else n_in.astype(bool)
    if not kept.any():
        raise InputDataError(
            f"no pseudo-spot of {spacing_um:g} µm holds any bin or cell: check the scale of "
            'obsm["spatial"] (uns["sagefm"]["um_per_unit"]) and spot_diameter_um'
        )
    new_index = np.cumsum(kept) - 1  # old pseudo-spot -> kept pseudo-spot
    member = np.flatnonzero(inside)[kept[spot_of]]
    return cells[kept], n_in[kept], member, new_index[spot_of[kept[spot_of]]]


def _pseudo_spot_table(adata: ad.AnnData, cells: np.ndarray, n_in: np.ndarray) -> pd.DataFrame:
    sample = str(adata.obs[Keys.SAMPLE_ID].iloc[0]) if Keys.SAMPLE_ID in adata.obs else "slide"
    names = pd.Index([f"{sample}_spot_r{r}_c{c}" for r, c in cells])
    return pd.DataFrame(
        {
            "array_row": cells[:, 0],
            "array_col": cells[:, 1],
            "n_aggregated": n_in.astype(np.int64),
            Keys.SAMPLE_ID: pd.Categorical([sample] * len(cells)),
        },
        index=names,
    )


def _lattice_platform(spacing_um: float, lattice: Lattice) -> str:
    # A 100 µm hex lattice is Visium's geometry; any other is stated by its scale alone.
    if lattice == "hex" and math.isclose(spacing_um, VISIUM_CENTRE_TO_CENTRE_UM):
        return "visium"
    return "unknown"


def spots_to_positions(
    adata: ad.AnnData, spots: ad.AnnData, *, key: str = Keys.X_EMB, spot_key: str = SPOT_KEY
) -> np.ndarray:
    """Give each bin/cell of ``adata`` its pseudo-spot's ``spots.obsm[key]`` (e.g. the embedding).

    ``adata`` is the input of `aggregate_to_spots` and ``spots`` its output. Returns
    (adata.n_obs, d) float32, NaN for positions summed into no pseudo-spot, and stores it in
    ``adata.obsm[key]``. This is n_obs x d x 4 bytes (4 GB for a million bins and d = 1024):
    ``adata.obs[spot_key]`` alone already links every bin to its pseudo-spot.
    """
    if spot_key not in adata.obs or not isinstance(adata.obs[spot_key].dtype, pd.CategoricalDtype):
        raise InputDataError(
            f'adata.obs["{spot_key}"] is missing: call sagefm.pp.aggregate_to_spots(adata) first'
        )
    if key not in spots.obsm:
        raise InputDataError(f'spots.obsm["{key}"] is missing: embed the pseudo-spots first')
    column = adata.obs[spot_key].cat
    # Categories, not a million names, are looked up; codes are -1 where no pseudo-spot.
    rows = pd.Index(spots.obs_names).get_indexer(column.categories)[column.codes.to_numpy()]
    rows[column.codes.to_numpy() < 0] = -1
    values = np.asarray(spots.obsm[key], dtype=np.float32)
    out = np.empty((adata.n_obs, *values.shape[1:]), dtype=np.float32)
    np.take(values, np.maximum(rows, 0), axis=0, out=out)  # no second (n_obs, d) temporary
    out[rows < 0] = np.nan
    adata.obsm[key] = out
    return out
