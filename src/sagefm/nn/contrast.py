"""A GraphST-style contrast on the embedding layer (`ModelConfig.contrastive_loss_weight`).

Deep Graph Infomax as GraphST uses it (Long et al. 2023; Veličković et al. 2019): a bilinear
discriminator scores the centre's embedding against its subgraph's summary (the
mean of the subgraph's node embeddings; see `summary`), and scores the embedding of a *corrupted*
subgraph, whose every node input is replaced by another spot's, against the same summary. The
embedding is pushed to say what distinguishes a spot's own neighbourhood from a random spot's:
expression that varies in space and is shared by neighbours, the signal of spatial domains.

Corruption permutes the first layer's projected rows, within each slide, so no second pass
through the first layer (the step's costliest product) is needed, and a slide's batch or depth
offsets cannot tell the pairs apart.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def shuffle_within(groups: torch.Tensor) -> torch.Tensor:
    """(R,) int64 permutation of R rows that sends every row to a random row of its own group.

    ``groups`` (R,) integer group of each row (a node row's slide). Uniform within each group:
    rows sorted by (group, random key) are matched, in order, to rows sorted by group.
    """
    keys = groups.to(torch.float64) + torch.rand(
        groups.shape, device=groups.device, dtype=torch.float64
    )
    shuffled = torch.argsort(keys)
    order = torch.argsort(groups, stable=True)
    permutation = torch.empty_like(order)
    permutation[order] = shuffled
    return permutation


def summary(nodes: torch.Tensor) -> torch.Tensor:
    """(B, h) the subgraph summaries of node embeddings (B, N, h): their mean over the N nodes.

    Not GraphST's readout, the sigmoid of the L2-normalised mean: at 1,024 dimensions each of its
    components is 0.5 ± ~0.01, nearly the same vector for every subgraph, and in a 6-epoch run
    (README, "A GraphST-style contrast") the discriminator stayed near chance with it (0.60-0.76
    against log 2 = 0.69)."""
    return nodes.mean(dim=1)


class Discriminator(nn.Module):
    """Logits (B, 2) of (embedding, summary) pairs: the real centre embedding, then the corrupted
    one, each against the real subgraph's summary (targets 1 and 0).

    A bilinear score ``eᵀ W s + b`` (GraphST's ``nn.Bilinear``), written as a linear map of the
    summary so that it runs under CPU autocast, which ``nn.Bilinear`` does not."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.weight = nn.Linear(width, width, bias=False)  # W s
        nn.init.xavier_uniform_(self.weight.weight)
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(
        self, real: torch.Tensor, corrupted: torch.Tensor, context: torch.Tensor
    ) -> torch.Tensor:
        """``real``, ``corrupted`` (B, h) centre embeddings; ``context`` (B, h) summaries."""
        mapped = self.weight(context)  # (B, h)
        pairs = torch.stack([real, corrupted], dim=1)  # (B, 2, h)
        return (pairs * mapped.unsqueeze(1)).sum(dim=-1) + self.bias


def contrast_loss(logits: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of `Discriminator` logits (B, 2) against targets (1, 0): log 2 ≈ 0.69
    when the pairs cannot be told apart, 0 when they always can."""
    target = torch.zeros_like(logits)
    target[:, 0] = 1.0
    return F.binary_cross_entropy_with_logits(logits, target)
