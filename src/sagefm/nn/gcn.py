"""The SAGE-FM network: a stack of GCN layers over 15-node subgraphs and a reconstruction head.

Shapes: B subgraphs, N nodes each (node 0 = the centre spot), V vocabulary genes, h_l hidden sizes.
Subgraphs are small and dense, so propagation is a batched (B, N, N) @ (B, N, h) matmul rather than
a scatter over an edge list; `DenseGCNLayer` equals `torch_geometric.nn.GCNConv` on the same graph
(tests/nn/test_gcn.py checks it).
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import torch
from torch import nn

from sagefm.config import ModelConfig
from sagefm.nn import depth
from sagefm.nn.contrast import Discriminator, shuffle_within, summary
from sagefm.nn.inputs import InputScaling
from sagefm.nn.layers import (
    PANEL_KNOTS,
    DenseGCNLayer,
    activation,
    inverse_output_activation,
    output_activation,
    panel_multiple,
    project_rows,
    shown_share,
)


class RowPredictions(NamedTuple):
    """What `SageGCN.predict_rows` returns for B centres."""

    prediction: torch.Tensor  #: (B, V) the head's
    #: (B, V) the embedding head's, from the centre's embedding layer (embedding_loss_weight)
    from_embedding: torch.Tensor | None = None
    #: (B, 2) the contrast's discriminator logits, real then corrupted (contrastive_loss_weight)
    contrast: torch.Tensor | None = None


class SageGCN(InputScaling):
    """GCN encoder (``len(hidden_sizes)`` layers) + linear head reconstructing the centre's genes.

    Input per node: expression (V,) with hidden/unobserved genes set to 0, and, when
    ``mask_indicator`` or ``standardize_input``, the visibility flags (V,) concatenated, so the input
    layer has 2V features. Standardisation (z-scores with the training data's mean and sd) is folded
    into the first layer's weights (`project`), so the inputs stay sparse and a clamp changes one
    feature (`input_delta`).
    The embedding of a spot is a GCN layer's output at the centre node (`encode`'s ``layer``; the
    head reads the last).

    Every use of the network goes through one API, and nothing outside ``nn`` re-derives it:
    `project` (the first layer's linear map of node inputs, dense or sparse per slide, computed once
    per spot and shared by the subgraphs that contain it), `input_delta` (how that projection
    changes when one gene's input is clamped or hidden), `encode` (propagation and later layers ->
    centre embeddings), `reconstruct` (head, skip path and output activation, optionally for chosen
    genes only) and `neighbour_mean` (the skip path's input). `forward` composes them on a collated
    batch: the plain reference pass that training uses and every shortcut is tested against.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.n_genes < 1:
            raise ValueError("ModelConfig.n_genes must be set before building the network")
        self.config = config
        # learnable weights on values (V) and on the mask indicator (V); see `_input_weights`
        in_features = config.n_genes * (2 if config.mask_indicator else 1)
        sizes = (in_features, *config.hidden_sizes)
        self.layers = nn.ModuleList(DenseGCNLayer(a, b) for a, b in itertools.pairwise(sizes))
        self.act = activation(config)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_sizes[-1], config.n_genes)
        self.out_act = output_activation(config)
        # Per-gene weight of the neighbour-mean skip path (see ModelConfig.spatial_skip). Starts at
        # 0: started at 1, the skip path alone matched the baseline from step one and the GCN
        # collapsed (constant embeddings, no response to any input) on the synthetic tissue.
        self.skip_weight = (
            nn.Parameter(torch.zeros(config.n_genes)) if config.spatial_skip else None
        )
        # (K, V) how each gene's skip multiple changes with `panel_basis` of the centre's shown
        # share (ModelConfig.panel_skip); 0 at the start, so the model starts as without it.
        self.panel_skip_weight = (
            nn.Parameter(torch.zeros(len(PANEL_KNOTS), config.n_genes))
            if config.panel_skip
            else None
        )
        # (K,) the part of that multiple every gene shares (ModelConfig.panel_skip_shared); 0.
        self.panel_skip_shared = (
            nn.Parameter(torch.zeros(len(PANEL_KNOTS))) if config.panel_skip_shared else None
        )
        # Per-unit weight of the centre's own first-layer activation added to the last layer
        # (ModelConfig.centre_residual); starts at 0, as the skip path does.
        self.centre_gate = (
            nn.Parameter(torch.zeros(config.hidden_sizes[-1])) if config.centre_residual else None
        )
        # A linear head on the embedding layer (ModelConfig.embedding_loss_weight): training only.
        self.embedding_head = (
            nn.Linear(config.embedding_dim, config.n_genes)
            if config.embedding_loss_weight > 0
            else None
        )
        # The contrast's discriminator (ModelConfig.contrastive_loss_weight): training only.
        self.discriminator = (
            Discriminator(config.embedding_dim) if config.contrastive_loss_weight > 0 else None
        )
        # z-scores of the input (ModelConfig.standardize_input): fixed, saved with the weights.
        # The identity until `set_input_scaling` is called with the training data's statistics.
        if config.standardize_input:
            self.register_buffer("input_mean", torch.zeros(config.n_genes))
            self.register_buffer("input_scale", torch.ones(config.n_genes))

    def start_at_gene_means(self, mean: torch.Tensor) -> None:
        """Set the head's bias so that an untrained head predicts each gene's mean (V,), after the
        output activation, instead of spending its first epochs finding the levels."""
        bias = inverse_output_activation(self.config, mean)
        with torch.no_grad():
            self.head.bias.copy_(bias)
            if self.embedding_head is not None:
                self.embedding_head.bias.copy_(bias)

    @property
    def gcn_layers(self) -> list[DenseGCNLayer]:
        """The GCN layers, typed (ModuleList indexing loses the element type)."""
        return [layer for layer in self.layers if isinstance(layer, DenseGCNLayer)]

    def encode(
        self, projected: torch.Tensor, adj: torch.Tensor | None, *, layer: int = -1
    ) -> torch.Tensor:
        """Centre embeddings (B, h_layer) from first-layer projections (B, N, h_0) of each subgraph's nodes.

        ``adj`` (B, N, N) normalised adjacency, or None for the complete graph: then every node is
        identical after the first layer, so later layers run on one vector per subgraph (and
        ``projected`` may already be the node mean, (B, 1, h_0)). ``layer`` (an index into the GCN
        layers, negative from the end) is the layer whose activated centre output is returned; the
        layers after it are not computed. The head reads the last one (the default).
        """
        return self._encode(projected, adj, stop=self.config.layer_index(layer))[0]

    def _encode(
        self, projected: torch.Tensor, adj: torch.Tensor | None, *, stop: int, tap: int = -1
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`encode` up to layer ``stop`` (>= 0), (B, h), and the output of layer ``tap`` on the
        way (None when ``tap`` is -1 or above ``stop``): (B, N, h) at every node below ``stop``,
        (B, 1, h) the centre's at ``stop``. One pass. With ``centre_residual`` the last layer adds
        its gate times the centre's own first-layer activation (node 0 of ``projected``)."""
        h, tapped = projected, None
        for i, gcn in enumerate(self.gcn_layers[: stop + 1]):
            last = i == stop
            if last and adj is not None:
                # Only the centre row is needed, and Â(HW) = (ÂH)W: mix first, then map one row.
                h = torch.bmm(adj[:, :1, :], h)  # (B, 1, h)
                h = (gcn.linear(h) if i > 0 else h) + gcn.bias
            else:
                h = gcn.propagate(adj, gcn.linear(h) if i > 0 else h)
            h = self.act(h)
            if self.centre_gate is not None and i == len(self.config.hidden_sizes) - 1:
                own = self.act(projected[:, :1] + self.gcn_layers[0].bias)  # (B, 1, h_0)
                h = h + self.centre_gate * own
            if i == tap:
                tapped = h
            if not last:
                h = self.dropout(h)
        return h[:, 0, :], tapped

    def reconstruct(
        self,
        embedding: torch.Tensor,
        neighbour_mean: torch.Tensor | None = None,
        *,
        genes: torch.Tensor | None = None,
        library: torch.Tensor | None = None,
        slide_mean: torch.Tensor | None = None,
        slide_library: float | torch.Tensor | None = None,
        shown: torch.Tensor | None = None,
        panel_mean: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Centre genes from centre embeddings (..., h_last), on the model's expression scale
        (log1p counts, or log-normalised values with ``DataConfig.normalized_input``).

        Without ``genes``: all V genes, (..., V). With ``genes`` (int64 vocabulary positions): only
        those, one per embedding row, the index broadcasting against ``embedding.shape[:-1]``
        (so ``embedding[:, None]`` (B, 1, h) with genes (K,) gives (B, K), and a 0-d index one
        gene per row). ``neighbour_mean`` (the output's shape), from `neighbour_mean`, feeds the
        skip path when the model has one. With depth normalisation the head predicts at a fixed
        library and ``library`` (``embedding.shape[:-1]``), the centre's visible library, maps the
        prediction back to the centre's depth. With ``ModelConfig.slide_centering`` the head
        adds the centres' slide's `output_shift` of ``slide_mean`` ((V,), or (..., V) rows
        without ``genes``). With ``ModelConfig.slide_output_target`` the head predicts at the
        centres' ``slide_library`` (their slide's median library: a float for one slide, or
        ``embedding.shape[:-1]`` without ``genes``) instead of ``library_target``. With
        ``ModelConfig.panel_skip``, ``shown`` (``embedding.shape[:-1]``, or broadcasting against
        the genes' index) is the share of the vocabulary each centre shows (`shown_share`), and
        the panel term multiplies a centred neighbour mean: ``neighbour_mean`` itself with
        ``skip_centring``, else ``panel_mean`` (`neighbour_mean` with ``centred``; see
        `separate_panel_mean`).
        """
        skip_weight: torch.Tensor | None = self.skip_weight
        if skip_weight is not None and genes is not None:
            skip_weight = skip_weight[genes]
        if isinstance(slide_library, torch.Tensor) and genes is None:
            slide_library = slide_library.unsqueeze(-1)  # (..., 1) against (..., V)
        shift = self.output_shift(slide_mean, slide_library)
        if genes is None:
            out = self.head(embedding)
        else:
            out = (embedding * self.head.weight[genes]).sum(-1) + self.head.bias[genes]
            shift = None if shift is None else shift[genes]
        if shift is not None:
            out = out + shift
        if skip_weight is not None:
            if neighbour_mean is None:
                raise ValueError("this model has a spatial skip path: pass neighbour_mean")
            out = out + skip_weight * neighbour_mean
            if self.panel_skip_weight is not None:
                if self.separate_panel_mean and panel_mean is None:
                    raise ValueError(
                        "this model's panel term reads a centred mean: pass panel_mean"
                    )
                if shown is None:
                    raise ValueError(
                        "this model's skip path depends on the centre's panel: pass shown"
                    )
                centred = neighbour_mean if panel_mean is None else panel_mean
                multiple = panel_multiple(
                    self.panel_skip_weight, shown, genes, shared=self.panel_skip_shared
                )
                out = out + multiple * centred
        if library is not None and genes is None:
            library = library.unsqueeze(-1)  # (..., 1) against (..., V)
        return self._output(out, library, slide_library)

    def _output(
        self,
        out: torch.Tensor,
        library: torch.Tensor | None,
        slide_library: float | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """A head's raw output on the expression scale: the output activation, then, with depth
        normalisation, the centres' ``library`` (broadcasting against ``out``) restored from the
        head's library (``library_target``, or ``slide_library`` with ``slide_output_target``)."""
        out = self.out_act(out)
        if not self.config.depth_normalize:
            return out
        if library is None:
            raise ValueError("this model normalises depth: pass the centres' library")
        if not self.config.slide_output_target:
            return depth.restore_depth(out, library, self.config.library_target)
        if slide_library is None:
            raise ValueError("this model predicts at each slide's median library: pass it")
        return depth.restore_depth(out, library, slide_library)

    def forward(
        self,
        values: torch.Tensor,
        visible: torch.Tensor,
        node_index: torch.Tensor,
        centre_values: torch.Tensor,
        centre_visible: torch.Tensor,
        adj: torch.Tensor | None,
        *,
        library: torch.Tensor | None = None,
        centre_library: torch.Tensor | None = None,
        slide_mean: torch.Tensor | None = None,
        slide_library: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict the centres' genes: the plain forward pass (training; the reference of every
        inference shortcut).

        values, visible: (U, V) the distinct spots of the batch (neighbours as seen; values 0 where
        hidden); node_index: (B, N) rows into U, column 0 = the centre; centre_values/centre_visible:
        (B, V) the centre as seen (its masked genes hidden); adj: (B, N, N) or None.
        ``library`` (U,) and ``centre_library`` (B,) override the libraries of depth
        normalisation (default: `visible_library` of the values; a perturbation at fixed library
        passes them). ``slide_mean`` (U, V), each spot's slide's `slide_input_mean`, with
        ``slide_centering``; ``slide_library`` (U,), its slide's median library, with
        ``slide_library_target`` or ``slide_output_target``. Returns (prediction (B, V),
        embedding (B, h_last)).
        """
        centres = node_index[:, 0]
        centre_mean = None if slide_mean is None else slide_mean[centres]
        centre_slide_library = None if slide_library is None else slide_library[centres]
        if self.config.depth_normalize:
            if library is None:
                library = self.visible_library(values, slide_library)
            if centre_library is None:
                centre_library = self.visible_library(centre_values, centre_slide_library)
        values = self._depth_scaled(values, library)
        centre_values = self._depth_scaled(centre_values, centre_library)
        if adj is None:
            # Complete graph: layer 1 is the mean of the nodes' projections, and the projection is
            # linear, so project the mean input once per subgraph: N times fewer FLOPs.
            n_nodes = node_index.shape[1]
            neighbours = node_index[:, 1:]
            mean_values = (values[neighbours].sum(dim=1) + centre_values) / n_nodes  # (B, V)
            mean_visible = (visible[neighbours].sum(dim=1) + centre_visible) / n_nodes
            # a subgraph's nodes share the centre's slide, so its mean input has the same centre
            projected = self._project_scaled(
                mean_values, mean_visible, slide_mean=centre_mean
            ).unsqueeze(1)
        else:
            projected = self._project_scaled(values, visible, slide_mean=slide_mean)[node_index]
            centre = self._project_scaled(
                centre_values, centre_visible, slide_mean=centre_mean
            )  # (B, h_0)
            projected = torch.cat([centre.unsqueeze(1), projected[:, 1:]], dim=1)
        embedding = self.encode(projected, adj)
        skip, panel_mean = self.skip_inputs(
            values, visible, node_index, slide_mean=centre_mean, scaled=True
        )
        prediction = self.reconstruct(
            embedding,
            skip,
            library=centre_library,
            slide_mean=centre_mean,
            slide_library=centre_slide_library,
            shown=shown_share(centre_visible),
            panel_mean=panel_mean,
        )
        return prediction, embedding

    def predict_rows(
        self,
        values: torch.Tensor,
        visible: torch.Tensor,
        node_rows: torch.Tensor,
        adj: torch.Tensor | None,
        slide_mean: torch.Tensor | None = None,
        slide_library: torch.Tensor | None = None,
        row_group: torch.Tensor | None = None,
        train_gcn: bool = True,
    ) -> RowPredictions:
        """`forward`'s prediction on one matrix of node rows (the training path): the same result,
        one projection.

        values, visible: (R, V) every node row as seen, the centres' own rows (their masked genes
        hidden) among them; node_rows: (B, N) rows into them, column 0 = the centre's row. All R
        rows go through the first layer in one matmul, shared by every subgraph that contains them.
        ``slide_mean`` (R, V): each row's slide's `slide_input_mean`, with ``slide_centering``;
        ``slide_library`` (R,): its median library, with ``slide_library_target`` or
        ``slide_output_target``; ``row_group`` (R,): each row's slide, within which the contrast
        corrupts (None: one group). Without ``train_gcn`` no gradient reaches the GCN through
        the head (the embedding enters it at a gradient of 0: every parameter stays in the
        graph, as DDP needs), so the batch trains the head and the skip path only.
        """
        library = (
            self.visible_library(values, slide_library) if self.config.depth_normalize else None
        )
        values = self._depth_scaled(values, library)
        features = self._input_features(values, visible, slide_mean)  # (R, F), or more rows
        first, rows = self.first_layer.linear, None
        if adj is None:  # complete graph: project the mean input once per subgraph (see forward)
            projected = first(features[node_rows].mean(dim=1)).unsqueeze(1)  # (B, 1, h_0)
        else:
            rows = project_rows(first, features)  # (R, h_0)
            projected = rows[node_rows]  # (B, N, h_0)
        tapping = self.embedding_head is not None or self.discriminator is not None
        tap = self.config.layer_index(self.config.embedding_layer) if tapping else -1
        embedding, tapped = self._encode(
            projected, adj, stop=len(self.config.hidden_sizes) - 1, tap=tap
        )
        if not train_gcn:
            embedding = embedding.detach() + 0.0 * embedding
        centres = node_rows[:, 0]
        centre_library = None if library is None else library[centres]
        centre_mean = None if slide_mean is None else slide_mean[centres]
        at = None if slide_library is None else slide_library[centres]
        skip, panel_mean = self.skip_inputs(
            values, visible, node_rows, slide_mean=centre_mean, scaled=True
        )
        prediction = self.reconstruct(
            embedding,
            skip,
            library=centre_library,
            slide_mean=centre_mean,
            slide_library=at,
            shown=shown_share(visible[centres]),
            panel_mean=panel_mean,
        )
        out = RowPredictions(prediction)
        if self.embedding_head is not None and tapped is not None:
            at = None if at is None else at.unsqueeze(-1)  # (B, 1) against (B, V)
            from_embedding = self.embedding_head(tapped[:, 0])
            shift = self.output_shift(centre_mean, at)
            if shift is not None:
                from_embedding = from_embedding + shift
            library = None if centre_library is None else centre_library.unsqueeze(-1)
            out = out._replace(from_embedding=self._output(from_embedding, library, at))
        if self.discriminator is not None and tapped is not None and rows is not None:
            # the R real rows: under autocast ``rows`` may carry zero rows of padding after them
            groups = centres.new_zeros(values.shape[0]) if row_group is None else row_group
            out = out._replace(contrast=self._contrast(rows, groups, node_rows, adj, tapped, tap))
        return out

    def _contrast(
        self,
        rows: torch.Tensor,
        groups: torch.Tensor,
        node_rows: torch.Tensor,
        adj: torch.Tensor | None,
        tapped: torch.Tensor,
        tap: int,
    ) -> torch.Tensor:
        """(B, 2) the discriminator's logits (`sagefm.nn.contrast`): the real centre embeddings
        (``tapped`` (B, N, h), layer ``tap`` at every node) and those of the subgraphs whose
        first-layer rows (``rows`` (R', h_0), R' >= R) were permuted within their ``groups``
        (R,), both against the real subgraphs' summaries."""
        assert self.discriminator is not None
        # index the B x N node rows through the permutation: no permuted copy of all R rows
        fake = self.encode(rows[shuffle_within(groups)[node_rows]], adj, layer=tap)  # (B, h)
        return self.discriminator(tapped[:, 0], fake, summary(tapped))
