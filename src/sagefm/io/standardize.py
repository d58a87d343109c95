"""Bring a slide read from any source into the one form sagefm's readers return."""

from __future__ import annotations

import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from sagefm._constants import Keys
from sagefm.errors import InputDataError
from sagefm.io.genes import is_ensembl_id, slide_gene_identifiers, symbol_column
from sagefm.io.lattice import Platform
from sagefm.io.scale import record_physical_scale, sagefm_info, spatial_coordinates

logger = logging.getLogger(__name__)


def standardize_slide(
    adata: ad.AnnData,
    *,
    source_path: Path,
    sample_id: str | None,
    platform_hint: Platform | None = None,
) -> ad.AnnData:
    """Make ``adata`` follow the reader contract, in place, and return it.

    X: counts as CSR (values unchanged); var_names: gene symbols, made unique only if they repeat
    (Ensembl ids kept in ``var["gene_ids"]``); ``obs["sample_id"]`` set to ``sample_id`` (None
    keeps the slide's own column); ``obsm["spatial"]`` (n_spots, 2+) float64 x, y;
    ``uns["sagefm"]`` with the physical scale, platform and source path.
    """
    _counts_as_csr(adata, source_path)
    _symbols_as_var_names(adata)
    if sample_id is not None:
        adata.obs[Keys.SAMPLE_ID] = pd.Categorical([sample_id] * adata.n_obs)
    elif Keys.SAMPLE_ID not in adata.obs:
        raise InputDataError(f'{source_path}: no sample id: pass sample_id or set obs["sample_id"]')
    info = sagefm_info(adata)
    info[Keys.SOURCE_PATH] = str(source_path)
    adata.uns[Keys.UNS] = info
    try:
        if Keys.SPATIAL in adata.obsm:
            adata.obsm[Keys.SPATIAL] = spatial_coordinates(adata)
        record_physical_scale(adata, platform_hint=platform_hint)
    except InputDataError as err:
        raise InputDataError(f"{source_path}: {err}") from err
    if Keys.SPATIAL not in adata.obsm:  # a recorded um_per_unit skips deriving coordinates
        raise InputDataError(
            f'{source_path}: no spot coordinates: put (x, y) per spot in obsm["spatial"]'
        )
    return adata


def _counts_as_csr(adata: ad.AnnData, source_path: Path) -> None:
    if adata.X is None:
        raise InputDataError(f"{source_path}: the AnnData has no X; sagefm needs raw counts in X")
    if not sp.issparse(adata.X) or adata.X.format != "csr":
        adata.X = sp.csr_matrix(adata.X)
    values = adata.X.data
    if values.size and np.issubdtype(values.dtype, np.floating):
        if not np.all(values == np.round(values)):
            logger.warning(
                "%s: X holds non-integer values; sagefm expects raw counts in X (normalised data "
                "gives wrong results)%s",
                source_path,
                ' — layers["counts"] exists: set adata.X = adata.layers["counts"]'
                if "counts" in adata.layers
                else "",
            )


def _symbols_as_var_names(adata: ad.AnnData) -> None:
    names = [str(n) for n in adata.var_names]
    column = symbol_column(adata)
    if column is not None and all(is_ensembl_id(n) for n in names):
        if Keys.GENE_IDS not in adata.var:
            adata.var[Keys.GENE_IDS] = np.asarray(names)
        _, symbols = slide_gene_identifiers(adata)
        # a gene without a symbol keeps its id as its name
        adata.var_names = pd.Index([s or n for s, n in zip(symbols, names, strict=True)])
        logger.info('var_names were Ensembl ids: now the symbols of var["%s"]', column)
    if not adata.var_names.is_unique:
        repeated = int(adata.var_names.duplicated().sum())
        adata.var_names_make_unique()
        logger.info("%d repeated gene symbols made unique by a '-1', '-2', ... suffix", repeated)
