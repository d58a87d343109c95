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

    As two matmuls with the (B, U) count of each spot among a row's neighbours: the gather
    ``values[nodes]`` would write and re-read a (B, N-1, G) copy. Kept in float32 under autocast.
    """
    nodes = node_index[:, 1:]
    counts = torch.zeros(nodes.shape[0], values.shape[0], dtype=values.dtype, device=values.device)
    counts.scatter_add_(1, nodes, torch.ones_like(nodes, dtype=values.dtype))
    with torch.autocast(values.device.type, enabled=False):
        total, seen = counts @ values, counts @ visible.to(values.dtype)
        if centre is not None:
            total = total - seen * centre.to(values.dtype)
        if counted is not None:
            seen = counts @ counted.to(values.dtype)
    return total / seen.clamp(min=1.0)
