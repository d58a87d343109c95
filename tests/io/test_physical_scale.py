"""Physical scale: uns, scalefactors, lattice, array layout and the assumed-µm fallback."""

from __future__ import annotations

import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from scipy.spatial import cKDTree

from sagefm.errors import InputDataError
from sagefm.io import physical_scale, read
from sagefm.io.lattice import median_spacing


def _read(path: Path) -> ad.AnnData:
    adata = read(path)
    assert isinstance(adata, ad.AnnData)
    return adata


@pytest.fixture(scope="module")
def dlpfc(shared_data: Path) -> ad.AnnData:
    return _read(shared_data / "dlpfc" / "dlpfc_151673.h5ad")


@pytest.fixture(scope="module")
def her2st(shared_data: Path) -> ad.AnnData:
    return _read(shared_data / "her2st" / "A1.h5ad")


@pytest.fixture(scope="module")
def prostate(shared_data: Path) -> ad.AnnData:
    return _read(shared_data / "prostate" / "NP.h5ad")


def without_scale(adata: ad.AnnData) -> ad.AnnData:
    """A user-made copy: no uns["sagefm"], no scalefactors; coordinates and metadata kept."""
    bare = adata.copy()
    del bare.uns["sagefm"]
    for library in bare.uns["spatial"].values():
        library.pop("scalefactors", None)
    return bare


def test_dlpfc_scale_from_the_lattice_not_the_65um_scalefactor(dlpfc: ad.AnnData) -> None:
    info = dlpfc.uns["sagefm"]
    # 100 µm between spot centres; 55 / spot_diameter_fullres would be 28% smaller
    assert median_spacing(dlpfc.obsm["spatial"]) * info["um_per_unit"] == pytest.approx(100.0)
    assert info["um_per_unit"] > 1.2 * 55 / 96.40
    assert info["scale_source"] == "lattice"
    assert info["platform"] == "visium"  # from the hexagonal array lattice (no metadata platform)


def test_her2st_scale_agrees_with_scalefactors_and_metadata_platform(her2st: ad.AnnData) -> None:
    info = her2st.uns["sagefm"]
    assert info["um_per_unit"] == pytest.approx(100 / 101.27, rel=0.05)
    assert (info["scale_source"], info["platform"]) == ("lattice", "legacy_st")


@pytest.mark.parametrize("name", ["her2st", "prostate"])
def test_lattice_fallback_agrees_with_scalefactors(
    name: str, request: pytest.FixtureRequest
) -> None:
    adata = request.getfixturevalue(name)
    bare = without_scale(adata)
    assert physical_scale(bare) == pytest.approx(adata.uns["sagefm"]["um_per_unit"], rel=0.05)
    assert bare.uns["sagefm"]["scale_source"] == "lattice"
    assert bare.uns["sagefm"]["platform"] == adata.uns["sagefm"]["platform"]


def test_dlpfc_lattice_fallback_is_100_um_between_spot_centres(dlpfc: ad.AnnData) -> None:
    bare = without_scale(dlpfc)
    um_per_unit = physical_scale(bare)
    assert bare.uns["sagefm"]["scale_source"] == "lattice"
    assert median_spacing(bare.obsm["spatial"]) * um_per_unit == pytest.approx(100.0)


def test_recorded_scale_is_kept(prostate: ad.AnnData) -> None:
    adata = prostate.copy()
    adata.uns["sagefm"] = {"um_per_unit": 2.5}
    assert physical_scale(adata) == 2.5
    assert adata.uns["sagefm"]["scale_source"] == "uns"
    assert adata.uns["sagefm"]["platform"] == "visium"


def test_bad_recorded_scale_is_refused(prostate: ad.AnnData) -> None:
    adata = prostate.copy()
    adata.uns["sagefm"] = {"um_per_unit": -1.0}
    with pytest.raises(InputDataError, match="um_per_unit"):
        physical_scale(adata)


def test_view_is_not_modified(prostate: ad.AnnData) -> None:
    view = without_scale(prostate)[:300]
    assert physical_scale(view) > 0
    assert view.is_view and "sagefm" not in view.uns


def _point_cloud(n: int, **obs: np.ndarray) -> ad.AnnData:
    adata = ad.AnnData(X=sp.csr_matrix((n, 3), dtype=np.int32))
    for key, values in obs.items():
        adata.obs[key] = values
    return adata


def test_random_points_are_assumed_micrometres(caplog: pytest.LogCaptureFixture) -> None:
    adata = _point_cloud(200)
    adata.obsm["spatial"] = np.random.default_rng(0).uniform(0, 500, (200, 2))
    with caplog.at_level(logging.WARNING, logger="sagefm.io"):
        assert physical_scale(adata) == 1.0
    assert adata.uns["sagefm"] == {
        "um_per_unit": 1.0,
        "scale_source": "assumed_um",
        "platform": "unknown",
    }
    assert "assumed to be in micrometres" in caplog.text


def test_no_coordinates_is_an_input_error() -> None:
    with pytest.raises(InputDataError, match=r'obsm\["spatial"\]'):
        physical_scale(_point_cloud(5))


@pytest.mark.parametrize(("step", "pitch"), [(2, 100.0), (1, 200.0)])
def test_coordinates_laid_out_from_array(
    step: int, pitch: float, caplog: pytest.LogCaptureFixture
) -> None:
    # Visium rows alternate the column parity (step 2); ST is a plain grid (step 1).
    rows, cols = np.meshgrid(np.arange(8), np.arange(0, 16, 1), indexing="ij")
    keep = (rows + cols) % 2 == 0 if step == 2 else np.ones_like(rows, dtype=bool)
    adata = _point_cloud(int(keep.sum()), array_row=rows[keep], array_col=cols[keep])
    with caplog.at_level(logging.WARNING, logger="sagefm.io"):
        assert physical_scale(adata) == 1.0
    assert adata.uns["sagefm"]["scale_source"] == "array_coordinates"
    assert "array_row/array_col" in caplog.text
    xy = adata.obsm["spatial"]
    assert xy.dtype == np.float64 and xy.shape == (adata.n_obs, 2)
    dist, _ = cKDTree(xy).query(xy, k=2)
    np.testing.assert_allclose(dist[:, 1], pitch)


def test_visium_hd_bins_take_the_stated_microns_per_pixel() -> None:
    """A square 8 µm bin lattice is no 200 µm legacy-ST lattice: the stated scale wins."""
    microns_per_pixel = 0.2737
    rows, cols = np.meshgrid(np.arange(20), np.arange(20), indexing="ij")
    adata = _point_cloud(400)
    adata.obsm["spatial"] = np.column_stack([cols.ravel(), rows.ravel()]) * (
        8.0 / microns_per_pixel
    )
    adata.uns["spatial"] = {
        "hd": {"scalefactors": {"microns_per_pixel": microns_per_pixel, "bin_size_um": 8.0}}
    }
    bare = adata.copy()
    del bare.uns["spatial"]
    assert physical_scale(bare) == pytest.approx(200.0 * microns_per_pixel / 8.0)  # the trap
    assert physical_scale(adata) == pytest.approx(microns_per_pixel)
    assert adata.uns["sagefm"]["scale_source"] == "microns_per_pixel"


def test_bad_microns_per_pixel_is_refused() -> None:
    adata = _point_cloud(4)
    adata.obsm["spatial"] = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    adata.uns["spatial"] = {"hd": {"scalefactors": {"microns_per_pixel": -1}}}
    with pytest.raises(InputDataError, match="microns_per_pixel"):
        physical_scale(adata)
