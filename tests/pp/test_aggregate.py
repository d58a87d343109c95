"""Pseudo-spots from bins and cells: lattice cells by brute force, sums by hand, detection."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.spatial import cKDTree

from sagefm.errors import InputDataError
from sagefm.pp import aggregate_to_spots, detect_resolution, spots_to_positions
from sagefm.pp.aggregate import lattice_cells, lattice_centres


def square_grid(side: int, pitch_um: float) -> np.ndarray:
    r, c = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    return np.column_stack([c.ravel(), r.ravel()]).astype(float) * pitch_um


def hex_points(rows: int, cols: int, pitch_um: float) -> np.ndarray:
    r, k = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    c = 2 * k + r % 2
    return np.column_stack([c.ravel() * pitch_um / 2, r.ravel() * pitch_um * np.sqrt(3) / 2])


def positions(xy_um: np.ndarray, counts: np.ndarray | None = None, **uns: object) -> ad.AnnData:
    n = len(xy_um)
    X = np.ones((n, 3), dtype=np.float32) if counts is None else counts
    adata = ad.AnnData(X=sp.csr_matrix(X), obsm={"spatial": xy_um.copy()})
    adata.obs_names = [f"b{i}" for i in range(n)]
    adata.var_names = ["A", "B", "C"]
    adata.uns["sagefm"] = {"um_per_unit": 1.0, **uns}
    return adata


@pytest.mark.parametrize("lattice", ["hex", "square"])
def test_each_position_goes_to_the_nearest_lattice_point(lattice: str) -> None:
    rng = np.random.default_rng(0)
    xy = np.vstack([[0.0, 0.0], rng.uniform(0, 1000, (2000, 2))])  # the origin is the corner
    row, col = lattice_cells(xy, 100.0, lattice)  # type: ignore[arg-type]
    centres = lattice_centres(row, col, 100.0, lattice)  # type: ignore[arg-type]
    points = hex_points(14, 12, 100.0) if lattice == "hex" else square_grid(12, 100.0)
    nearest, _ = cKDTree(points).query(xy)
    np.testing.assert_allclose(np.hypot(*(xy - centres).T), nearest, atol=1e-9)
    if lattice == "hex":
        assert np.all((row + col) % 2 == 0)  # Space Ranger's array convention


def test_sums_by_hand_and_assignment_kept_in_the_input() -> None:
    # 10 µm bins on a 30 x 30 grid: 300 µm of tissue, 100 µm square pseudo-spots of 10 x 10 bins
    xy = square_grid(30, 10.0) + 5.0
    counts = np.random.default_rng(1).poisson(1.0, (900, 3)).astype(np.float32)
    bins = positions(xy, counts, resolution="visium_hd")
    spots = aggregate_to_spots(bins, lattice="square", min_fraction=0.0)
    row, col = np.round((xy - 5.0) / 100.0).astype(int).T[::-1]
    expected = pd.DataFrame(counts).groupby([row, col]).sum()
    assert spots.n_obs == len(expected) == 16  # cells 0..3 x 0..3 (rounding puts edges in 0 and 3)
    got = pd.DataFrame(
        spots.X.toarray(),
        index=list(zip(spots.obs["array_row"], spots.obs["array_col"], strict=True)),
    )
    np.testing.assert_array_equal(got.loc[list(expected.index)].to_numpy(), expected.to_numpy())
    assert spots.X.sum() == counts.sum()
    np.testing.assert_allclose(
        spots.obsm["spatial"], spots.obs[["array_col", "array_row"]] * 100.0 + 5.0
    )
    assigned = bins.obs["sagefm_spot"]
    first = spots.obs_names[0]
    members = assigned.index[assigned == first]
    np.testing.assert_array_equal(
        spots.X[0].toarray()[0], counts[bins.obs_names.get_indexer(members)].sum(0)
    )
    assert spots.uns["sagefm"]["um_per_unit"] == 1.0
    assert spots.uns["sagefm"]["aggregated_from"]["resolution"] == "visium_hd"


def test_capture_circle_and_edge_spots() -> None:
    bins = positions(square_grid(81, 5.0))  # 400 µm of 5 µm bins
    whole = aggregate_to_spots(bins, min_fraction=0.0)
    kept = aggregate_to_spots(bins)  # edge pseudo-spots holding few bins are dropped
    assert kept.n_obs < whole.n_obs
    assert kept.obs["n_aggregated"].min() >= 0.25 * np.median(whole.obs["n_aggregated"])
    circle = aggregate_to_spots(bins, spot_diameter_um=55.0, min_fraction=0.0)
    # a 55 µm circle holds ~π 27.5² / 25 ≈ 95 of the 5 µm bins; the full 100 µm hexagon ≈ 346
    interior = circle.obs["n_aggregated"].median()
    assert 80 <= interior <= 110 and whole.obs["n_aggregated"].max() >= 330
    assert bins.obs["sagefm_spot"].isna().sum() == bins.n_obs - circle.obs["n_aggregated"].sum()
    assert whole.uns["sagefm"]["platform"] == "visium"


def test_spots_to_positions_gives_each_bin_its_pseudo_spot_value() -> None:
    bins = positions(square_grid(20, 10.0))
    spots = aggregate_to_spots(bins, spot_diameter_um=55.0)
    spots.obsm["X_sagefm"] = np.arange(spots.n_obs, dtype=np.float32)[:, None] * [1.0, -1.0]
    values = spots_to_positions(bins, spots)
    inside = bins.obs["sagefm_spot"].notna().to_numpy()
    index = spots.obs_names.get_indexer(bins.obs["sagefm_spot"][inside])
    np.testing.assert_array_equal(values[inside, 0], index)
    assert np.isnan(values[~inside]).all() and bins.obsm["X_sagefm"] is values
    with pytest.raises(InputDataError, match="aggregate_to_spots"):
        spots_to_positions(positions(square_grid(4, 10.0)), spots)


def test_resolution_detected_from_positions_or_stated() -> None:
    assert detect_resolution(positions(hex_points(10, 10, 100.0))) == "visium"
    assert detect_resolution(positions(square_grid(12, 200.0))) == "legacy_st"
    for pitch in (2.0, 8.0, 16.0):
        assert detect_resolution(positions(square_grid(12, pitch))) == "visium_hd"
    cells = np.random.default_rng(2).uniform(0, 400, (800, 2))  # ~14 µm apart, irregular
    assert detect_resolution(positions(cells)) == "single_cell"
    assert detect_resolution(positions(cells), "Xenium") == "single_cell"
    assert detect_resolution(positions(cells), "visium_hd") == "visium_hd"
    with pytest.raises(InputDataError, match="unknown platform 'slide-seq'"):
        detect_resolution(positions(cells), "slide-seq")


def test_bad_input_is_refused() -> None:
    bins = positions(square_grid(10, 8.0))
    with pytest.raises(InputDataError, match="spot_spacing_um"):
        aggregate_to_spots(bins, spot_spacing_um=0.0)
    with pytest.raises(InputDataError, match="lattice"):
        aggregate_to_spots(bins, lattice="triangle")  # type: ignore[arg-type]
    no_coords = ad.AnnData(X=sp.csr_matrix(np.ones((5, 3))))
    with pytest.raises(InputDataError, match="no spot coordinates"):
        aggregate_to_spots(no_coords, platform="visium_hd")


def test_spot_slides_are_aggregated_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    spots = positions(hex_points(10, 10, 100.0))
    same = aggregate_to_spots(spots, min_fraction=0.0)
    assert "already on a visium spot lattice" in caplog.text
    assert same.n_obs == spots.n_obs  # each spot is its own lattice cell
    np.testing.assert_allclose(
        np.sort(same.obsm["spatial"], axis=0), np.sort(hex_points(10, 10, 100.0), axis=0)
    )
