"""Lattice recognition and layout on hand-built lattices whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from sagefm.errors import InputDataError
from sagefm.io.lattice import (
    coordinates_from_array,
    median_spacing,
    platform_from_array,
    platform_from_coordinates,
    platform_from_name,
)


def visium_array(n_rows: int = 12, n_cols: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Space Ranger array indices: row + col even, columns two apart within a row."""
    rows, cols = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
    keep = (rows + cols) % 2 == 0
    return rows[keep], cols[keep]


def square_array(n: int = 12) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return rows.ravel(), cols.ravel()


def rotated(xy: np.ndarray, degrees: float, scale: float) -> np.ndarray:
    angle = np.deg2rad(degrees)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return scale * xy @ rotation.T + np.array([1000.0, 2000.0])


def test_visium_layout_has_six_neighbours_at_100_um() -> None:
    xy = coordinates_from_array(*visium_array(), "visium")
    dist, _ = cKDTree(xy).query(xy, k=8)
    interior = dist[:, 6] < 100.5  # spots with a full ring
    assert interior.sum() > 50
    np.testing.assert_allclose(dist[interior, 1:7], 100.0)
    assert np.all(dist[:, 7] > 170.0)  # the second ring: 100·√3
    assert median_spacing(xy) == pytest.approx(100.0)


def test_square_layout_spacing_is_200_um() -> None:
    xy = coordinates_from_array(*square_array(), "legacy_st")
    assert median_spacing(xy) == pytest.approx(200.0)


@pytest.mark.parametrize(("degrees", "scale"), [(0.0, 1.0), (17.0, 1.37), (90.0, 0.2)])
def test_platform_from_coordinates_any_rotation_and_unit(degrees: float, scale: float) -> None:
    hexagonal = rotated(coordinates_from_array(*visium_array(), "visium"), degrees, scale)
    square = rotated(coordinates_from_array(*square_array(), "legacy_st"), degrees, scale)
    assert platform_from_coordinates(hexagonal) == "visium"
    assert platform_from_coordinates(square) == "legacy_st"


def test_jittered_square_grid_is_still_st() -> None:
    rng = np.random.default_rng(0)
    xy = coordinates_from_array(*square_array(), "legacy_st") + rng.normal(0, 8.0, (144, 2))
    assert platform_from_coordinates(xy) == "legacy_st"


def test_random_points_are_no_lattice() -> None:
    rng = np.random.default_rng(0)
    assert platform_from_coordinates(rng.uniform(0, 1000, (400, 2))) == "unknown"


def test_platform_from_array() -> None:
    assert platform_from_array(*visium_array()) == "visium"
    assert platform_from_array(*square_array()) == "legacy_st"
    assert platform_from_array(np.array([3]), np.array([5])) == "unknown"


@pytest.mark.parametrize(
    ("name", "platform"),
    [
        ("10x Visium", "visium"),
        ("Visium", "visium"),
        ("Visium HD", "unknown"),
        ("legacy ST", "legacy_st"),
        ("Spatial Transcriptomics", "legacy_st"),
        ("Xenium", "unknown"),
    ],
)
def test_platform_from_name(name: str, platform: str) -> None:
    assert platform_from_name(name) == platform


def test_unknown_lattice_cannot_be_laid_out() -> None:
    with pytest.raises(InputDataError, match="obsm"):
        coordinates_from_array(np.arange(3), np.arange(3), "unknown")
