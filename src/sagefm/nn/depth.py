r"""Depth-invariant input: each node's values rescaled to a fixed library of its *visible* genes.

The network reads log1p counts ``x`` (V genes per node, 0 where hidden or unmeasured). With
``ModelConfig.depth_normalize`` it reads instead

    x'_g = log1p(expm1(x_g) · T / L),   L = Σ_g expm1(x_g)  (the node's visible library),

log1p of counts per ``T`` (`LIBRARY_TARGET`, counts per 10k as in scanpy and Seurat), so a uniform
change of sequencing depth leaves the input unchanged. ``L`` sums the visible genes only: hidden
genes are 0 in the input, so nothing about them leaks into the size factor. The head predicts on
the same scale and `restore_depth` maps back to log1p counts with the centre's visible library
(known at prediction time), so the loss and every caller keep the log1p-count scale.
"""

from __future__ import annotations

import torch

#: counts per node after normalisation (log1p of counts per 10k)
LIBRARY_TARGET = 1e4
#: log1p-scale predictions are capped here before expm1 (e^60 is far inside float32): an exploding
#: head in early training then gives a large finite loss rather than inf/NaN
_MAX_LOG_VALUE = 60.0


def visible_library(values: torch.Tensor) -> torch.Tensor:
    """(U,) total counts of each node's shown values: ``Σ_g expm1(values[u, g])``.

    ``values`` (U, V) log1p counts, dense or sparse CSR, 0 where hidden or unmeasured.
    """
    if values.layout == torch.strided:
        return torch.expm1(values).sum(dim=-1)
    rows = _csr_rows(values)
    library = torch.zeros(values.shape[0], dtype=values.dtype, device=values.device)
    return library.index_add_(0, rows, torch.expm1(values.values()))


def normalize_depth(
    values: torch.Tensor, library: torch.Tensor, target: float = LIBRARY_TARGET
) -> torch.Tensor:
    """``log1p(expm1(values) · T / library)``: values (any shape, log1p counts) at a library of
    ``target`` counts (T, default `LIBRARY_TARGET`); ``library`` broadcasts against ``values``. A
    node with no visible counts (library 0, so every value 0) stays 0."""
    factor = target / library.clamp(min=1e-12)
    return torch.log1p(torch.expm1(values) * factor)


def normalize_depth_rows(
    values: torch.Tensor, library: torch.Tensor, target: float = LIBRARY_TARGET
) -> torch.Tensor:
    """`normalize_depth` of each row of ``values`` (U, G), dense or sparse CSR (the stored values
    are transformed, the sparsity pattern kept), by its library (U,), to ``target`` counts."""
    if values.layout == torch.strided:
        return normalize_depth(values, library.unsqueeze(-1), target)
    rows = _csr_rows(values)
    return torch.sparse_csr_tensor(
        values.crow_indices(),
        values.col_indices(),
        normalize_depth(values.values(), library[rows], target),
        size=values.shape,
        check_invariants=False,  # the pattern of a valid CSR tensor, unchanged
    )


def restore_depth(
    prediction: torch.Tensor,
    library: float | torch.Tensor,
    target: float | torch.Tensor = LIBRARY_TARGET,
) -> torch.Tensor:
    """Log1p counts at ``library`` from predictions at ``target`` counts (the inverse of
    `normalize_depth`); ``library`` and ``target`` broadcast against ``prediction``, which must
    be >= 0 (the output activation guarantees it, see `ModelConfig.depth_normalize`)."""
    scale = library / target
    return torch.log1p(torch.expm1(prediction.clamp(max=_MAX_LOG_VALUE)) * scale)


def _csr_rows(values: torch.Tensor) -> torch.Tensor:
    """The row of every stored value of a sparse CSR matrix (nnz,)."""
    crow = values.crow_indices()
    counts = crow[1:] - crow[:-1]
    return torch.repeat_interleave(torch.arange(values.shape[0], device=values.device), counts)
