"""Batches of subgraphs: the centres of a batch, their neighbours, masks and edge weights."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch.utils.data import Dataset

from sagefm.config import ModelConfig
from sagefm.data.masking import mask_observed_genes
from sagefm.data.neighbourhood import subgraph_adjacency
from sagefm.data.slides import PreparedSlide

#: (slide index, spot index, mask seed) — one subgraph centre
CentreItem = tuple[int, int, int]


@dataclass
class SubgraphBatch:
    """B subgraphs of N nodes over U distinct spots and V genes (see `SageGCN.forward`)."""

    values: torch.Tensor  # (U, V) float32, model scale, 0 where not visible
    visible: torch.Tensor  # (U, V) float32 in {0, 1}
    node_index: torch.Tensor  # (B, N) int64 rows into U; column 0 = centre
    centre_values: torch.Tensor  # (B, V)
    centre_visible: torch.Tensor  # (B, V) float32, the centre's masked genes are 0
    target: torch.Tensor  # (B, V) bool, genes scored by the loss (hidden and observed)
    centre_truth: torch.Tensor  # (B, V) the centres' unmasked values (the loss target on ``target``)
    adj: torch.Tensor | None  # (B, N, N) normalised adjacency; None = complete graph
    slide_index: torch.Tensor  # (B,) int64
    spot_index: torch.Tensor  # (B,) int64

    def to(self, device: torch.device | str) -> SubgraphBatch:
        moved = {
            f.name: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
            for f in fields(self)
            for v in [getattr(self, f.name)]
        }
        return SubgraphBatch(**moved)


class SubgraphCollator:
    """Turns a list of centres into a `SubgraphBatch`.

    With ``mask_fraction`` set, each centre hides that share of its observed genes; the choice is
    a pure function of (seed, item seed, slide, spot), so it does not depend on worker count, rank
    or the order of batches (needed for exact resumption and reproducible validation).
    With ``neighbour_mask_fraction`` set, each neighbour also hides about that share of its genes
    (independent Bernoulli draws, seeded by the batch's centres): imputation hides genes in the
    neighbours too, and a model trained only on complete neighbours would meet inputs it never saw.
    """

    def __init__(
        self,
        slides: Sequence[PreparedSlide],
        model_config: ModelConfig,
        *,
        mask_fraction: float | None,
        neighbour_mask_fraction: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.slides = list(slides)
        self.model_config = model_config
        self.mask_fraction = mask_fraction
        self.neighbour_mask_fraction = neighbour_mask_fraction
        self.seed = seed

    def __call__(self, items: Sequence[CentreItem]) -> SubgraphBatch:
        slide_ids = np.fromiter((it[0] for it in items), dtype=np.int64, count=len(items))
        spot_ids = np.fromiter((it[1] for it in items), dtype=np.int64, count=len(items))
        n_nodes = self.slides[0].neighbours.shape[1]
        node_index = np.empty((len(items), n_nodes), dtype=np.int64)
        coords = np.empty((len(items), n_nodes, 2), dtype=np.float32)
        bandwidth = np.empty(len(items), dtype=np.float32)
        value_blocks, visible_blocks = [], []
        centre_values = np.empty((len(items), self.slides[0].observed.size), dtype=np.float32)
        centre_visible = np.empty(centre_values.shape, dtype=bool)
        offset = 0
        for s in np.unique(slide_ids):
            slide = self.slides[s]
            rows = np.flatnonzero(slide_ids == s)
            nodes = slide.neighbours[spot_ids[rows]]  # (b, N)
            unique, inverse = np.unique(nodes, return_inverse=True)
            node_index[rows] = inverse.reshape(nodes.shape) + offset
            offset += unique.size
            value_blocks.append(slide.values[unique].toarray())
            visible = slide.visible_rows(unique)
            visible_blocks.append(visible)
            centre_pos = inverse.reshape(nodes.shape)[:, 0]
            centre_values[rows] = value_blocks[-1][centre_pos]
            centre_visible[rows] = visible[centre_pos]
            coords[rows] = slide.coords_um[nodes]
            bandwidth[rows] = self.model_config.edge_bandwidth_um or slide.bandwidth_um
        centre_truth = centre_values * centre_visible
        target = np.zeros_like(centre_visible)
        if self.mask_fraction is not None:
            for b, (slide_id, spot_id, item_seed) in enumerate(items):
                rng = np.random.default_rng([self.seed, item_seed, slide_id, spot_id])
                target[b] = mask_observed_genes(centre_visible[b], self.mask_fraction, rng)
            centre_visible &= ~target
        values = np.concatenate(value_blocks)
        visible_all = np.concatenate(visible_blocks)
        if self.mask_fraction is not None and self.neighbour_mask_fraction > 0:
            entropy = [self.seed, items[0][2], *slide_ids.tolist(), *spot_ids.tolist()]
            draws = np.random.default_rng(entropy).random(visible_all.shape, dtype=np.float32)
            visible_all &= draws >= self.neighbour_mask_fraction
        adj = None
        if self.model_config.edge_scheme == "weighted":
            adj = subgraph_adjacency(
                torch.from_numpy(coords),
                scheme="weighted",
                bandwidth_um=torch.from_numpy(bandwidth),
                norm=self.model_config.graph_norm,
            )
        return SubgraphBatch(
            values=torch.from_numpy(values * visible_all),
            visible=torch.from_numpy(visible_all.astype(np.float32)),
            node_index=torch.from_numpy(node_index),
            centre_values=torch.from_numpy(centre_values * centre_visible),
            centre_visible=torch.from_numpy(centre_visible.astype(np.float32)),
            target=torch.from_numpy(target),
            centre_truth=torch.from_numpy(centre_truth),
            adj=adj,
            slide_index=torch.from_numpy(slide_ids),
            spot_index=torch.from_numpy(spot_ids),
        )


class CentreDataset(Dataset[CentreItem]):
    """Every spot of every slide as a subgraph centre.

    ``set_epoch`` changes the masks drawn for the next epoch (training); a dataset built with
    ``fixed_masks=True`` draws the same masks every epoch (validation).
    """

    def __init__(self, slides: Sequence[PreparedSlide], *, fixed_masks: bool = False) -> None:
        sizes = [s.n_spots for s in slides]
        self.slide_of = np.repeat(np.arange(len(slides)), sizes)
        self.spot_of = (
            np.concatenate([np.arange(n) for n in sizes]) if sizes else np.empty(0, np.int64)
        )
        self.fixed_masks = fixed_masks
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        if not self.fixed_masks:
            self.epoch = epoch

    def __len__(self) -> int:
        return int(self.slide_of.size)

    def __getitem__(self, index: int) -> CentreItem:
        return int(self.slide_of[index]), int(self.spot_of[index]), self.epoch
