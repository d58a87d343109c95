"""Property tests over `sagefm.read`: damaged files and folders end in a valid slide or a clear error.

Inputs are built per example in a temporary folder: ``.h5ad`` files with odd content, Space Ranger
``outs/`` folders made from a real one (h5 or mtx matrix) with files missing, truncated, bit-flipped
or edited, and HEST-style folders with random metadata. An undamaged file must read back exactly.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st

from sagefm.datasets import synthetic_tissue
from sagefm.io import read

SPACERANGER = "spaceranger/mouse_brain_100genes_sr1"


@contextmanager
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="sagefm-fuzz-") as folder:
        yield Path(folder)


def check_slide(adata: ad.AnnData) -> None:
    """The reader contract (see `sagefm.io.read`)."""
    assert sp.issparse(adata.X) and adata.X.format == "csr"
    coords = adata.obsm["spatial"]
    assert coords.dtype == np.float64 and coords.shape[0] == adata.n_obs and coords.shape[1] >= 2
    assert np.isfinite(coords[:, :2]).all()
    scale = adata.uns["sagefm"]["um_per_unit"]
    assert np.isfinite(scale) and scale > 0
    assert adata.var_names.is_unique


def damage(path: Path, how: str, where: float, n_flips: int, seed: int) -> None:
    """Truncate ``path`` at a fraction ``where`` of its size, or flip bytes in it."""
    data = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(bytes(data[: int(where * len(data))]))
    elif how == "flip" and data:
        rng = np.random.default_rng(seed)
        for offset in rng.integers(0, len(data), n_flips):
            data[offset] ^= int(rng.integers(1, 256))
        path.write_bytes(bytes(data))


damages = st.tuples(
    st.sampled_from(["none", "none", "truncate", "flip"]),
    st.floats(0.0, 1.0),
    st.integers(1, 64),
    st.integers(0, 2**16),
)


@pytest.fixture(scope="module")
def slide() -> ad.AnnData:
    adata = synthetic_tissue(n_slides=1, grid_rows=6, grid_cols=6, n_genes=40, seed=1)[0]
    del adata.uns["sagefm_synthetic"]
    return adata


H5AD_CHANGES = {
    "nothing": lambda a: None,
    "no uns scale": lambda a: a.uns.pop("sagefm"),
    "uns scale text": lambda a: a.uns.__setitem__("sagefm", {"um_per_unit": "far"}),
    "uns not a dict": lambda a: a.uns.__setitem__("sagefm", "x"),
    "no coordinates": lambda a: a.obsm.pop("spatial"),
    "NaN coordinates": lambda a: a.obsm.__setitem__("spatial", np.full((a.n_obs, 2), np.nan)),
    "one coordinate": lambda a: a.obsm.__setitem__("spatial", np.ones((a.n_obs, 1))),
    "float counts": lambda a: setattr(a, "X", a.X.toarray() + 0.25),
    "dense counts": lambda a: setattr(a, "X", a.X.toarray()),
    "no X": lambda a: setattr(a, "X", None),
    "repeated genes": lambda a: setattr(a, "var_names", ["G"] * a.n_vars),
    "empty gene names": lambda a: setattr(a, "var_names", [""] * a.n_vars),
    "no spots": lambda a: a._inplace_subset_obs(np.zeros(a.n_obs, dtype=bool)),
    "odd scalefactors": lambda a: a.uns.__setitem__(
        "spatial", {"lib": {"scalefactors": {"spot_diameter_fullres": "abc"}}}
    ),
    "odd metadata": lambda a: a.uns.__setitem__(
        "spatial", {"lib": {"metadata": {"platform": 5, "spot_diameter_um": -1}}}
    ),
}


@given(change=st.sampled_from(sorted(H5AD_CHANGES)), damaged=damages)
def test_h5ad_files(cases, slide: ad.AnnData, change: str, damaged: tuple) -> None:
    adata = slide.copy()
    H5AD_CHANGES[change](adata)
    with scratch() as folder:
        path = folder / "slide.h5ad"
        adata.write_h5ad(path)
        damage(path, *damaged)
        result = cases.run("read h5ad", lambda: read(path))
    if result is None:
        return
    assert isinstance(result, ad.AnnData)
    check_slide(result)
    if damaged[0] == "none" and adata.X is not None:
        assert (result.X != sp.csr_matrix(adata.X)).nnz == 0  # counts read back unchanged


@pytest.fixture(scope="module")
def outs(shared_data: Path) -> Path:
    return shared_data / SPACERANGER


def spaceranger_copy(outs: Path, folder: Path, matrix: str) -> Path:
    """A writable copy of a Space Ranger folder with its matrix as "h5" or as an "mtx" folder."""
    target = folder / "outs"
    (target / "spatial").mkdir(parents=True)
    for item in (outs / "spatial").iterdir():
        shutil.copyfile(item, target / "spatial" / item.name)
    if matrix == "h5":
        shutil.copyfile(
            outs / "filtered_feature_bc_matrix.h5", target / "filtered_feature_bc_matrix.h5"
        )
        return target
    adata = read(outs)
    mtx = target / "filtered_feature_bc_matrix"
    mtx.mkdir()
    scipy.io.mmwrite(mtx / "matrix.mtx", sp.csr_matrix(adata.X).T.tocoo())
    pd.DataFrame(
        {"id": adata.var["gene_ids"], "name": adata.var_names, "type": "Gene Expression"}
    ).to_csv(mtx / "features.tsv", sep="\t", header=False, index=False)
    pd.Series(adata.obs_names).to_csv(mtx / "barcodes.tsv", header=False, index=False)
    return target


def _positions(edit: str, seed: int):
    def apply(path: Path) -> None:
        table = pd.read_csv(path, header=None)
        rng = np.random.default_rng(seed)
        rows = rng.integers(0, len(table), 5)
        if edit == "NaN position":
            table.iloc[rows, 4] = np.nan
        elif edit == "text position":
            table.iloc[rows, 5] = "here"
        elif edit == "inf position":
            table[4] = table[4].astype(float)
            table.iloc[rows, 4] = np.inf
        elif edit == "no spot in tissue":
            table[1] = 0
        elif edit == "repeated barcodes":
            table = pd.concat([table, table.iloc[rows]])
        elif edit == "missing column":
            table = table.drop(columns=[3])
        elif edit == "shuffled rows":
            table = table.sample(frac=1.0, random_state=seed)
        elif edit == "all spots on one point":
            table[4], table[5] = 100, 100
        table.to_csv(path, header=False, index=False)

    return apply


POSITION_EDITS = [
    "none",
    "NaN position",
    "text position",
    "inf position",
    "no spot in tissue",
    "repeated barcodes",
    "missing column",
    "shuffled rows",
    "all spots on one point",
]
SR_FILES = {
    "h5": ["filtered_feature_bc_matrix.h5", "spatial/tissue_positions_list.csv"],
    "mtx": [
        "filtered_feature_bc_matrix/matrix.mtx",
        "filtered_feature_bc_matrix/features.tsv",
        "filtered_feature_bc_matrix/barcodes.tsv",
        "spatial/tissue_positions_list.csv",
    ],
}


@given(
    matrix=st.sampled_from(["h5", "mtx"]),
    missing=st.sampled_from([-1, -1, -1, 0, 1, 2, 3]),
    damaged_file=st.integers(0, 3),
    damaged=damages,
    edit=st.sampled_from(POSITION_EDITS),
    seed=st.integers(0, 1000),
)
def test_spaceranger_folders(
    cases,
    outs: Path,
    matrix: str,
    missing: int,
    damaged_file: int,
    damaged: tuple,
    edit: str,
    seed: int,
) -> None:
    files = SR_FILES[matrix]
    with scratch() as folder:
        target = spaceranger_copy(outs, folder, matrix)
        _positions(edit, seed)(target / "spatial" / "tissue_positions_list.csv")
        damage(target / files[damaged_file % len(files)], *damaged)
        if missing >= 0:
            (target / files[missing % len(files)]).unlink()
        result = cases.run(f"read spaceranger ({matrix})", lambda: read(target))
    if result is None:
        return
    assert isinstance(result, ad.AnnData)
    check_slide(result)
    if missing < 0 and damaged[0] == "none" and edit in ("none", "shuffled rows"):
        original = read(outs)
        assert (result.X != original.X).nnz == 0
        np.testing.assert_array_equal(result.obsm["spatial"], original.obsm["spatial"])


@given(
    pixel_size=st.one_of(st.floats(allow_nan=True), st.text(max_size=5), st.none()),
    technology=st.sampled_from(["Visium", "ST", "Xenium", "", "visium hd", 3]),
    id_column=st.sampled_from(["id", "sample_id", "ID", "name"]),
    listed=st.lists(st.sampled_from(["A", "B", "C", "A"]), max_size=4),
    junk=st.booleans(),
    csv_damage=damages,
)
def test_hest_folders(
    cases,
    slide: ad.AnnData,
    pixel_size: object,
    technology: object,
    id_column: str,
    listed: list[str],
    junk: bool,
    csv_damage: tuple,
) -> None:
    with scratch() as folder:
        (folder / "st").mkdir()
        for name in ("A", "B"):
            slide.write_h5ad(folder / "st" / f"{name}.h5ad")
        if junk:
            (folder / "st" / "C.h5ad").write_bytes(b"not an h5ad file")
        table = pd.DataFrame(
            {
                id_column: listed,
                "pixel_size_um_estimated": [pixel_size] * len(listed),
                "st_technology": [technology] * len(listed),
            }
        )
        table.to_csv(folder / "HEST_v1_1_0.csv", index=False)
        damage(folder / "HEST_v1_1_0.csv", *csv_damage)
        result = cases.run("read HEST folder", lambda: read(folder))
    if result is None:
        return
    assert isinstance(result, list) and len(result) == 2  # A and B (a junk C is an error)
    for adata in result:
        check_slide(adata)
