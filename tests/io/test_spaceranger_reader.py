"""Space Ranger outs/ folders as users have them (SOURCES.md: each lacks something)."""

from __future__ import annotations

import gzip
import logging
import shutil
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.io
import scipy.sparse as sp

from sagefm.errors import ReaderError
from sagefm.io import read
from sagefm.io.lattice import median_spacing

FOLDERS = {
    # folder: (in-tissue spots with counts, what is missing, what the log must say)
    "human_visium_subset_sr1": (338, "tissue_hires_image.png", "only the lowres image"),
    "mouse_cytassist_sr2": (2898, "tissue_hires_image.png", "only the lowres image"),
    "mouse_brain_100genes_sr1": (2695, "scalefactors_json.json", "spot lattice"),
}


def read_one(path: Path, **kwargs: str) -> ad.AnnData:
    adata = read(path, **kwargs)
    assert isinstance(adata, ad.AnnData)
    return adata


def positions(folder: Path) -> pd.DataFrame:
    """The positions file read independently of sagefm, indexed by barcode."""
    spatial = folder / "spatial"
    if (spatial / "tissue_positions.csv").is_file():
        return pd.read_csv(spatial / "tissue_positions.csv", index_col=0)
    table = pd.read_csv(spatial / "tissue_positions_list.csv", header=None, index_col=0)
    table.columns = [
        "in_tissue",
        "array_row",
        "array_col",
        "pxl_row_in_fullres",
        "pxl_col_in_fullres",
    ]
    return table


@pytest.mark.filterwarnings("ignore:Variable names are not unique")  # scanpy's reference read
@pytest.mark.parametrize("name", list(FOLDERS))
def test_folder_reads_with_raw_counts_and_positions(
    shared_data: Path, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    n_spots, missing, fallback = FOLDERS[name]
    folder = shared_data / "spaceranger" / name
    with caplog.at_level(logging.WARNING, logger="sagefm.io"):
        adata = read_one(folder)
    warnings = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert missing in warnings and fallback in warnings

    assert adata.n_obs == n_spots
    assert sp.issparse(adata.X) and adata.X.format == "csr"
    assert np.issubdtype(adata.X.dtype, np.integer)
    # Counts identical to scanpy's independent reading of the same matrix (float32 there).
    reference = sc.read_10x_h5(folder / "filtered_feature_bc_matrix.h5")
    reference = reference[adata.obs_names]
    assert (adata.var["gene_ids"].to_numpy() == reference.var["gene_ids"].to_numpy()).all()
    assert (adata.X != reference.X).nnz == 0

    table = positions(folder).loc[adata.obs_names]
    assert (table["in_tissue"] == 1).all()
    assert adata.obsm["spatial"].dtype == np.float64
    np.testing.assert_array_equal(adata.obsm["spatial"][:, 0], table["pxl_col_in_fullres"])
    np.testing.assert_array_equal(adata.obsm["spatial"][:, 1], table["pxl_row_in_fullres"])
    np.testing.assert_array_equal(adata.obs["array_row"], table["array_row"])

    assert adata.var_names.is_unique
    assert (adata.obs["sample_id"] == name).all()
    info = adata.uns["sagefm"]
    assert info["platform"] == "visium"
    assert info["source_path"] == str(folder)
    library = adata.uns["spatial"][name]
    # 100 µm between Visium spot centres whatever the scalefactors say
    assert info["scale_source"] == "lattice"
    assert median_spacing(adata.obsm["spatial"]) * info["um_per_unit"] == pytest.approx(100.0)
    if "scalefactors" in library:
        assert set(library["images"]) == {"lowres"}
    else:
        assert "images" not in library


def linked_outs(tmp_path: Path, source: Path, names: list[str], folder: str = "outs") -> Path:
    """A Space Ranger folder in tmp_path holding symlinks to some entries of ``source``."""
    outs = tmp_path / folder
    outs.mkdir(parents=True)
    for name in names:
        (outs / name).symlink_to(source / name)
    return outs


def assert_same_slide(left: ad.AnnData, right: ad.AnnData) -> None:
    assert left.X.dtype == right.X.dtype and (left.X != right.X).nnz == 0
    pd.testing.assert_frame_equal(left.obs, right.obs)
    pd.testing.assert_frame_equal(left.var, right.var)
    np.testing.assert_array_equal(left.obsm["spatial"], right.obsm["spatial"])
    left_info = {k: v for k, v in left.uns["sagefm"].items() if k != "source_path"}
    right_info = {k: v for k, v in right.uns["sagefm"].items() if k != "source_path"}
    assert left_info == right_info


def test_h5_and_mtx_give_the_same_slide(shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / "spaceranger" / "mouse_cytassist_sr2"
    outs = linked_outs(tmp_path, source, ["filtered_feature_bc_matrix", "spatial"])
    from_h5, from_mtx = read_one(source), read_one(outs, sample_id="mouse_cytassist_sr2")
    assert_same_slide(from_h5, from_mtx)
    library = from_mtx.uns["spatial"]["mouse_cytassist_sr2"]
    assert library["scalefactors"] == from_h5.uns["spatial"]["mouse_cytassist_sr2"]["scalefactors"]
    np.testing.assert_array_equal(
        library["images"]["lowres"],
        from_h5.uns["spatial"]["mouse_cytassist_sr2"]["images"]["lowres"],
    )


def test_plain_legacy_mtx_folder_matches_h5(shared_data: Path, tmp_path: Path) -> None:
    """An uncompressed mtx folder with a two-column genes.tsv (Cell Ranger 2 style)."""
    source = shared_data / "spaceranger" / "mouse_brain_100genes_sr1"
    from_h5 = read_one(source)
    outs = linked_outs(tmp_path, source, ["spatial"], folder="mouse_brain_100genes_sr1")
    mtx = outs / "filtered_feature_bc_matrix"
    mtx.mkdir()
    scipy.io.mmwrite(mtx / "matrix.mtx", sp.csr_matrix(from_h5.X).T.tocoo())
    pd.DataFrame({"id": from_h5.var["gene_ids"], "name": from_h5.var_names}).to_csv(
        mtx / "genes.tsv", sep="\t", header=False, index=False
    )
    pd.Series(from_h5.obs_names).to_csv(mtx / "barcodes.tsv", header=False, index=False)
    assert_same_slide(from_h5, read_one(outs))


def test_run_folder_holding_outs(shared_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "my_run"
    run.mkdir()
    (run / "outs").symlink_to(shared_data / "spaceranger" / "mouse_brain_100genes_sr1")
    adata = read_one(run)
    assert adata.n_obs == 2695
    assert adata.obs["sample_id"].iloc[0] == "my_run"


def test_barcode_mismatch_keeps_the_intersection(
    shared_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = shared_data / "spaceranger" / "mouse_brain_100genes_sr1"
    outs = linked_outs(tmp_path, source, ["filtered_feature_bc_matrix.h5"])
    (outs / "spatial").mkdir()
    table = pd.read_csv(source / "spatial" / "tissue_positions_list.csv", header=None)
    in_tissue = table.index[table[1] == 1]
    table = table.drop(index=in_tissue[:10])  # 10 matrix barcodes lose their position
    ghosts = table.iloc[:3].copy()
    ghosts[0] = ["GHOST-1", "GHOST-2", "GHOST-3"]
    ghosts[1] = 1  # 3 in-tissue spots without counts
    pd.concat([table, ghosts]).to_csv(
        outs / "spatial" / "tissue_positions_list.csv", header=False, index=False
    )
    with caplog.at_level(logging.WARNING, logger="sagefm.io"):
        adata = read_one(outs)
    assert adata.n_obs == 2695 - 10
    assert "10 of 2695 matrix barcodes" in caplog.text
    assert "3 of 2688 in-tissue spots have no counts" in caplog.text


def test_no_common_barcode_is_a_reader_error(shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / "spaceranger" / "mouse_brain_100genes_sr1"
    outs = linked_outs(tmp_path, source, ["filtered_feature_bc_matrix.h5"])
    (outs / "spatial").mkdir()
    table = pd.read_csv(source / "spatial" / "tissue_positions_list.csv", header=None)
    table[0] = "X" + table[0]
    table.to_csv(outs / "spatial" / "tissue_positions_list.csv", header=False, index=False)
    with pytest.raises(ReaderError, match="different runs"):
        read(outs)


def test_missing_positions_is_a_reader_error(shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / "spaceranger" / "mouse_brain_100genes_sr1"
    outs = linked_outs(tmp_path, source, ["filtered_feature_bc_matrix.h5"])
    with pytest.raises(ReaderError, match="tissue_positions"):
        read(outs)


def test_missing_matrix_is_a_reader_error(shared_data: Path, tmp_path: Path) -> None:
    outs = linked_outs(
        tmp_path, shared_data / "spaceranger" / "mouse_brain_100genes_sr1", ["spatial"]
    )
    with pytest.raises(ReaderError, match="no count matrix"):
        read(outs)


def test_truncated_h5_is_a_reader_error(shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / "spaceranger" / "mouse_brain_100genes_sr1"
    outs = linked_outs(tmp_path, source, ["spatial"])
    data = (source / "filtered_feature_bc_matrix.h5").read_bytes()
    (outs / "filtered_feature_bc_matrix.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(ReaderError, match=r"filtered_feature_bc_matrix\.h5"):
        read(outs)


def test_truncated_mtx_is_a_reader_error(shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / "spaceranger" / "mouse_cytassist_sr2"
    outs = linked_outs(tmp_path, source, ["spatial"])
    mtx = outs / "filtered_feature_bc_matrix"
    mtx.mkdir()
    for name in ("features.tsv.gz", "barcodes.tsv.gz"):
        (mtx / name).symlink_to(source / "filtered_feature_bc_matrix" / name)
    with gzip.open(source / "filtered_feature_bc_matrix" / "matrix.mtx.gz", "rb") as full:
        head = full.read(200_000)
    with gzip.open(mtx / "matrix.mtx.gz", "wb") as cut:
        cut.write(head)
    with pytest.raises(ReaderError, match="filtered_feature_bc_matrix"):
        read(outs)


def test_sr2_positions_copy_is_read_with_header(shared_data: Path, tmp_path: Path) -> None:
    """A hand-copied folder: the SR2 positions file as a real file, not a link."""
    source = shared_data / "spaceranger" / "mouse_cytassist_sr2"
    outs = linked_outs(tmp_path, source, ["filtered_feature_bc_matrix.h5"])
    (outs / "spatial").mkdir()
    shutil.copy(source / "spatial" / "tissue_positions.csv", outs / "spatial")
    assert read_one(outs).n_obs == 2898


def test_raw_matrix_is_restricted_to_tissue(
    shared_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = shared_data / "spaceranger" / "mouse_brain_100genes_sr1"
    outs = linked_outs(tmp_path, source, ["spatial"])
    (outs / "raw_feature_bc_matrix.h5").symlink_to(source / "filtered_feature_bc_matrix.h5")
    with caplog.at_level(logging.WARNING, logger="sagefm.io"):
        adata = read_one(outs)
    assert adata.n_obs == 2695
    assert "no filtered_feature_bc_matrix" in caplog.text


def test_unreadable_parquet_positions_is_a_reader_error(shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / "spaceranger" / "mouse_brain_100genes_sr1"
    outs = linked_outs(tmp_path, source, ["filtered_feature_bc_matrix.h5"])
    (outs / "spatial").mkdir()
    (outs / "spatial" / "tissue_positions.parquet").write_bytes(b"not parquet")
    with pytest.raises(ReaderError, match=r"tissue_positions\.parquet"):
        read(outs)
