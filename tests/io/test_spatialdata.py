"""SpatialData objects and .zarr stores: coordinates in µm from a coordinate system, the round trip
of results back into the table, and clear errors; all on objects built here (no download)."""

from __future__ import annotations

import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import sagefm
from sagefm.config import ModelConfig, SageFMConfig
from sagefm.data.vocabulary import GeneVocabulary
from sagefm.errors import InputDataError, SageFMError
from sagefm.io import read_spatialdata, write_spatialdata
from sagefm.model import SageFM
from sagefm.nn.gcn import SageGCN

try:
    import geopandas
    import shapely
    import spatialdata
    from spatialdata.models import ShapesModel, TableModel
    from spatialdata.transformations import Identity, Scale
except ImportError:  # the extra is missing: only the test of its error message runs
    spatialdata = None

needs_spatialdata = pytest.mark.skipif(
    spatialdata is None, reason="needs the optional extra sagefm[spatial]"
)

UM_PER_PX = 0.5
N_GENES = 30


def hex_spots_um(rows: int = 8, cols: int = 8) -> np.ndarray:
    """(rows * cols, 2) Visium spot centres in µm: 100 µm apart on a hexagonal lattice."""
    r, k = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    c = 2 * k + r % 2
    origin = np.array([300.0, 700.0])
    return np.column_stack([50.0 * c.ravel(), 50.0 * np.sqrt(3) * r.ravel()]) + origin


def spot_sdata(seed: int = 0) -> tuple[object, np.ndarray, ad.AnnData]:
    """Circles in pixels (Identity to "global", Scale 0.5 to "micrometres") and a table of counts
    annotating them, its rows shuffled against the shapes and matched by instance id."""
    xy_um = hex_spots_um()
    n = len(xy_um)
    ids = np.arange(1000, 1000 + n)
    circles = geopandas.GeoDataFrame(
        {"radius": np.full(n, 27.5 / UM_PER_PX)},
        geometry=[shapely.Point(x, y) for x, y in xy_um / UM_PER_PX],
        index=pd.Index(ids),
    )
    shapes = ShapesModel.parse(
        circles,
        transformations={
            "global": Identity(),
            "micrometres": Scale([UM_PER_PX, UM_PER_PX], axes=("x", "y")),
        },
    )
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    counts = sp.csr_matrix(rng.poisson(2.0, (n, N_GENES)).astype(np.float32))
    table = ad.AnnData(
        X=counts,
        obs=pd.DataFrame(
            {"region": pd.Categorical(["spots"] * n), "spot_id": ids[order]},
            index=pd.Index([f"spot{i}" for i in order]),
        ),
        var=pd.DataFrame(index=[f"G{g}" for g in range(N_GENES)]),
    )
    table = TableModel.parse(table, region="spots", region_key="region", instance_key="spot_id")
    sdata = spatialdata.SpatialData(shapes={"spots": shapes}, tables={"table": table})
    return sdata, xy_um[order], table


def tiny_model() -> SageFM:
    genes = [f"G{g}" for g in range(N_GENES)]
    config = SageFMConfig(model=ModelConfig(n_genes=N_GENES, hidden_sizes=(16, 8, 8, 8, 16)))
    return SageFM(SageGCN(config.model), config, GeneVocabulary.from_genes(genes))


@needs_spatialdata
@pytest.mark.parametrize("coordinate_system", ["global", "micrometres"])
def test_coordinates_in_micrometres_from_the_coordinate_system(coordinate_system: str) -> None:
    sdata, expected_um, table = spot_sdata()
    adata = sagefm.read(sdata, coordinate_system=coordinate_system)
    scale = adata.uns["sagefm"]["um_per_unit"]
    # pixels on "global", µm on "micrometres": the Visium lattice gives the scale of both
    assert scale == pytest.approx(UM_PER_PX if coordinate_system == "global" else 1.0)
    np.testing.assert_allclose(adata.obsm["spatial"] * scale, expected_um, atol=1e-6)
    assert list(adata.obs_names) == list(table.obs_names)
    assert (adata.X != table.X).nnz == 0
    assert adata.uns["sagefm"]["platform"] == "visium"
    assert adata.uns["sagefm"]["spatialdata"]["coordinate_system"] == coordinate_system


@needs_spatialdata
def test_stated_scale_and_default_coordinate_system() -> None:
    sdata, expected_um, _ = spot_sdata()
    adata = read_spatialdata(sdata, um_per_unit=UM_PER_PX, sample_id="s1")  # "global": pixels
    assert adata.uns["sagefm"]["scale_source"] == "spatialdata:given"
    np.testing.assert_allclose(adata.obsm["spatial"] * UM_PER_PX, expected_um, atol=1e-6)
    assert set(adata.obs["sample_id"]) == {"s1"}


@needs_spatialdata
def test_embed_and_impute_round_trip_through_the_table_and_zarr(tmp_path: Path) -> None:
    sdata, _, _ = spot_sdata()
    adata = sagefm.read(sdata)
    model = tiny_model()
    embedding = model.embed(adata)
    adata.layers["sagefm_imputed"] = model.impute(adata)
    write_spatialdata(sdata, adata)
    table = sdata.tables["table"]
    np.testing.assert_array_equal(table.obsm["X_sagefm"], embedding)
    np.testing.assert_array_equal(table.layers["sagefm_imputed"], adata.layers["sagefm_imputed"])
    assert table.uns["sagefm"]["embed"]["n_genes_matched"] == N_GENES

    store = tmp_path / "slide.zarr"
    sdata.write(store)
    again = sagefm.read(store)
    assert again.obs["sample_id"].iloc[0] == "slide"
    np.testing.assert_array_equal(again.obsm["X_sagefm"], embedding)
    np.testing.assert_allclose(model.embed(again), embedding, rtol=1e-5, atol=1e-6)
    # the pixel scale written back is not taken for another coordinate system
    in_um = sagefm.read(store, coordinate_system="micrometres")
    assert in_um.uns["sagefm"]["um_per_unit"] == pytest.approx(1.0)


@needs_spatialdata
def test_write_back_matches_rows_by_name() -> None:
    sdata, _, table = spot_sdata()
    adata = sagefm.read(sdata)[::-1].copy()  # reversed and missing nothing
    adata.obsm["X_sagefm"] = np.arange(adata.n_obs, dtype=np.float32)[:, None]
    write_spatialdata(sdata, adata[:-1].copy())
    written = sdata.tables["table"].obsm["X_sagefm"][:, 0]
    expected = pd.Series(adata.obsm["X_sagefm"][:, 0], index=adata.obs_names)[table.obs_names]
    expected.iloc[0] = np.nan  # the row left out of the subset
    np.testing.assert_array_equal(written, expected.to_numpy())


@needs_spatialdata
def test_visium_hd_bins_take_their_size_from_the_name() -> None:
    side, pitch_px = 20, 29.7  # 8 µm bins at 0.2694 µm per pixel
    r, c = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    xy = np.column_stack([c.ravel(), r.ravel()]) * pitch_px
    half = pitch_px / 2
    squares = geopandas.GeoDataFrame(
        geometry=[shapely.box(x - half, y - half, x + half, y + half) for x, y in xy],
        index=pd.Index(np.arange(len(xy))),
    )
    name = "hd_square_008um"
    table = ad.AnnData(
        X=sp.csr_matrix(np.ones((len(xy), N_GENES), dtype=np.float32)),
        obs=pd.DataFrame({"region": pd.Categorical([name] * len(xy)), "bin": np.arange(len(xy))}),
        var=pd.DataFrame(index=[f"G{g}" for g in range(N_GENES)]),
    )
    table.obs_names = [f"b{i}" for i in range(len(xy))]
    sdata = spatialdata.SpatialData(
        shapes={name: ShapesModel.parse(squares, transformations={"global": Identity()})},
        tables={
            "square_008um": TableModel.parse(
                table, region=name, region_key="region", instance_key="bin"
            )
        },
    )
    adata = sagefm.read(sdata)
    assert adata.uns["sagefm"]["um_per_unit"] == pytest.approx(8.0 / pitch_px)
    assert adata.uns["sagefm"]["resolution"] == "visium_hd"
    assert sagefm.pp.detect_resolution(adata) == "visium_hd"


@needs_spatialdata
def test_bad_spatialdata_input_gets_clear_errors() -> None:
    sdata, _, table = spot_sdata()
    with pytest.raises(InputDataError, match="no table"):
        sagefm.read(spatialdata.SpatialData(shapes={"spots": sdata["spots"]}))
    with pytest.raises(InputDataError, match=r"no coordinate system 'pixels'.*global"):
        sagefm.read(sdata, coordinate_system="pixels")
    with pytest.raises(InputDataError, match="no table 'cells'"):
        sagefm.read(sdata, table="cells")
    bare = ad.AnnData(X=table.X.copy(), var=table.var.copy())
    bare.obs_names = table.obs_names
    with pytest.raises(InputDataError, match=r"annotates no region.*no coordinates"):
        sagefm.read(spatialdata.SpatialData(tables={"table": TableModel.parse(bare)}))
    partial = spatialdata.SpatialData(
        shapes={"spots": sdata["spots"][:-3]}, tables={"table": table.copy()}
    )
    with pytest.raises(InputDataError, match=r"3 of the 64 rows.*no coordinates"):
        sagefm.read(partial)


def test_missing_extra_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "spatialdata", None)  # `import spatialdata` now fails
    store = tmp_path / "slide.zarr"
    store.mkdir()
    with pytest.raises(SageFMError, match=r"pip install 'sagefm\[spatial\]'"):
        sagefm.read(store)
