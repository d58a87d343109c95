"""FLOPs of our model and of the plain PyTorch Geometric reference, counted from the layer sizes."""

from __future__ import annotations

import itertools

import torch

from sagefm.config import ModelConfig
from sagefm.data.batches import SubgraphBatch
from sagefm.data.slides import PreparedSlide


def in_features(config: ModelConfig) -> int:
    return config.n_genes * (2 if config.input_has_visibility else 1)


def encoder_flops(config: ModelConfig, n_subgraphs: int, n_nodes: int) -> float:
    """FLOPs of `SageGCN.encode` after the first projection (propagation and later layers)."""
    sizes = config.hidden_sizes
    per_subgraph = 0.0
    for i, h in enumerate(sizes):
        fan_in = sizes[i - 1] if i else 0
        linear = 2 * fan_in * h  # one row through H W (0 for the first layer: already projected)
        if config.edge_scheme == "complete":  # one vector per subgraph after the first layer
            per_subgraph += linear
        elif i == len(sizes) - 1:  # the centre row only: (Â[0] H) W
            per_subgraph += 2 * n_nodes * (fan_in or h) + linear
        else:
            per_subgraph += n_nodes * linear + 2 * n_nodes * n_nodes * h
    return n_subgraphs * per_subgraph


def our_training_flops(config: ModelConfig, batch: SubgraphBatch) -> float:
    """Executed FLOPs of one training step: forward, backward (2x, 1x for the first layer's input
    gradient, which is not needed) and the head; the optimizer's elementwise work is not counted."""
    n_sub, n_nodes = batch.node_index.shape
    in_f, h0 = in_features(config), config.hidden_sizes[0]
    rows = n_sub if config.edge_scheme == "complete" else batch.values.shape[0] + n_sub
    first = 2 * rows * in_f * h0
    rest = (
        encoder_flops(config, n_sub, n_nodes) + 2 * n_sub * config.hidden_sizes[-1] * config.n_genes
    )
    return 2 * first + 3 * rest


def reference_flops(config: ModelConfig, n_subgraphs: int, n_nodes: int, training: bool) -> float:
    """FLOPs of the plain GCNConv stack: every node through every layer, messages on all edges
    (N² per subgraph with self-loops), the head on the centres (training only)."""
    sizes = (in_features(config), *config.hidden_sizes)
    per_node = sum(2 * a * b for a, b in itertools.pairwise(sizes))
    messages = sum(2 * n_nodes * h for h in sizes[1:])
    forward = n_subgraphs * n_nodes * (per_node + messages)
    if not training:
        return forward
    head = 2 * n_subgraphs * sizes[-1] * config.n_genes
    return 3 * (forward + head) - n_subgraphs * n_nodes * 2 * sizes[0] * sizes[1]


def our_embedding_flops(config: ModelConfig, slide: PreparedSlide) -> float:
    """Executed FLOPs of `SageFM.embed`: the sparse first layer once per spot, then `encode`."""
    h0 = config.hidden_sizes[0]
    visibility = 2 * config.n_genes * h0 if config.input_has_visibility else 0
    first = 2 * slide.values.nnz * h0 + visibility
    return first + encoder_flops(config, slide.n_spots, slide.neighbours.shape[1])


def needed_training_flops(config: ModelConfig, batch: SubgraphBatch) -> float:
    """FLOPs one training step needs at least: the first layer on the non-zeros only, once per
    distinct node row (U spots + B centres), forward and weight gradient; the rest as executed.

    The first layer's needed work is ``2 h_0`` per shown value (nnz of the values) plus, with a
    visibility term, ``2 h_0`` per observed-but-hidden entry (the sparse correction) and
    ``2 h_0 V`` per slide of the batch (its observed vector): what `SageGCN.project` does with
    sparse values and ``observed``/``hidden``. A complete graph needs the same rows (the mean of
    the projections equals the projection of the mean input). A gene visible in some row of the
    batch counts as observed in every row (exact for one slide; the shared corpus's slides measure
    >99% of the vocabulary).
    """
    h0 = config.hidden_sizes[0]
    n_sub, n_nodes = batch.node_index.shape
    entries = int(torch.count_nonzero(batch.node_values))
    if config.input_has_visibility:
        observed = int((batch.node_visible.sum(0) > 0).sum())
        n_slides = int(torch.unique(batch.slide_index).numel())
        entries += int((batch.node_visible == 0).sum()) - int(
            (config.n_genes - observed) * batch.node_values.shape[0]
        )
        entries += n_slides * config.n_genes
    rest = (
        encoder_flops(config, n_sub, n_nodes) + 2 * n_sub * config.hidden_sizes[-1] * config.n_genes
    )
    return 2 * (2 * entries * h0) + 3 * rest
