"""The SAGE-FM network: a stack of GCN layers over 15-node subgraphs and a reconstruction head.

Shapes: B subgraphs, N nodes each (node 0 = the centre spot), V vocabulary genes, h_l hidden sizes.
Subgraphs are small and dense, so propagation is a batched (B, N, N) @ (B, N, h) matmul rather than
a scatter over an edge list; `DenseGCNLayer` equals `torch_geometric.nn.GCNConv` on the same graph
(tests/nn/test_gcn.py checks it).
"""

from __future__ import annotations

import itertools

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


def _activation(config: ModelConfig) -> nn.Module:
    # In place: the activation always follows an op whose output autograd does not keep.
    if config.activation == "leaky_relu":
        return nn.LeakyReLU(config.negative_slope, inplace=True)
    if config.activation == "gelu":
        return nn.GELU()
    return nn.ReLU(inplace=True)


def _output_activation(config: ModelConfig) -> nn.Module:
    if config.output_activation == "relu":
        return nn.ReLU()
    if config.output_activation == "softplus":
        return nn.Softplus()
    return nn.Identity()


class SageGCN(nn.Module):
    """GCN encoder (``len(hidden_sizes)`` layers) + linear head reconstructing the centre's genes.

    Input per node: expression (V,) with hidden/unobserved genes set to 0, and, when
    ``mask_indicator`` or ``standardize_input``, the visibility flags (V,) concatenated, so the input
    layer has 2V features. Standardisation (z-scores with the training data's mean and sd) is folded
    into the first layer's weights (`input_weights`), so the features stay sparse.
    The embedding of a spot is the last GCN layer's output at the centre node.
    """

    input_mean: torch.Tensor  # (V,) buffers, present with ModelConfig.standardize_input
    input_scale: torch.Tensor

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.n_genes < 1:
            raise ValueError("ModelConfig.n_genes must be set before building the network")
        self.config = config
        # learnable weights on values (V) and on the mask indicator (V); see `input_weights`
        in_features = config.n_genes * (2 if config.mask_indicator else 1)
        sizes = (in_features, *config.hidden_sizes)
        self.layers = nn.ModuleList(DenseGCNLayer(a, b) for a, b in itertools.pairwise(sizes))
        self.act = _activation(config)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_sizes[-1], config.n_genes)
        self.out_act = _output_activation(config)
        # Per-gene weight of the neighbour-mean skip path (see ModelConfig.spatial_skip). Starts at
        # 0: started at 1, the skip path alone matched the baseline from step one and the GCN
        # collapsed (constant embeddings, no response to any input) on the synthetic tissue.
        self.skip_weight = (
            nn.Parameter(torch.zeros(config.n_genes)) if config.spatial_skip else None
        )
        # z-scores of the input (ModelConfig.standardize_input): fixed, saved with the weights.
        # The identity until `set_input_scaling` is called with the training data's statistics.
        if config.standardize_input:
            self.register_buffer("input_mean", torch.zeros(config.n_genes))
            self.register_buffer("input_scale", torch.ones(config.n_genes))

    def set_input_scaling(self, mean: torch.Tensor, scale: torch.Tensor) -> None:
        """Standardise gene ``g`` as ``(x_g - mean[g]) / scale[g]`` (both (V,), scale > 0)."""
        if not self.config.standardize_input:
            raise ValueError("this network was built with standardize_input=False")
        if bool((scale <= 0).any()):
            raise ValueError("input scales must be positive")
        self.input_mean.copy_(mean)
        self.input_scale.copy_(scale)

    @property
    def gcn_layers(self) -> list[DenseGCNLayer]:
        """The GCN layers, typed (ModuleList indexing loses the element type)."""
        return [layer for layer in self.layers if isinstance(layer, DenseGCNLayer)]

    def node_features(self, values: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """(U, V) values and (U, V) visibility -> (U, V or 2V) input features; hidden values zeroed.

        Features are on the raw scale; standardisation lives in `input_weights`, so that sparse
        inputs stay sparse and a clamp changes one feature.
        """
        shown = values * visible
        return torch.cat([shown, visible], dim=-1) if self.config.input_has_visibility else shown

    def input_weights(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """First-layer weights on the raw features: (h_0, V) on values, (h_0, V) on visibility.

        With standardisation, ``W z`` for ``z = (x - mean) / scale`` on visible genes equals
        ``(W / scale) x - (W mean / scale) visible``: the value weights are rescaled and the
        visibility weights (the indicator's, or none) get ``-W mean / scale``. None: no
        visibility term.
        """
        weight = self.gcn_layers[0].linear.weight  # (h_0, F)
        n_genes = self.config.n_genes
        w_value = weight[:, :n_genes]
        w_visible = weight[:, n_genes:] if self.config.mask_indicator else None
        if self.config.standardize_input:
            w_value = w_value / self.input_scale
            offset = -w_value * self.input_mean
            w_visible = offset if w_visible is None else w_visible + offset
        return w_value, w_visible

    def feature_weight(self) -> torch.Tensor:
        """(h_0, F) first-layer weight on `node_features` (the two halves of `input_weights`)."""
        w_value, w_visible = self.input_weights()
        return w_value if w_visible is None else torch.cat([w_value, w_visible], dim=1)

    def project_features(self, features: torch.Tensor) -> torch.Tensor:
        """First layer's linear map of node features (..., F) from `node_features` -> (..., h_0)."""
        return features @ self.feature_weight().T

    def project(self, values: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """First layer's linear map of U spots: (U, V), (U, V) -> (U, h_0), shareable across subgraphs."""
        return self.project_features(self.node_features(values, visible))

    def project_sparse(
        self, shown: torch.Tensor, observed: torch.Tensor, hidden: torch.Tensor | None = None
    ) -> torch.Tensor:
        """`project` for U spots of one slide given sparsely: (U, V) CSR ``shown`` -> (U, h_0).

        ``shown`` holds the visible values (0 elsewhere), ``observed`` (V,) the slide's measured
        genes and ``hidden`` an optional (U, V) CSR 0/1 matrix of observed entries hidden in those
        spots. The visibility half of the input is then ``observed - hidden``, so its projection is
        one vector for the slide minus a sparse correction: the dense (U, 2V) input is never built,
        and the value half costs nnz x h_0 instead of U x V x h_0 multiply-adds.
        """
        w_value, w_visible = self.input_weights()
        # Row-major (V, h_0) copies: sparse @ dense reads one dense row per non-zero, and rows of
        # a transposed view are strided columns (~30x slower on CPU).
        out = torch.sparse.mm(shown, w_value.T.contiguous())
        if w_visible is not None:
            out = out + w_visible @ observed.to(w_visible.dtype)
            if hidden is not None:
                out = out - torch.sparse.mm(hidden, w_visible.T.contiguous())
        return out

    def encode(self, projected: torch.Tensor, adj: torch.Tensor | None) -> torch.Tensor:
        """Centre embeddings (B, h_last) from first-layer projections (B, N, h_0) of each subgraph's nodes.

        ``adj`` (B, N, N) normalised adjacency, or None for the complete graph: then every node is
        identical after the first layer, so later layers run on one vector per subgraph.
        """
        layers = self.gcn_layers
        h = projected
        for i, layer in enumerate(layers):
            last = i == len(layers) - 1
            if last and adj is not None:
                # Only the centre row is needed, and Â(HW) = (ÂH)W: mix first, then map one row.
                h = torch.bmm(adj[:, :1, :], h)  # (B, 1, h)
                h = (layer.linear(h) if i > 0 else h) + layer.bias
            else:
                h = layer.propagate(adj, layer.linear(h) if i > 0 else h)
            h = self.act(h)
            if not last:
                h = self.dropout(h)
        return h[:, 0, :]

    def reconstruct(
        self, embedding: torch.Tensor, neighbour_mean: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Centre genes (B, V) from centre embeddings (B, h_last), on the model's expression scale.

        ``neighbour_mean`` (B, V), from `neighbour_mean`, feeds the skip path when the model has one.
        """
        out = self.head(embedding)
        if self.skip_weight is not None:
            if neighbour_mean is None:
                raise ValueError("this model has a spatial skip path: pass neighbour_mean")
            out = out + self.skip_weight * neighbour_mean
        return self.out_act(out)

    @staticmethod
    def neighbour_mean(
        values: torch.Tensor, visible: torch.Tensor, node_index: torch.Tensor
    ) -> torch.Tensor:
        """Each gene's mean over the visible neighbours (nodes 1..N-1): (B, V); 0 where none is visible."""
        nodes = node_index[:, 1:]
        total = values[nodes].sum(dim=1)  # (B, V); hidden values are already 0
        count = visible[nodes].sum(dim=1)
        return total / count.clamp(min=1.0)

    def forward(
        self,
        values: torch.Tensor,
        visible: torch.Tensor,
        node_index: torch.Tensor,
        centre_values: torch.Tensor,
        centre_visible: torch.Tensor,
        adj: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict the centres' genes.

        values, visible: (U, V) the distinct spots of the batch (neighbours as seen);
        node_index: (B, N) rows into U, column 0 = the centre; centre_values/centre_visible: (B, V)
        the centre as seen (its masked genes hidden); adj: (B, N, N) or None.
        Returns (prediction (B, V), embedding (B, h_last)).
        """
        if adj is None:
            # Complete graph: layer 1 is the mean of the nodes' projections, and the projection is
            # linear, so project the mean input once per subgraph: N times fewer FLOPs.
            features = self.node_features(values, visible)[node_index[:, 1:]]  # (B, N-1, F)
            centre = self.node_features(centre_values, centre_visible)  # (B, F)
            mean = (features.sum(dim=1) + centre) / node_index.shape[1]
            projected = self.project_features(mean).unsqueeze(1)  # (B, 1, h_0)
        else:
            projected = self.project(values, visible)[node_index]  # (B, N, h_0)
            centre = self.project(centre_values, centre_visible)  # (B, h_0)
            projected = torch.cat([centre.unsqueeze(1), projected[:, 1:]], dim=1)
        embedding = self.encode(projected, adj)
        skip = (
            self.neighbour_mean(values, visible, node_index)
            if self.skip_weight is not None
            else None
        )
        return self.reconstruct(embedding, skip), embedding
