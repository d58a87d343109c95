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
from torch import nn

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


class DepthAdversary(nn.Module):
    """The squared correlation between each centre's log depth, relative to its slide's median,
    and the embedding's best linear read-out of it: the encoder's penalty with
    `ModelConfig.depth_adversary_weight`, so that the embedding does not carry depth.

    The read-out is a ridge regression of depth on the standardised embedding, solved each step
    from running (exponentially decayed, ``decay`` per training batch) second moments, with the
    embedding detached: it tracks the direction that reads depth best over the last few
    thousand spots, and the encoder is charged the batch's squared correlation along it, so it
    must clear depth from every linear read-out, which bounds each principal component's
    correlation with depth. A learned probe did not work: with its gradient reversed (DANN) the
    encoder inflated its error 150-fold within 10 steps; trained by Adam at the network's
    learning rate it never learned to read depth in 200 steps. The penalty is scale-free, in
    [0, 1]. Depth is relative to the slide's median (the slides' own depth differences are the
    slide centring's business).
    """

    def __init__(self, width: int, decay: float = 0.99, ridge: float = 1e-2) -> None:
        super().__init__()
        self.decay, self.ridge = decay, ridge
        self.register_buffer("moment_zz", torch.zeros(width, width))  # E[z zᵀ], decayed
        self.register_buffer("moment_zd", torch.zeros(width))  # E[z d]
        self.moment_zz: torch.Tensor
        self.moment_zd: torch.Tensor

    def forward(
        self, embedding: torch.Tensor, library: torch.Tensor, slide_library: torch.Tensor
    ) -> torch.Tensor:
        """() the penalty from ``embedding`` (B, h), visible ``library`` (B,) counts and
        ``slide_library`` (B,) the median library of each row's slide. In training mode the
        running moments take in the batch first. In fp32 under autocast too: the moments
        accumulate over thousands of steps."""
        with torch.autocast(embedding.device.type, enabled=False):
            return self._penalty(embedding.float(), library.float(), slide_library.float())

    def _penalty(
        self, embedding: torch.Tensor, library: torch.Tensor, slide_library: torch.Tensor
    ) -> torch.Tensor:
        z = embedding
        z = z - z.mean(dim=0)
        z = z / (z.square().mean(dim=0, keepdim=True).sqrt() + 1e-4)  # unit variance per dim
        d = torch.log(library.clamp(min=1.0) / slide_library.clamp(min=1.0))
        d = d - d.mean()
        with torch.no_grad():
            if self.training:
                n = z.shape[0]
                self.moment_zz.lerp_(z.T @ z / n, 1 - self.decay)
                self.moment_zd.lerp_(z.T @ d / n, 1 - self.decay)
            shrink = self.ridge * self.moment_zz.diagonal().mean().clamp(min=1e-8)
            eye = torch.eye(z.shape[1], device=z.device)
            weights = torch.linalg.solve(self.moment_zz + shrink * eye, self.moment_zd)
        read = z @ weights  # (B,) centred, as z is
        covariance = (read * d).mean()
        scale = read.square().mean() * d.square().mean()
        return covariance.square() / scale.clamp(min=1e-12)
