"""The GCN's building blocks: the dense GCN layer, the activations and the skip path's neighbour mean."""

from __future__ import annotations

import torch
from torch import nn

from sagefm.config import ModelConfig


class DenseGCNLayer(nn.Module):
    """``H' = Â (H W) + b`` for a batch of dense graphs (GCNConv's maths, Kipf & Welling 2017).

    ``Â`` (B, N, N) is the normalised adjacency with self-loops, ``H`` (B, N, in), result (B, N, out).
    The linear part is exposed so that callers can apply it once per spot and share the result
    between every subgraph that contains the spot (the layer is linear before propagation).
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_features))

    def propagate(self, adj: torch.Tensor | None, projected: torch.Tensor) -> torch.Tensor:
        """``Â @ projected + b``; ``adj=None`` means the complete graph (every row of Â = the mean)."""
        if adj is None:
            return projected.mean(dim=-2, keepdim=True) + self.bias
        return torch.baddbmm(self.bias, adj, projected)  # one pass: bias + Â @ projected

    def forward(self, h: torch.Tensor, adj: torch.Tensor | None) -> torch.Tensor:
        return self.propagate(adj, self.linear(h))


def activation(config: ModelConfig) -> nn.Module:
    # In place: the activation always follows an op whose output autograd does not keep.
    if config.activation == "leaky_relu":
        return nn.LeakyReLU(config.negative_slope, inplace=True)
    if config.activation == "gelu":
        return nn.GELU()
    return nn.ReLU(inplace=True)


def output_activation(config: ModelConfig) -> nn.Module:
    if config.output_activation == "relu":
        return nn.ReLU()
    if config.output_activation == "softplus":
        return nn.Softplus()
    return nn.Identity()


#: the smallest value `inverse_output_activation` inverts for softplus (log1p scale): a gene with
#: mean 0 starts at softplus(log(expm1(1e-4))) = 1e-4 rather than at -inf
_SOFTPLUS_FLOOR = 1e-4


def inverse_output_activation(config: ModelConfig, value: torch.Tensor) -> torch.Tensor:
    """The head's raw output that the output activation maps to ``value`` (any shape): the
    identity for relu (on values >= 0) and none; ``log(expm1(value))`` for softplus, floored
    at `_SOFTPLUS_FLOOR`. With softplus and depth normalisation ``expm1(softplus(z)) = exp(z)``:
    the head predicts a log rate, which the centre's depth and its slide's shift multiply, as
    in scVI; levels and shifts are therefore set on that log scale."""
    if config.output_activation != "softplus":
        return value
    return torch.log(torch.expm1(value.clamp(min=_SOFTPLUS_FLOOR)))


def mean_over_neighbours(
    values: torch.Tensor,
    visible: torch.Tensor,
    node_index: torch.Tensor,
    centre: torch.Tensor | None = None,
    counted: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, G) mean of (U, G) ``values`` over the visible neighbours (nodes 1..N-1) of each row of
    ``node_index`` (B, N); 0 where no neighbour is visible (hidden values are already 0).
    ``centre`` ((G,) or (B, G)): the mean's departure from it instead, still 0 where no neighbour
    is visible. ``counted`` (U, G): the visibility that counts the neighbours, when it is not
    ``visible`` (an integration path scales ``values`` and ``visible`` but not the count).

    As bag sums (`embedding_bag`, one pass over the B x (N-1) rows read): the (B, U) count
    matrix times the rows cost B x U x G multiply-adds (9.7 ms against 0.8 for a batch of 64 over
    900 spots and 5,000 genes), and the gather ``values[nodes]`` would write and re-read a
    (B, N-1, G) copy (4.6 ms). Kept in float32 under autocast.
    """
    nodes = node_index[:, 1:]

    def summed(rows: torch.Tensor) -> torch.Tensor:
        rows = rows.to(values.dtype)
        if nodes.shape[1] == 0:  # no neighbours (embedding_bag refuses empty bags of this form)
            return rows.new_zeros(nodes.shape[0], rows.shape[1])
        return nn.functional.embedding_bag(nodes, rows, mode="sum")

    with torch.autocast(values.device.type, enabled=False):
        total, seen = summed(values), summed(visible)
        if centre is not None:
            total = total - seen * centre.to(values.dtype)
        if counted is not None:
            seen = summed(counted)
    return total / seen.clamp(min=1.0)


class _RowProjection(torch.autograd.Function):
    """``x @ weight.T`` whose weight gradient multiplies a contiguous copy of the output's
    gradient transposed: (h, R) @ (R, F). Given the transposed view instead, oneDNN's bf16
    matmul of the first layer's (1024 x 960) @ (960 x 5000) ran at 309 GFLOP/s against 391 on
    the 2-core EPYC (issue 12); the copy is R x h, a 20th of the product's operands."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x @ weight.T

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        (x,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return None, grad.T.contiguous() @ x


def project_rows(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``linear(x)`` (no bias) for input rows that need no gradient, as autocast would run it
    (the weight cast to the autocast dtype), with the faster weight gradient of `_RowProjection`."""
    weight = linear.weight
    device = x.device.type
    if x.requires_grad:
        return torch.nn.functional.linear(x, weight)
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        with torch.autocast(device, enabled=False):
            return _RowProjection.apply(x.to(dtype), weight.to(dtype))
    return _RowProjection.apply(x, weight)


#: knots of `panel_basis`, in units of -log(share of the vocabulary shown): the whole vocabulary,
#: a third of it (e^-1) and a seventh (e^-2); her2st spots show about 0.7 of it in training,
#: DLPFC 0.25, the prostate slides 0.04
PANEL_KNOTS = (0.0, 1.0, 2.0)


def panel_basis(shown_share: torch.Tensor) -> torch.Tensor:
    """(..., K) the features `ModelConfig.panel_skip` weighs per gene, from (...) shares of the
    vocabulary shown (0-1): ``max(0, u - knot)`` for u = -log(share) and each of `PANEL_KNOTS`,
    a piecewise-linear basis that is 0 for a spot showing every gene."""
    u = -torch.log(shown_share.clamp(min=1e-3, max=1.0))
    knots = torch.tensor(PANEL_KNOTS, dtype=u.dtype, device=u.device)
    return torch.relu(u.unsqueeze(-1) - knots)


def shown_share(visible: torch.Tensor) -> torch.Tensor:
    """(...) the share of the vocabulary each row of (..., V) visibility (0/1) shows."""
    return visible.sum(-1) / visible.shape[-1]


def panel_multiple(
    weight: torch.Tensor,
    shown: torch.Tensor,
    genes: torch.Tensor | None = None,
    *,
    shared: torch.Tensor | None = None,
) -> torch.Tensor:
    """``ModelConfig.panel_skip``'s part of each gene's skip multiple: `panel_basis` of (...)
    ``shown`` times the (K, V) per-gene ``weight`` plus the (K,) ``shared`` by every gene
    (``ModelConfig.panel_skip_shared``): (..., V), or with ``genes`` (an index of vocabulary
    positions) one per gene, broadcast against the index."""
    if shared is not None:
        weight = weight + shared.unsqueeze(-1)
    basis = panel_basis(shown)  # (..., K)
    if genes is None:
        return basis @ weight.to(basis.dtype)
    return (basis * weight.T[genes]).sum(-1)  # (*genes.shape, K) summed
