"""`sagefm.io.read` on h5ad files, HEST-style folders, lists of paths, and broken inputs."""

from __future__ import annotations

import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from sagefm.errors import InputDataError, ReaderError, SageFMError
from sagefm.io import read


def test_h5ad_keeps_everything_in_the_file(shared_data: Path) -> None:
    path = shared_data / "dlpfc" / "dlpfc_151673.h5ad"
    original = ad.read_h5ad(path)
    adata = read(path)
    assert isinstance(adata, ad.AnnData)
    assert adata.X.format == "csr" and (adata.X != original.X).nnz == 0
    assert adata.X.dtype == original.X.dtype
    pd.testing.assert_frame_equal(adata.obs, original.obs)
    pd.testing.assert_frame_equal(adata.var, original.var)
    np.testing.assert_array_equal(adata.obsm["spatial"], original.obsm["spatial"])
    assert adata.uns["spatial"]["151673"]["images"]["lowres"].shape == (600, 600, 3)
    info = adata.uns["sagefm"]
    assert info["source_path"] == str(path)
    assert set(info) == {"um_per_unit", "scale_source", "platform", "source_path"}


def test_sample_id_argument_names_the_slide(shared_data: Path) -> None:
    adata = read(shared_data / "her2st" / "A1.h5ad", sample_id="patient_A_1")
    assert isinstance(adata, ad.AnnData)
    assert (adata.obs["sample_id"] == "patient_A_1").all()


def link(folder: Path, *sources: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for source in sources:
        (folder / source.name).symlink_to(source)


@pytest.fixture
def hest_folder(shared_data: Path, tmp_path: Path) -> Path:
    """HEST-1k's layout (HEST_v1_1_0.csv, st/<id>.h5ad); a row not downloaded, a file unlisted."""
    root = tmp_path / "hest"
    link(
        root / "st",
        shared_data / "prostate" / "NP.h5ad",
        shared_data / "her2st" / "A1.h5ad",
        shared_data / "her2st" / "B1.h5ad",
        shared_data / "her2st" / "C1.h5ad",
    )
    pd.DataFrame(
        {
            "dataset_title": ["prostate", "her2st", "absent", "her2st"],
            "id": ["NP", "B1", "TENX99", "A1"],
            "st_technology": [
                "Visium",
                "Spatial Transcriptomics",
                "Visium",
                "Spatial Transcriptomics",
            ],
            "pixel_size_um_estimated": [0.3, 0.95, 0.5, np.nan],
            "organ": ["Prostate", "Breast", "Bowel", "Breast"],
        }
    ).to_csv(root / "HEST_v1_1_0.csv", index=False)
    return root


def test_hest_folder(hest_folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="sagefm.io"):
        slides = read(hest_folder)
    assert isinstance(slides, list)
    ids = [s.obs["sample_id"].iloc[0] for s in slides]
    assert ids == ["NP", "B1", "A1", "C1"]  # table order, then the unlisted file
    assert "1 of 4 rows have no .h5ad" in caplog.text
    assert "C1" in caplog.text and "without metadata" in caplog.text

    prostate, b1, a1, c1 = (s.uns["sagefm"] for s in slides)
    assert prostate["metadata"]["organ"] == "Prostate"
    assert prostate["metadata"]["id"] == "NP"
    assert (prostate["um_per_unit"], prostate["scale_source"]) == (
        0.3,
        "metadata:pixel_size_um_estimated",
    )
    assert (prostate["platform"], b1["platform"]) == ("visium", "legacy_st")
    assert b1["um_per_unit"] == 0.95
    assert a1["scale_source"] == "lattice"  # no pixel size in its row
    assert "metadata" not in c1
    assert all(
        s.uns["sagefm"]["source_path"].endswith(f"{i}.h5ad")
        for s, i in zip(slides, ids, strict=True)
    )


def test_hest_metadata_survives_writing(hest_folder: Path, tmp_path: Path) -> None:
    slides = read(hest_folder)
    assert isinstance(slides, list)
    written = tmp_path / "roundtrip.h5ad"
    slides[2][:20].copy().write_h5ad(written)
    again = read(written)
    assert isinstance(again, ad.AnnData)
    assert again.uns["sagefm"]["metadata"]["organ"] == "Breast"
    assert np.isnan(again.uns["sagefm"]["metadata"]["pixel_size_um_estimated"])
    assert again.uns["sagefm"]["um_per_unit"] == slides[2].uns["sagefm"]["um_per_unit"]


def test_folder_with_sample_id_table_and_files_at_top(shared_data: Path, tmp_path: Path) -> None:
    her2st = shared_data / "her2st"
    link(tmp_path, her2st / "A1.h5ad", her2st / "A2.h5ad")
    pd.DataFrame({"Sample_ID": ["A2", "A1"], "patient": ["A", "A"]}).to_csv(
        tmp_path / "samples.csv", index=False
    )
    slides = read(tmp_path)
    assert isinstance(slides, list)
    assert [s.uns["sagefm"]["metadata"]["Sample_ID"] for s in slides] == ["A2", "A1"]


def test_folder_without_table_is_sorted_by_name(shared_data: Path, tmp_path: Path) -> None:
    her2st = shared_data / "her2st"
    link(tmp_path, her2st / "B1.h5ad", her2st / "A2.h5ad", her2st / "A1.h5ad")
    slides = read(tmp_path)
    assert isinstance(slides, list)
    assert [s.obs["sample_id"].iloc[0] for s in slides] == ["A1", "A2", "B1"]


def test_list_of_paths_gives_a_flat_list(shared_data: Path, tmp_path: Path) -> None:
    link(
        tmp_path / "folder", shared_data / "her2st" / "A1.h5ad", shared_data / "her2st" / "A2.h5ad"
    )
    paths = [
        shared_data / "prostate" / "NP.h5ad",
        str(shared_data / "spaceranger" / "mouse_brain_100genes_sr1"),
        tmp_path / "folder",
    ]
    slides = read(paths)
    assert isinstance(slides, list)
    assert [s.obs["sample_id"].iloc[0] for s in slides] == [
        "NP",
        "mouse_brain_100genes_sr1",
        "A1",
        "A2",
    ]
    assert all(sp.issparse(s.X) and s.X.format == "csr" for s in slides)
    renamed = read(paths[:2], sample_id=["np", "brain"])
    assert isinstance(renamed, list)
    assert [s.obs["sample_id"].iloc[0] for s in renamed] == ["np", "brain"]


@pytest.mark.parametrize("sample_id", ["one", ["a", "b", "c"]])
def test_sample_ids_must_match_the_slides(shared_data: Path, sample_id: str | list[str]) -> None:
    paths = [shared_data / "her2st" / "A1.h5ad", shared_data / "her2st" / "A2.h5ad"]
    with pytest.raises(InputDataError, match="per slide"):
        read(paths, sample_id=sample_id)


def test_missing_path_is_a_reader_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.h5ad"
    with pytest.raises(ReaderError, match=str(missing)):
        read(missing)


def test_empty_folder_is_a_reader_error(tmp_path: Path) -> None:
    with pytest.raises(ReaderError, match="holds no slide"):
        read(tmp_path)


def test_unknown_file_type_is_a_reader_error(tmp_path: Path) -> None:
    path = tmp_path / "counts.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ReaderError, match=r"\.h5ad"):
        read(path)


def test_truncated_h5ad_is_a_reader_error(shared_data: Path, tmp_path: Path) -> None:
    data = (shared_data / "her2st" / "A1.h5ad").read_bytes()
    truncated = tmp_path / "A1.h5ad"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ReaderError, match="truncated") as caught:
        read(truncated)
    assert str(truncated) in str(caught.value)
    assert isinstance(caught.value, SageFMError)


def test_h5ad_without_coordinates_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "flat.h5ad"
    ad.AnnData(X=sp.csr_matrix(np.ones((4, 3), dtype=np.int32))).write_h5ad(path)
    with pytest.raises(InputDataError, match="no spot coordinates") as caught:
        read(path)
    assert str(path) in str(caught.value)


def test_ensembl_var_names_become_symbols(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A cellxgene-style file: Ensembl ids as var_names, symbols (one repeated) in a column."""
    adata = ad.AnnData(
        X=sp.csr_matrix(np.full((8, 3), 0.5, dtype=np.float32)),
        var=pd.DataFrame(
            {"feature_name": ["TP53", "MT1", "MT1"]},
            index=["ENSG00000141510", "ENSG00000001", "ENSG00000002"],
        ),
    )
    adata.obsm["spatial"] = np.random.default_rng(0).uniform(0, 100, (8, 2))
    path = tmp_path / "cxg.h5ad"
    adata.write_h5ad(path)
    with caplog.at_level(logging.WARNING, logger="sagefm.io"):
        slide = read(path)
    assert isinstance(slide, ad.AnnData)
    assert list(slide.var_names) == ["TP53", "MT1", "MT1-1"]
    assert list(slide.var["gene_ids"]) == list(adata.var_names)
    assert slide.obs["sample_id"].iloc[0] == "cxg"
    assert "non-integer" in caplog.text  # X is not raw counts
