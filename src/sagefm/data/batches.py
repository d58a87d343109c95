"""Batches of subgraphs: the centres of a batch, their neighbours, masks and edge weights."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch

from sagefm.config import ModelConfig
from sagefm.data.masking import mask_centres, mask_observed_genes
from sagefm.data.neighbourhood import subgraph_adjacency
from sagefm.data.sampling import CentreItem
from sagefm.data.slides import PreparedSlide

#: the range of the vocabulary's share a panel batch keeps (`DataConfig.panel_batch_fraction`)
PANEL_SHARES = (0.05, 0.5)
#: panel batches draw from this many panels, fixed by the seed, so that each slide's statistics
#: under each panel (slide means, median library) are computed once
PANEL_POOL = 8
#: tells the panels' random streams from the masks' (same centres, same seed)
PANEL_STREAM = 7919


@dataclass
class SubgraphBatch:
    """B subgraphs of N nodes over U distinct spots and V genes (see `SageGCN.forward`).

    Every node row as seen is in one (U + B, V) buffer: the U distinct spots (as neighbours see
    them), then the B centres (their masked genes hidden). `values`, `centre_values` and the
    visibilities are views of it, so the first layer can project all rows in one matmul
    (`node_rows` indexes them) without copying.
    """

    node_values: torch.Tensor  # (U + B, V) float32, model scale, 0 where not visible
    node_visible: torch.Tensor  # (U + B, V) float32 in {0, 1}
    node_index: torch.Tensor  # (B, N) int64 rows into U; column 0 = centre
    target: torch.Tensor  # (B, V) bool, genes scored by the loss (hidden and observed)
    centre_truth: (
        torch.Tensor
    )  # (B, V) the centres' unmasked values (the loss target on ``target``)
    adj: torch.Tensor | None  # (B, N, N) normalised adjacency; None = complete graph
    slide_index: torch.Tensor  # (B,) int64
    spot_index: torch.Tensor  # (B,) int64
    #: with a collator's ``slide_means``: (S, V) the means of the S slides in the batch; with
    #: ``ModelConfig.slide_library_target`` or ``slide_output_target``: (S,) their median
    #: libraries; (U + B,) int64 each node row's slide among them (also what the contrast
    #: corrupts within)
    slide_means: torch.Tensor | None = None
    slide_libraries: torch.Tensor | None = None
    row_slide: torch.Tensor | None = None
    panel: bool = False  #: every spot shows a random panel only (`DataConfig.panel_batch_fraction`)

    @property
    def n_spots(self) -> int:
        """U, the distinct spots (the rows before the centres' own)."""
        return self.node_values.shape[0] - self.node_index.shape[0]

    @property
    def row_slide_mean(self) -> torch.Tensor | None:
        """(U + B, V) each node row's slide's means (the ``slide_mean`` of
        `SageGCN.predict_rows`), or None without them."""
        if self.slide_means is None or self.row_slide is None:
            return None
        return self.slide_means[self.row_slide]

    @property
    def row_slide_library(self) -> torch.Tensor | None:
        """(U + B,) each node row's slide's median library (the ``slide_library`` of
        `SageGCN.predict_rows`), or None without them."""
        if self.slide_libraries is None or self.row_slide is None:
            return None
        return self.slide_libraries[self.row_slide]

    @property
    def values(self) -> torch.Tensor:
        """(U, V) the distinct spots as neighbours see them."""
        return self.node_values[: self.n_spots]

    @property
    def visible(self) -> torch.Tensor:
        """(U, V)"""
        return self.node_visible[: self.n_spots]

    @property
    def centre_values(self) -> torch.Tensor:
        """(B, V) the centres as seen (their masked genes 0)."""
        return self.node_values[self.n_spots :]

    @property
    def centre_visible(self) -> torch.Tensor:
        """(B, V) float32, the centre's masked genes are 0."""
        return self.node_visible[self.n_spots :]

    @property
    def node_rows(self) -> torch.Tensor:
        """(B, N) rows into ``node_values``: `node_index` with column 0 at the centre's own row."""
        centres = torch.arange(
            self.n_spots, self.node_values.shape[0], device=self.node_index.device
        )
        return torch.cat([centres.unsqueeze(1), self.node_index[:, 1:]], dim=1)

    def to(self, device: torch.device | str) -> SubgraphBatch:
        moved: dict[str, Any] = {
            f.name: v.to(device, non_blocking=True)
            for f in fields(self)
            for v in [getattr(self, f.name)]
            if isinstance(v, torch.Tensor)
        }
        return replace(self, **moved)


def subgraph_weights(
    slide: PreparedSlide, spots: np.ndarray, model_config: ModelConfig
) -> torch.Tensor:
    """(b, N, N) normalised "weighted" adjacency of the subgraphs centred on ``spots`` of a slide."""
    coords = torch.from_numpy(np.asarray(slide.coords_um[slide.neighbours[spots]], np.float32))
    return subgraph_adjacency(
        coords,
        scheme="weighted",
        bandwidth_um=model_config.edge_bandwidth_um or slide.bandwidth_um,
        norm=model_config.graph_norm,
    )


class SubgraphCollator:
    """Turns a list of centres into a `SubgraphBatch`.

    With ``mask_fraction`` set, each centre hides that share of its observed genes; the choice is
    a pure function of (seed, item seed, slide, spot), so it does not depend on worker count, rank
    or the order of batches (needed for exact resumption and reproducible validation).
    With ``neighbour_mask_fraction`` set, each neighbour also hides about that share of its genes
    (independent Bernoulli draws, seeded by the batch's centres): imputation hides genes in the
    neighbours too, and a model trained only on complete neighbours would meet inputs it never saw.
    With ``whole_gene_mask_fraction`` set, that share of batches instead hides one random set of
    ``mask_fraction`` of the vocabulary in every spot of the batch, centres and neighbours alike
    (the targets are those genes where the centre observes them), so that a gene must be predicted
    from other genes (see `DataConfig.whole_gene_mask_fraction`).
    With ``panel_batch_fraction`` set, that share of batches first keeps a random 5–50% of the
    vocabulary in every spot, the rest unobserved, as a targeted panel shows (see
    `DataConfig.panel_batch_fraction`); the masks then act within the panel.
    With ``slide_means`` (a slide's (V,) per-gene statistic: `SageGCN`'s slide centring), each
    batch carries those of its slides and each row's slide, and likewise the slides' median
    libraries with ``ModelConfig.slide_library_target`` or ``slide_output_target``.
    """

    def __init__(
        self,
        slides: Sequence[PreparedSlide],
        model_config: ModelConfig,
        *,
        mask_fraction: float | None,
        neighbour_mask_fraction: float = 0.0,
        whole_gene_mask_fraction: float = 0.0,
        panel_batch_fraction: float = 0.0,
        seed: int = 0,
        slide_means: Callable[[PreparedSlide], np.ndarray] | None = None,
    ) -> None:
        self.slides = slides  # not list(): a `Corpus` loads slides lazily and evicts them
        self.model_config = model_config
        self.mask_fraction = mask_fraction
        self.neighbour_mask_fraction = neighbour_mask_fraction
        self.whole_gene_mask_fraction = whole_gene_mask_fraction
        self.panel_batch_fraction = panel_batch_fraction
        self.seed = seed
        self.slide_means = slide_means
        # per (slide, panel or None): (V,) float32 means (V x 4 bytes each) and
        # `PreparedSlide.median_library`
        self._means: dict[tuple[int, int | None], np.ndarray] = {}
        self._libraries: dict[tuple[int, int | None], float] = {}
        self._panels: list[np.ndarray] = []  # `_panel_pool`, drawn at the first panel batch

    def __call__(self, items: Sequence[CentreItem]) -> SubgraphBatch:
        slide_ids = np.fromiter((it[0] for it in items), dtype=np.int64, count=len(items))
        spot_ids = np.fromiter((it[1] for it in items), dtype=np.int64, count=len(items))
        n_items, n_genes = len(items), self.slides[0].observed.size
        spots, node_index, adj = self._nodes(slide_ids, spot_ids)
        n_spots = sum(rows.size for _, rows in spots)
        # One buffer for every node row as seen: the U distinct spots, then the B centres.
        values = np.empty((n_spots + n_items, n_genes), dtype=np.float32)
        visible = np.empty(values.shape, dtype=bool)
        start = 0
        for s, rows in spots:  # written in place: no (rows, V) temporaries
            self.slides[s].values[rows].toarray(out=values[start : start + rows.size])
            self.slides[s].visible_rows(rows, out=visible[start : start + rows.size])
            start += rows.size
        panel = self._panel(items, slide_ids, spot_ids)
        if panel is not None:
            visible[:n_spots] &= self._panels[panel]
        centres = node_index[:, 0]
        values[n_spots:], visible[n_spots:] = values[centres], visible[centres]
        centre_truth = values[n_spots:] * visible[n_spots:]
        target = np.zeros((n_items, n_genes), dtype=bool)
        if self.mask_fraction is not None:
            target = self._mask(items, slide_ids, spot_ids, visible[n_spots:], visible[:n_spots])
            visible[n_spots:] &= ~target
        np.multiply(values, visible, out=values)
        means, libraries, row_slide = self._row_slides(spots, slide_ids, panel)
        return SubgraphBatch(
            node_values=torch.from_numpy(values),
            node_visible=torch.from_numpy(visible.astype(np.float32)),
            node_index=torch.from_numpy(node_index),
            target=torch.from_numpy(target),
            centre_truth=torch.from_numpy(centre_truth),
            adj=adj,
            slide_index=torch.from_numpy(slide_ids),
            spot_index=torch.from_numpy(spot_ids),
            slide_means=means,
            slide_libraries=libraries,
            row_slide=row_slide,
            panel=panel is not None,
        )

    def _panel(
        self, items: Sequence[CentreItem], slide_ids: np.ndarray, spot_ids: np.ndarray
    ) -> int | None:
        """The batch's panel (an index into the pool), with probability ``panel_batch_fraction``;
        None: every gene. A stream of its own, a pure function of the batch's centres, so the
        masks' streams are unchanged by it."""
        if self.panel_batch_fraction <= 0:
            return None
        entropy = [self.seed, PANEL_STREAM, items[0][2], *slide_ids.tolist(), *spot_ids.tolist()]
        rng = np.random.default_rng(entropy)
        if rng.random() >= self.panel_batch_fraction:
            return None
        if not self._panels:
            self._panels = _panel_pool(self.slides[0].observed.size, self.seed)
        return int(rng.integers(len(self._panels)))

    def _row_slides(
        self, spots: list[tuple[int, np.ndarray]], slide_ids: np.ndarray, panel: int | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
        """(S, V) ``slide_means`` of the batch's S slides (None without them), (S,) their median
        libraries (None unless ``ModelConfig.slide_library_target`` or ``slide_output_target``)
        and (U + B,) each row's position among them; each is computed once per slide and panel,
        a slide under a panel as if it measured the panel's genes only (`PreparedSlide.panel`)."""
        by_library = self.model_config.uses_slide_library
        order = [s for s, _ in spots]
        for s in order:
            key = (s, panel)
            want_mean = self.slide_means is not None and key not in self._means
            want_library = by_library and key not in self._libraries
            if not (want_mean or want_library):
                continue
            slide = self.slides[s] if panel is None else self.slides[s].panel(self._panels[panel])
            if want_mean:
                assert self.slide_means is not None
                self._means[key] = np.asarray(self.slide_means(slide), np.float32)
            if want_library:
                self._libraries[key] = slide.median_library()
        position = np.searchsorted(order, slide_ids)  # `_nodes` lists the slides sorted
        sizes = [rows.size for _, rows in spots]
        rows = torch.from_numpy(
            np.concatenate([np.repeat(np.arange(len(order)), sizes), position]).astype(np.int64)
        )
        means = (
            None
            if self.slide_means is None
            else torch.from_numpy(np.stack([self._means[s, panel] for s in order]))
        )
        libraries = (
            torch.tensor([self._libraries[s, panel] for s in order], dtype=torch.float32)
            if by_library
            else None
        )
        return means, libraries, rows

    def _nodes(
        self, slide_ids: np.ndarray, spot_ids: np.ndarray
    ) -> tuple[list[tuple[int, np.ndarray]], np.ndarray, torch.Tensor | None]:
        """The distinct spots of each slide in the batch ((slide, spot ids) in row order), the
        (B, N) node rows into them and the adjacency (None for the complete graph).

        The adjacency is computed for the batch's B subgraphs in one call (about 0.1 ms for 64),
        each with its own slide's kernel width. A cache of whole-slide adjacencies (8 slides) did
        not pay: a default batch draws from ~20 slides, so it recomputed most of them per batch.
        """
        n_nodes = self.slides[0].neighbours.shape[1]
        node_index = np.empty((slide_ids.size, n_nodes), dtype=np.int64)
        weighted = self.model_config.edge_scheme == "weighted"
        coords = np.empty((slide_ids.size, n_nodes, 2), np.float32)
        sigma = np.empty(slide_ids.size, np.float32)
        spots, offset = [], 0
        for s in np.unique(slide_ids):
            slide = self.slides[s]
            rows = np.flatnonzero(slide_ids == s)
            members = slide.neighbours[spot_ids[rows]]
            unique, inverse = np.unique(members, return_inverse=True)
            node_index[rows] = inverse.reshape(rows.size, n_nodes) + offset
            offset += unique.size
            spots.append((int(s), unique))
            if weighted:
                coords[rows] = slide.coords_um[members]
                sigma[rows] = self.model_config.edge_bandwidth_um or slide.bandwidth_um
        adj = (
            subgraph_adjacency(
                torch.from_numpy(coords),
                scheme="weighted",
                bandwidth_um=torch.from_numpy(sigma),
                norm=self.model_config.graph_norm,
            )
            if weighted
            else None
        )
        return spots, node_index, adj

    def _mask(
        self,
        items: Sequence[CentreItem],
        slide_ids: np.ndarray,
        spot_ids: np.ndarray,
        centre_visible: np.ndarray,
        neighbour_visible: np.ndarray,
    ) -> np.ndarray:
        """(B, V) the centres' hidden genes (the loss targets); hides the neighbours' genes of
        ``neighbour_visible`` in place (neighbour and whole-gene masks)."""
        assert self.mask_fraction is not None
        # one stream per batch, a pure function of its centres (like the per-centre masks)
        entropy = [self.seed, items[0][2], *slide_ids.tolist(), *spot_ids.tolist()]
        batch_rng = np.random.default_rng(entropy)
        if self.whole_gene_mask_fraction > 0 and (
            batch_rng.random() < self.whole_gene_mask_fraction
        ):
            every_gene = np.ones(centre_visible.shape[1], dtype=bool)
            hidden = mask_observed_genes(every_gene, self.mask_fraction, batch_rng)
            target = centre_visible & hidden
            neighbour_visible &= ~hidden
        else:
            target = mask_centres(
                centre_visible,
                self.mask_fraction,
                [(self.seed, item_seed, s, spot) for s, spot, item_seed in items],
            )
        if self.neighbour_mask_fraction > 0:
            # 16-bit draws: a hiding probability within 2**-17 of the fraction. Four per raw
            # 64-bit output of the generator: ~918 x 5,000 per batch in 2.2 ms, against 4.5 for
            # `Generator.integers` in uint16 and 11 for float draws.
            n_draws = neighbour_visible.size
            raw = batch_rng.bit_generator.random_raw(-(-n_draws // 4))
            draws = raw.view(np.uint16)[:n_draws].reshape(neighbour_visible.shape)
            neighbour_visible &= draws >= round(self.neighbour_mask_fraction * (1 << 16))
        return target


def _panel_pool(n_genes: int, seed: int) -> list[np.ndarray]:
    """`PANEL_POOL` panels, (V,) bool each, keeping a `PANEL_SHARES` share of the vocabulary."""
    rng = np.random.default_rng([seed, PANEL_STREAM])
    pool = []
    for _ in range(PANEL_POOL):
        keep = np.zeros(n_genes, dtype=bool)
        size = max(1, round(rng.uniform(*PANEL_SHARES) * n_genes))
        keep[rng.choice(n_genes, size=size, replace=False)] = True
        pool.append(keep)
    return pool
