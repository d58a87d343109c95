"""Checks on incoming counts and the expression scale the model reconstructs.

The scale is ``log1p`` of raw counts, with no library-size normalisation, as in the reference
implementation. A size factor would be computed over all genes of a spot, including the ones the
model is asked to predict, and so would leak the hidden values into the input; log1p of each count
on its own cannot leak.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import scipy.sparse as sp

from sagefm.errors import InputDataError


def _matrix(adata: ad.AnnData, layer: str | None) -> sp.csr_matrix:
    if layer is not None and layer not in adata.layers:
        raise InputDataError(f"layer {layer!r} not found; available: {list(adata.layers)}")
    raw = adata.X if layer is None else adata.layers[layer]
    if raw is None:
        raise InputDataError("the AnnData has no expression matrix in X")
    try:
        matrix = sp.csr_matrix(raw)
    except (TypeError, ValueError) as exc:
        raise InputDataError(
            f"cannot read the expression matrix as numbers ({exc}); store counts as int32 or "
            "float32, e.g. adata.X = adata.X.astype('float32')"
        ) from exc
    if not np.issubdtype(matrix.dtype, np.number) or np.issubdtype(
        matrix.dtype, np.complexfloating
    ):
        raise InputDataError(
            f"expression must be real numbers, got dtype {matrix.dtype}; store counts as int32 "
            "or float32, e.g. adata.X = adata.X.astype('float32')"
        )
    if not matrix.has_canonical_format:  # repeated (row, col) entries: add them up, as scipy does
        matrix = matrix.copy()
        matrix.sum_duplicates()
    return matrix


def check_names(adata: ad.AnnData) -> None:
    """Duplicate spot or gene names make results ambiguous: refuse them with the fix."""
    if not adata.obs_names.is_unique:
        dups = adata.obs_names[adata.obs_names.duplicated()].unique()[:3].tolist()
        raise InputDataError(
            f"duplicate spot names (e.g. {dups}); call adata.obs_names_make_unique()"
        )
    if not adata.var_names.is_unique:
        dups = adata.var_names[adata.var_names.duplicated()].unique()[:3].tolist()
        raise InputDataError(
            f"duplicate gene names (e.g. {dups}); call adata.var_names_make_unique()"
        )


def normalize_expression(
    adata: ad.AnnData, *, normalized_input: bool = False, layer: str | None = None
) -> sp.csr_matrix:
    """The model's input scale for every gene of ``adata``: (n_spots, n_genes) CSR float32.

    Raw counts (the default) must be finite, non-negative integers and become ``log1p(counts)``.
    With ``normalized_input=True`` the values are taken as already on the model's scale (finite,
    non-negative) and passed through.
    """
    matrix = _matrix(adata, layer)
    data = matrix.data
    if data.size and not np.isfinite(data).all():
        raise InputDataError(
            "expression contains NaN or infinite values; fix or drop those spots/genes"
        )
    if data.size and data.min() < 0:
        raise InputDataError(
            "expression contains negative values; sagefm expects raw counts "
            "(or log-normalised values >= 0 with normalized_input=True)"
        )
    if normalized_input:
        if data.size and data.max() > np.finfo(np.float32).max:
            raise InputDataError(
                f"expression values up to {data.max():.3g} do not fit in float32; normalised "
                "input (normalized_input=True) must be on a log scale"
            )
        return sp.csr_matrix(matrix, dtype=np.float32)
    if data.size and not np.array_equal(data, np.round(data)):
        raise InputDataError(
            "expression is not integer: sagefm expects raw UMI counts in X (or in a layer). "
            "If the data are already log-normalised, pass normalized_input=True "
            "(CLI: --normalized-input)"
        )
    # log1p before the cast to float32: counts above ~3e38 would otherwise become inf
    logged = np.log1p(data.astype(np.float64)).astype(np.float32)
    return sp.csr_matrix((logged, matrix.indices, matrix.indptr), shape=matrix.shape)


def column_mean_variance(values: np.ndarray | sp.spmatrix) -> tuple[np.ndarray, np.ndarray]:
    """(n_genes,) float64 mean and (population) variance of each column of a (n_spots, n_genes)
    sparse or dense matrix, without densifying a sparse one."""
    if sp.issparse(values):
        csr = sp.csr_matrix(values, dtype=np.float64)
        mean = np.asarray(csr.mean(axis=0)).ravel()
        mean_sq = np.asarray(csr.multiply(csr).mean(axis=0)).ravel()
        return mean, np.maximum(mean_sq - mean**2, 0.0)
    dense = np.asarray(values, dtype=np.float64)
    return dense.mean(axis=0), dense.var(axis=0)
