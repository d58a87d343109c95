"""Spot lattices of the platforms sagefm knows: recognise them, measure them, lay them out.

Visium spots sit on a hexagonal lattice (55 µm spots, 100 µm centre to centre): in Space Ranger's
array coordinates, neighbours in a row are two ``array_col`` apart and ``array_row + array_col`` is
always even, so each interior spot has 6 nearest neighbours at equal distance. Legacy Spatial
Transcriptomics (ST) spots sit on a square grid (100 µm spots, 200 µm centre to centre): neighbours
are one array step apart and each interior spot has 4 nearest neighbours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.spatial import cKDTree

from sagefm._constants import (
    LEGACY_ST_CENTRE_TO_CENTRE_UM,
    LEGACY_ST_SPOT_DIAMETER_UM,
    VISIUM_CENTRE_TO_CENTRE_UM,
    VISIUM_SPOT_DIAMETER_UM,
)
from sagefm.errors import InputDataError

Platform = Literal["visium", "legacy_st", "unknown"]


@dataclass(frozen=True)
class SpotGeometry:
    """Physical spot layout of a platform (micrometres)."""

    spot_diameter_um: float
    centre_to_centre_um: float


PLATFORM_GEOMETRY: dict[str, SpotGeometry] = {
    "visium": SpotGeometry(VISIUM_SPOT_DIAMETER_UM, VISIUM_CENTRE_TO_CENTRE_UM),
    "legacy_st": SpotGeometry(LEGACY_ST_SPOT_DIAMETER_UM, LEGACY_ST_CENTRE_TO_CENTRE_UM),
}

# A spot's neighbours on a lattice lie within this factor of the lattice spacing: above the
# jitter of detected ST spot positions (up to ~1.25), below the next ring (square 1.41, hex 1.73).
_NEIGHBOUR_TOLERANCE = 1.3
# Nearest-neighbour distances of a lattice scatter less than this around their median (relative).
_REGULARITY_TOLERANCE = 0.1
# Fraction of spots that must show the lattice's full ring (6 or 4 neighbours) to call it.
_MIN_INTERIOR_FRACTION = 0.25


def platform_from_name(name: object) -> Platform:
    """Map a platform name ("10x Visium", "legacy ST", HEST's "Spatial Transcriptomics") to ours."""
    text = str(name).strip().lower().replace("_", " ")
    if "visium" in text:
        # Visium HD bins (2–16 µm squares) do not follow the Visium spot lattice.
        return "unknown" if " hd" in f" {text}" else "visium"
    if text in {"st", "legacy st"} or "spatial transcriptomics" in text:
        return "legacy_st"
    return "unknown"


def platform_from_array(array_row: np.ndarray, array_col: np.ndarray) -> Platform:
    """Recognise the lattice from the integer ``obs["array_row"]`` and ``obs["array_col"]``.

    Visium: within a row, columns step by 2 and ``row + col`` has one parity; ST: columns step by 1.
    """
    rows = np.asarray(array_row, dtype=np.float64)
    cols = np.asarray(array_col, dtype=np.float64)
    if rows.size < 2 or not (np.isfinite(rows).all() and np.isfinite(cols).all()):
        return "unknown"
    if not (np.all(rows == np.round(rows)) and np.all(cols == np.round(cols))):
        return "unknown"
    rows_i, cols_i = rows.astype(np.int64), cols.astype(np.int64)
    order = np.lexsort((cols_i, rows_i))
    rows_i, cols_i = rows_i[order], cols_i[order]
    steps = np.diff(cols_i)[rows_i[1:] == rows_i[:-1]]
    steps = steps[steps > 0]
    if steps.size == 0:
        return "unknown"
    if steps.min() == 1:
        return "legacy_st"
    one_parity = np.unique((rows_i + cols_i) % 2).size == 1
    return "visium" if one_parity and steps.min() % 2 == 0 else "unknown"


def _distinct(coords: np.ndarray) -> np.ndarray:
    xy = np.asarray(coords, dtype=np.float64)[:, :2]
    return np.unique(xy[np.isfinite(xy).all(axis=1)], axis=0)


def platform_from_coordinates(coords: np.ndarray) -> Platform:
    """Recognise the lattice from spot positions (n_spots, 2), in any unit.

    Hexagonal (6 equidistant nearest neighbours) -> "visium"; square (4) -> "legacy_st"; anything
    irregular (e.g. cells, a random point cloud) -> "unknown".
    """
    xy = _distinct(coords)
    if len(xy) < 7:
        return "unknown"
    # Column 0 is the spot itself; columns 1..6 its six nearest neighbours.
    dist, _ = cKDTree(xy).query(xy, k=7)
    nearest = dist[:, 1:]
    spacing = float(np.median(nearest[:, 0]))
    if np.median(np.abs(nearest[:, 0] / spacing - 1.0)) > _REGULARITY_TOLERANCE:
        return "unknown"
    ring = (nearest <= _NEIGHBOUR_TOLERANCE * spacing).sum(axis=1)
    if np.mean(ring == 6) >= _MIN_INTERIOR_FRACTION:
        return "visium"
    if np.mean(ring == 4) >= _MIN_INTERIOR_FRACTION and np.mean(ring >= 5) < 0.1:
        return "legacy_st"
    return "unknown"


def median_spacing(coords: np.ndarray) -> float:
    """Median distance from each spot to its nearest other spot, in the units of ``coords``.

    On a platform lattice this is the centre-to-centre distance. Duplicate positions are ignored.
    """
    xy = _distinct(coords)
    if len(xy) < 2:
        raise InputDataError(
            "need at least two distinct spot positions to measure the spot spacing, but all spots "
            'share one position: check obsm["spatial"] (x, y per spot)'
        )
    dist, _ = cKDTree(xy).query(xy, k=2)
    spacing = float(np.median(dist[:, 1]))
    if not math.isfinite(spacing):  # squared distances overflow float64 beyond ~1e154
        raise InputDataError(
            f"spot coordinates are too large to measure distances (up to {np.abs(xy).max():.3g}): "
            'rescale obsm["spatial"] and set adata.uns["sagefm"]["um_per_unit"] to match'
        )
    return spacing


def coordinates_from_array(
    array_row: np.ndarray, array_col: np.ndarray, platform: Platform
) -> np.ndarray:
    """(n_spots, 2) float64 spot centres in µm: x from ``array_col``, y from ``array_row``.

    Visium (hexagonal, 100 µm centre to centre): x = col * 50 µm, y = row * 50·√3 µm, so spots two
    columns apart in a row and spots in adjacent rows one column apart are both 100 µm apart.
    Legacy ST (square, 200 µm): x = col * 200 µm, y = row * 200 µm.
    """
    rows = np.asarray(array_row, dtype=np.float64)
    cols = np.asarray(array_col, dtype=np.float64)
    if platform == "visium":
        pitch = PLATFORM_GEOMETRY["visium"].centre_to_centre_um
        return np.column_stack([cols * pitch / 2.0, rows * pitch * math.sqrt(3.0) / 2.0])
    if platform == "legacy_st":
        pitch = PLATFORM_GEOMETRY["legacy_st"].centre_to_centre_um
        return np.column_stack([cols * pitch, rows * pitch])
    raise InputDataError(
        "cannot lay out spots from array_row/array_col: the lattice is neither Visium nor ST; "
        'put (x, y) per spot in adata.obsm["spatial"]'
    )


#: Platforms by resolution: spot lattices the model was pretrained on, and finer ones (Visium HD
#: square bins of 2, 8 or 16 µm; single cells of Xenium, CosMx, MERSCOPE) whose 14 nearest
#: neighbours cover ~30 µm instead of Visium's ~500 µm.
Resolution = Literal["visium", "legacy_st", "visium_hd", "single_cell", "unknown"]

#: Visium HD bin sizes (µm): bins are squares on a lattice of this pitch.
VISIUM_HD_BIN_SIZES_UM = (2.0, 8.0, 16.0)
# A measured square-lattice pitch within this factor of a bin size is that bin size.
_BIN_SIZE_TOLERANCE = 0.1
# Irregular points closer than this (µm, median nearest neighbour) are single cells.
_MAX_CELL_SPACING_UM = 40.0
_NAMED_RESOLUTIONS: dict[str, Resolution] = {
    "visium hd": "visium_hd",
    "xenium": "single_cell",
    "cosmx": "single_cell",
    "merscope": "single_cell",
    "merfish": "single_cell",
    "single cell": "single_cell",
}


def resolution_from_name(name: object) -> Resolution:
    """The resolution a platform name states ("Visium HD" -> "visium_hd", "Xenium" ->
    "single_cell"), else `platform_from_name` ("visium", "legacy_st" or "unknown")."""
    text = " ".join(str(name).strip().lower().replace("_", " ").replace("-", " ").split())
    named = next((res for key, res in _NAMED_RESOLUTIONS.items() if key in text), None)
    return named or platform_from_name(name)


def resolution_from_coordinates(coords_um: np.ndarray) -> Resolution:
    """Recognise the platform from spot/bin/cell positions (n, 2) in **micrometres**.

    A square lattice of pitch 2, 8 or 16 µm is Visium HD, of ~200 µm legacy ST; a hexagonal one
    is Visium; irregular points closer than 40 µm are single cells; anything else is "unknown".
    Units matter here, unlike `platform_from_coordinates`: an HD bin grid and an ST spot grid are
    both square and differ only in their pitch.
    """
    lattice = platform_from_coordinates(coords_um)
    if len(_distinct(coords_um)) < 2:
        return "unknown"
    spacing = median_spacing(coords_um)
    if lattice == "legacy_st":
        for bin_um in VISIUM_HD_BIN_SIZES_UM:
            if abs(spacing / bin_um - 1.0) <= _BIN_SIZE_TOLERANCE:
                return "visium_hd"
        return lattice
    if lattice == "unknown" and spacing < _MAX_CELL_SPACING_UM:
        return "single_cell"
    return lattice
