"""The plain implementation our GCN is measured against: a `torch_geometric.nn.GCNConv` stack over
the batched 15-node subgraphs as an edge list (every node of every subgraph through every layer,
`REFERENCE_CHUNK` subgraphs per chunk). It gets our weights, so its embeddings must equal ours."""

from __future__ import annotations

import itertools

import anndata as ad
import numpy as np
import torch
from torch import nn

from benchmarks.flops import in_features
from sagefm.config import ModelConfig, SageFMConfig
from sagefm.data.batches import SubgraphBatch, SubgraphCollator
from sagefm.data.slides import PreparedSlide, prepare_slide
from sagefm.data.vocabulary import GeneVocabulary
from sagefm.nn.gcn import SageGCN

#: subgraphs per reference chunk (inference) — the plain-PyG setting the issue measured
REFERENCE_CHUNK = 512


def first_layer_weight(network: SageGCN) -> torch.Tensor:
    """(h_0, F) first-layer weight of ``network`` on raw node inputs [values, visibility], the
    standardisation folded in: read through `SageGCN.project` (linear, no bias) on unit inputs."""
    n_genes = network.config.n_genes
    eye, zero = torch.eye(n_genes), torch.zeros(n_genes, n_genes)
    w_value = network.project(eye, zero).T
    if not network.config.input_has_visibility:
        return w_value
    return torch.cat([w_value, network.project(zero, eye).T], dim=1)


class ReferenceGCN(nn.Module):
    """The plain implementation: GCNConv layers (in -> hidden sizes), the activation, a Linear head."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        from torch_geometric.nn import GCNConv

        sizes = (in_features(config), *config.hidden_sizes)
        self.convs = nn.ModuleList(
            GCNConv(a, b, add_self_loops=True, normalize=True) for a, b in itertools.pairwise(sizes)
        )
        self.act = nn.LeakyReLU(config.negative_slope)
        self.head = nn.Linear(sizes[-1], config.n_genes)

    def load_from(self, network: SageGCN) -> None:
        """Copy our weights (same maths: `DenseGCNLayer` equals GCNConv)."""
        with torch.no_grad():
            for i, (conv, layer) in enumerate(zip(self.convs, network.gcn_layers, strict=True)):
                # the first layer on the raw features, with the standardisation folded in
                weight = first_layer_weight(network) if i == 0 else layer.linear.weight
                conv.get_parameter("lin.weight").copy_(weight)
                conv.get_parameter("bias").copy_(layer.bias)
            self.head.load_state_dict(network.head.state_dict())

    def embed(
        self, x: torch.Tensor, edge_index: torch.Tensor, edge_weight: torch.Tensor, n_nodes: int
    ) -> torch.Tensor:
        """Node features (B*N, F) of B subgraphs -> centre embeddings (B, h_last)."""
        h = x
        for conv in self.convs:
            h = self.act(conv(h, edge_index, edge_weight))
        return h[::n_nodes]


def reference_graph(
    slide: PreparedSlide, spots: np.ndarray, config: ModelConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Edge list of the subgraphs centred on ``spots`` as one disjoint graph: every ordered pair of
    distinct nodes, Gaussian weights (all ones for "complete"); GCNConv adds the self-loops."""
    nodes = slide.neighbours[spots]  # (B, N)
    n_sub, n_nodes = nodes.shape
    src, dst = np.nonzero(~np.eye(n_nodes, dtype=bool))
    offsets = (np.arange(n_sub) * n_nodes)[:, None]
    edge_index = torch.from_numpy(np.stack([(offsets + src).ravel(), (offsets + dst).ravel()]))
    if config.edge_scheme == "complete":
        return edge_index, torch.ones(edge_index.shape[1])
    coords = slide.coords_um[nodes].astype(np.float64)  # (B, N, 2)
    sq = ((coords[:, src] - coords[:, dst]) ** 2).sum(-1)
    sigma = config.edge_bandwidth_um or slide.bandwidth_um
    return edge_index, torch.from_numpy(np.exp(-sq / (2 * sigma**2)).ravel().astype(np.float32))


def reference_features(config: ModelConfig, batch: SubgraphBatch) -> torch.Tensor:
    """(B*N, F) node inputs [values, visibility] of a collated batch, one row per node occurrence
    (no sharing); values only without a visibility term."""

    def features(values: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        return torch.cat([values, visible], dim=-1) if config.input_has_visibility else values

    x = features(batch.values, batch.visible)[batch.node_index]  # (B, N, F)
    x[:, 0] = features(batch.centre_values, batch.centre_visible)
    return x.reshape(-1, x.shape[-1])


def reference_embed(
    reference: ReferenceGCN,
    network: SageGCN,
    adata: ad.AnnData,
    vocabulary: GeneVocabulary,
    config: SageFMConfig,
) -> np.ndarray:
    """Embed a slide the plain way: prepare it, then chunks of 512 subgraphs through GCNConv."""
    slide, _ = prepare_slide(adata, vocabulary, config.data)
    collate = SubgraphCollator([slide], config.model, mask_fraction=None)
    n_nodes = slide.neighbours.shape[1]
    out = np.empty((slide.n_spots, config.model.hidden_sizes[-1]), np.float32)
    with torch.inference_mode():
        for start in range(0, slide.n_spots, REFERENCE_CHUNK):
            spots = np.arange(start, min(slide.n_spots, start + REFERENCE_CHUNK))
            batch = collate([(0, int(i), 0) for i in spots])
            edge_index, weight = reference_graph(slide, spots, config.model)
            out[spots] = reference.embed(
                reference_features(config.model, batch), edge_index, weight, n_nodes
            ).numpy()
    return out
