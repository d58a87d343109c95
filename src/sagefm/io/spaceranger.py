"""Read a Space Ranger ``outs/`` folder (Visium) as users have it, however incomplete.

Needed: a count matrix and the spot positions. Optional: ``spatial/scalefactors_json.json`` and
the tissue images. Whatever is missing is logged (warning) with what the reader does instead.

scanpy has `read_visium` and `read_10x_h5`/`read_10x_mtx`, but `read_visium` refuses folders
without a hi-res image or scalefactors, and the matrix readers turn counts into float32, return
CSC from mtx and need a v3 mtx folder to be gzipped; reading the two documented 10x matrix
formats directly keeps integer counts identical from both and accepts the folders users have.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp
from matplotlib.image import imread

from sagefm._constants import Keys
from sagefm.errors import ReaderError
from sagefm.io.standardize import standardize_slide

logger = logging.getLogger(__name__)

_MATRIX_NAMES = ("filtered_feature_bc_matrix", "raw_feature_bc_matrix")
_POSITION_FILES = ("tissue_positions.csv", "tissue_positions_list.csv", "tissue_positions.parquet")
_POSITION_COLUMNS = (
    "barcode",
    "in_tissue",
    "array_row",
    "array_col",
    "pxl_row_in_fullres",
    "pxl_col_in_fullres",
)
_IMAGES = {"hires": "tissue_hires_image.png", "lowres": "tissue_lowres_image.png"}
_GENE_EXPRESSION = "Gene Expression"


def spaceranger_outs(folder: Path) -> Path | None:
    """The ``outs/`` folder of a Space Ranger run given either it or the run folder; else None."""
    for candidate in (folder, folder / "outs"):
        if (candidate / "spatial").is_dir() or any(
            (candidate / f"{name}{suffix}").exists()
            for name in _MATRIX_NAMES
            for suffix in (".h5", "")
        ):
            return candidate
    return None


def default_library_id(outs: Path) -> str:
    """The run's name: the folder holding ``outs/``, else the folder itself."""
    return outs.parent.name if outs.name == "outs" else outs.name


def read_spaceranger(folder: Path, *, sample_id: str | None = None) -> ad.AnnData:
    """In-tissue spots of a Space Ranger ``outs/`` folder as one slide (see `sagefm.io.read`).

    Counts: ``filtered_feature_bc_matrix.h5``, else the ``filtered_feature_bc_matrix/`` mtx folder,
    else the raw matrix (h5, then mtx) restricted to in-tissue spots; Gene Expression features only.
    Positions: ``spatial/tissue_positions.csv`` (Space Ranger 2+), ``tissue_positions_list.csv``
    (1.x) or ``tissue_positions.parquet``. ``obsm["spatial"]`` holds full-resolution pixels
    (x = ``pxl_col_in_fullres``, y = ``pxl_row_in_fullres``); scalefactors and images go to
    ``uns["spatial"][sample_id]`` as scanpy puts them.
    """
    outs = spaceranger_outs(folder) or folder
    library_id = sample_id if sample_id is not None else default_library_id(outs)
    counts, from_raw = _read_counts(outs)
    positions = _read_positions(outs)
    adata = _in_tissue_spots(counts, positions, outs, from_raw=from_raw)
    adata.uns[Keys.SPATIAL] = {library_id: _library_images_and_scale(outs)}
    return standardize_slide(adata, source_path=outs, sample_id=library_id, platform_hint="visium")


# -- counts ------------------------------------------------------------------------------------


def _read_counts(outs: Path) -> tuple[ad.AnnData, bool]:
    """(spots x features) counts and whether they come from the raw (unfiltered) matrix."""
    for name in _MATRIX_NAMES:
        from_raw = name != _MATRIX_NAMES[0]
        h5_path, mtx_path = outs / f"{name}.h5", outs / name
        if h5_path.is_file():
            counts = _read_10x_h5(h5_path)
        elif mtx_path.is_dir():
            if not from_raw:
                logger.info("%s: no %s.h5, reading the %s/ mtx folder", outs, name, name)
            counts = _read_10x_mtx(mtx_path)
        else:
            continue
        if from_raw:
            logger.warning(
                "%s: no filtered_feature_bc_matrix(.h5); using %s restricted to in-tissue spots",
                outs,
                h5_path.name if h5_path.is_file() else f"{name}/",
            )
        return _gene_expression_only(counts, outs), from_raw
    raise ReaderError(
        f"{outs}: no count matrix: expected filtered_feature_bc_matrix.h5 or a "
        "filtered_feature_bc_matrix/ folder (matrix.mtx[.gz], features.tsv[.gz], "
        "barcodes.tsv[.gz]) in the Space Ranger outs/ folder"
    )


def _decoded(values: np.ndarray) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _read_10x_h5(path: Path) -> ad.AnnData:
    """A Cell Ranger v3+/Space Ranger feature-barcode matrix file (``/matrix`` group)."""
    try:
        with h5py.File(path, "r") as file:
            if "matrix" not in file:
                raise ReaderError(
                    f"{path}: no /matrix group, so not a Space Ranger feature-barcode matrix "
                    "(Cell Ranger 2 files are not supported); use the filtered_feature_bc_matrix/ "
                    "mtx folder instead"
                )
            group = file["matrix"]
            n_features, n_barcodes = (int(n) for n in group["shape"][()])
            # Stored as CSC of features x barcodes, i.e. CSR of barcodes x features.
            matrix = sp.csr_matrix(
                (group["data"][()], group["indices"][()], group["indptr"][()]),
                shape=(n_barcodes, n_features),
            )
            features = group["features"]
            var = pd.DataFrame(
                {
                    Keys.GENE_IDS: _decoded(features["id"][()]),
                    "feature_types": _decoded(features["feature_type"][()]),
                },
                index=_decoded(features["name"][()]),
            )
            barcodes = _decoded(group["barcodes"][()])
    except ReaderError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise ReaderError(
            f"cannot read {path} ({type(err).__name__}: {err}); the file is truncated, corrupt or "
            "not a 10x feature-barcode matrix: copy it again from the Space Ranger output"
        ) from err
    return _counts_anndata(matrix, barcodes, var, path)


def _first_file(folder: Path, names: tuple[str, ...]) -> Path:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise ReaderError(f"{folder}: none of {', '.join(names)} found; the mtx folder is incomplete")


def _read_10x_mtx(folder: Path) -> ad.AnnData:
    """A 10x mtx folder, v3 (features.tsv) or legacy (genes.tsv), gzipped or not."""
    matrix_path = _first_file(folder, ("matrix.mtx.gz", "matrix.mtx"))
    features_path = _first_file(
        folder, ("features.tsv.gz", "features.tsv", "genes.tsv.gz", "genes.tsv")
    )
    barcodes_path = _first_file(folder, ("barcodes.tsv.gz", "barcodes.tsv"))
    try:
        matrix = sp.csr_matrix(scipy.io.mmread(matrix_path).T)
        features = pd.read_csv(features_path, sep="\t", header=None, dtype=str)
        barcodes = pd.read_csv(barcodes_path, sep="\t", header=None, dtype=str)[0].tolist()
    except (OSError, ValueError, EOFError, pd.errors.ParserError) as err:
        raise ReaderError(
            f"cannot read the mtx folder {folder} ({type(err).__name__}: {err}); a file is "
            "truncated or corrupt: copy it again from the Space Ranger output"
        ) from err
    symbols = features[1] if features.shape[1] > 1 else features[0]
    types = features[2] if features.shape[1] > 2 else pd.Series([_GENE_EXPRESSION] * len(features))
    var = pd.DataFrame(
        {Keys.GENE_IDS: features[0].to_numpy(), "feature_types": types.to_numpy()},
        index=symbols.to_numpy(),
    )
    return _counts_anndata(matrix, barcodes, var, folder)


def _counts_anndata(
    matrix: sp.csr_matrix, barcodes: list[str], var: pd.DataFrame, source: Path
) -> ad.AnnData:
    if matrix.shape != (len(barcodes), len(var)):
        raise ReaderError(
            f"{source}: the matrix is {matrix.shape[0]} x {matrix.shape[1]} but there are "
            f"{len(barcodes)} barcodes and {len(var)} features; the files do not belong together"
        )
    if np.issubdtype(matrix.dtype, np.integer) and (
        matrix.nnz == 0 or matrix.data.max() <= np.iinfo(np.int32).max
    ):
        matrix = matrix.astype(np.int32)  # counts as the h5 stores them (mmread gives int64)
    symbols = pd.Index(var.index.astype(str))
    if not symbols.is_unique:
        logger.info(
            "%s: %d repeated gene symbols made unique by a '-1', '-2', ... suffix",
            source,
            int(symbols.duplicated().sum()),
        )
        symbols = ad.utils.make_index_unique(symbols)
    var.index = symbols
    return ad.AnnData(X=matrix, obs=pd.DataFrame(index=pd.Index(barcodes, dtype=str)), var=var)


def _gene_expression_only(counts: ad.AnnData, outs: Path) -> ad.AnnData:
    keep = (counts.var["feature_types"] == _GENE_EXPRESSION).to_numpy()
    if keep.all():
        return counts
    dropped = counts.var["feature_types"][~keep].value_counts()
    logger.info(
        "%s: kept %d Gene Expression features, dropped %s",
        outs,
        int(keep.sum()),
        ", ".join(f"{n} {kind}" for kind, n in dropped.items()),
    )
    return counts[:, keep].copy()


# -- positions ---------------------------------------------------------------------------------


def _read_positions(outs: Path) -> pd.DataFrame:
    """Spot positions indexed by barcode, columns as in `_POSITION_COLUMNS` (barcode the index)."""
    spatial = outs / "spatial"
    path = next((spatial / n for n in _POSITION_FILES if (spatial / n).is_file()), None)
    if path is None:
        raise ReaderError(
            f"{outs}: no spot positions: expected spatial/tissue_positions.csv (Space Ranger 2+) "
            "or spatial/tissue_positions_list.csv (1.x); copy the spatial/ folder of the run"
        )
    try:
        if path.suffix == ".parquet":
            table = pd.read_parquet(path)
        else:
            with path.open() as handle:
                has_header = handle.readline().split(",")[0].strip() == "barcode"
            table = pd.read_csv(path, header=0 if has_header else None)
            if not has_header and table.shape[1] == len(_POSITION_COLUMNS):
                table.columns = list(_POSITION_COLUMNS)
    except ImportError as err:
        raise ReaderError(
            f"{path}: reading parquet needs pyarrow (pip install pyarrow); or give "
            "tissue_positions.csv instead"
        ) from err
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as err:
        raise ReaderError(f"cannot read {path} ({type(err).__name__}: {err})") from err
    missing = [c for c in _POSITION_COLUMNS if c not in table.columns]
    if missing:
        raise ReaderError(
            f"{path}: expected the columns {', '.join(_POSITION_COLUMNS)}; missing {missing}"
        )
    table["barcode"] = table["barcode"].astype(str)
    table = table.set_index("barcode")
    numeric = table.apply(pd.to_numeric, errors="coerce")
    if numeric.isna().any().any():
        raise ReaderError(f"{path}: non-numeric or empty entries in the position columns")
    return numeric


def _in_tissue_spots(
    counts: ad.AnnData, positions: pd.DataFrame, outs: Path, *, from_raw: bool
) -> ad.AnnData:
    """Spots that are in tissue and have counts, in the matrix's order, with positions attached."""
    in_tissue = positions.index[positions["in_tissue"] == 1]
    if not positions.index.is_unique:
        raise ReaderError(f"{outs}: the positions file lists some barcodes more than once")
    keep = counts.obs_names.isin(in_tissue)
    n_kept = int(keep.sum())
    if n_kept == 0:
        raise ReaderError(
            f"{outs}: no barcode of the count matrix is an in-tissue spot of the positions file "
            f"({counts.n_obs} matrix barcodes, {len(in_tissue)} in-tissue spots); the matrix and "
            "spatial/ come from different runs"
        )
    if counts.n_obs > n_kept and not from_raw:
        logger.warning(
            "%s: %d of %d matrix barcodes are not in-tissue spots of the positions file; dropped",
            outs,
            counts.n_obs - n_kept,
            counts.n_obs,
        )
    if len(in_tissue) > n_kept:
        logger.warning(
            "%s: %d of %d in-tissue spots have no counts in the matrix; dropped",
            outs,
            len(in_tissue) - n_kept,
            len(in_tissue),
        )
    adata = counts[keep].copy()
    spots = positions.loc[adata.obs_names]
    for column in ("in_tissue", "array_row", "array_col"):
        adata.obs[column] = spots[column].to_numpy().astype(np.int64)
    adata.obsm[Keys.SPATIAL] = spots[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(
        dtype=np.float64
    )
    return adata


# -- scalefactors and images -------------------------------------------------------------------


def _library_images_and_scale(outs: Path) -> dict[str, Any]:
    """``uns["spatial"][library_id]`` content: whatever of scalefactors and images exists."""
    spatial = outs / "spatial"
    library: dict[str, Any] = {}
    scalefactors_path = spatial / "scalefactors_json.json"
    if scalefactors_path.is_file():
        try:
            library["scalefactors"] = json.loads(scalefactors_path.read_text())
        except (OSError, ValueError) as err:
            raise ReaderError(
                f"cannot read {scalefactors_path} ({err}); fix or delete the file "
                "(without it the scale comes from the spot lattice)"
            ) from err
    else:
        logger.warning(
            "%s: no spatial/scalefactors_json.json: images cannot be placed on the spots and the "
            "physical scale comes from the spot lattice (100 µm between Visium spot centres)",
            outs,
        )
    images: dict[str, np.ndarray] = {}
    for resolution, name in _IMAGES.items():
        if (spatial / name).is_file():
            try:
                images[resolution] = imread(spatial / name)
            except (OSError, ValueError, SyntaxError) as err:
                raise ReaderError(
                    f"cannot read {spatial / name} ({err}); fix or delete it"
                ) from err
    missing = [name for resolution, name in _IMAGES.items() if resolution not in images]
    if missing:
        kept = f"only the {next(iter(images))} image is kept" if images else "no image is kept"
        logger.warning("%s: no spatial/%s: %s", outs, " or ".join(missing), kept)
    if images:
        library["images"] = images
    return library
