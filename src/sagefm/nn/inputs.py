"""The network's input side: z-scores (corpus or slide centred), depth normalisation, the first
layer's weights with the z-scores folded in, its linear map of node inputs (`project`, dense or
sparse) and how that map changes when one gene's input changes (`input_delta`), and the skip
path's neighbour mean on that scale (`InputScaling`, a base of `SageGCN`)."""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from sagefm.config import ModelConfig
from sagefm.nn import depth
from sagefm.nn.layers import DenseGCNLayer, inverse_output_activation, mean_over_neighbours

#: under autocast, first-layer inputs have a multiple of this many rows (see `_input_features`)
AUTOCAST_ROW_MULTIPLE = 64


class InputScaling(nn.Module):
    """How `SageGCN` turns node inputs into first-layer features and projections; its
    ``input_mean`` and ``input_scale`` buffers (with ``ModelConfig.standardize_input``) are saved
    with the weights."""

    config: ModelConfig
    layers: nn.ModuleList
    input_mean: torch.Tensor  # (V,) buffers, present with ModelConfig.standardize_input
    input_scale: torch.Tensor

    def set_input_scaling(self, mean: torch.Tensor, scale: torch.Tensor) -> None:
        """Standardise gene ``g`` as ``(x_g - mean[g]) / scale[g]`` (both (V,), scale > 0)."""
        if not self.config.standardize_input:
            raise ValueError("this network was built with standardize_input=False")
        if bool((scale <= 0).any()):
            raise ValueError("input scales must be positive")
        self.input_mean.copy_(mean)
        self.input_scale.copy_(scale)

    def _input_weights(
        self, genes: torch.Tensor | None = None, slide_mean: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """First-layer weights on the raw inputs of ``genes`` (all V by default): (h_0, G) on the
        shown values, (h_0, G) on the visibility flags, or None when there is no visibility term.

        With standardisation, ``W z`` for ``z = (x - mean) / scale`` on visible genes equals
        ``(W / scale) x - (W mean / scale) visible``: the value weights are rescaled and the
        visibility weights (the indicator's, or none) get ``-W mean / scale``. The mean is
        `centre_of` ``slide_mean`` (V,) (the nodes' slide).
        """
        weight = self.first_layer.linear.weight  # (h_0, F)
        n_genes = self.config.n_genes
        columns = slice(None) if genes is None else genes
        w_value = weight[:, :n_genes][:, columns]
        w_visible = weight[:, n_genes:][:, columns] if self.config.mask_indicator else None
        if self.config.standardize_input:
            w_value = w_value / self.input_scale[columns]
            offset = -w_value * self.centre_of(slide_mean)[columns]
            w_visible = offset if w_visible is None else w_visible + offset
        return w_value, w_visible

    def centre_of(self, slide_mean: torch.Tensor | None) -> torch.Tensor:
        """(..., V) the values the z-scores subtract: the corpus means (``input_mean``), or with
        ``ModelConfig.slide_centering`` ``slide_mean`` (`slide_input_mean`, broadcasting: (V,)
        or one row per node) where the slide shows the gene and the corpus mean where it does not (NaN).
        """
        if not self.config.slide_centering:
            return self.input_mean
        if slide_mean is None:
            raise ValueError("this model centres each slide on its own means: pass slide_mean")
        return torch.where(torch.isnan(slide_mean), self.input_mean, slide_mean)

    def output_shift(
        self, slide_mean: torch.Tensor | None, slide_library: float | torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """(..., V) what the head adds back with ``ModelConfig.slide_centering``: the slide's
        departure from the corpus mean (0 where the slide does not show the gene), on the scale
        of the head's raw output (`inverse_output_activation`: a log ratio of rates with
        softplus); None otherwise. With ``ModelConfig.slide_output_target`` the slide's means
        are first brought from ``library_target`` to its median library ``slide_library``
        (broadcasting against them), so that with the head's bias at the corpus means the head
        starts at the slide's mean share of each gene at the library it predicts at."""
        if not self.config.slide_centering:
            return None
        centre = self.centre_of(slide_mean)
        if self.config.slide_output_target:
            if slide_library is None:
                raise ValueError("this model predicts at each slide's median library: pass it")
            centre = depth.restore_depth(centre, slide_library, self.config.library_target)
        inverse = inverse_output_activation
        return inverse(self.config, centre) - inverse(self.config, self.input_mean)

    def skip_centre(self, slide_mean: torch.Tensor | None) -> torch.Tensor | None:
        """(..., V) what the skip path measures a neighbour mean from with
        ``ModelConfig.skip_centring`` and standardised input: `centre_of` ``slide_mean``, the
        value the z-scores subtract. None otherwise (the plain mean; raw input subtracts 0)."""
        if not (self.config.skip_centring and self.config.standardize_input):
            return None
        return self.centre_of(slide_mean)

    @property
    def separate_panel_mean(self) -> bool:
        """``ModelConfig.panel_skip``'s term reads a centred neighbour mean (the departure from
        `centre_of`, 0 where no neighbour shows the gene) that the skip path itself, uncentred,
        does not: callers pass `neighbour_mean` with ``centred`` as `reconstruct`'s
        ``panel_mean``. Centred, a multiple that varies with the panel moves a gene around its
        slide's level rather than scaling the level itself."""
        config = self.config
        return config.panel_skip and config.standardize_input and not config.skip_centring

    def neighbour_mean(
        self,
        values: torch.Tensor,
        visible: torch.Tensor,
        node_index: torch.Tensor,
        *,
        library: torch.Tensor | None = None,
        slide_mean: torch.Tensor | None = None,
        genes: torch.Tensor | None = None,
        counted: torch.Tensor | None = None,
        centred: bool = False,
        scaled: bool = False,
    ) -> torch.Tensor:
        """The skip path's input: each gene's mean over the visible neighbours (nodes 1..N-1), on
        the input scale: (B, G) from (U, G) shown values and visibility and (B, N)
        ``node_index``; 0 where no neighbour is visible. With ``ModelConfig.skip_centring`` the
        mean's departure from `skip_centre` of ``slide_mean`` (the chunk's (V,) or the centres'
        (B, V)). ``genes`` (G,) vocabulary positions of the columns, when not all V.
        ``counted`` (U, G): the visibility that counts the neighbours (`mean_over_neighbours`).
        ``library`` (U,): the nodes' visible libraries, needed with depth normalisation unless
        ``values`` hold all V genes; ``scaled``: the values are on the input scale already.
        ``centred``: the departure from `centre_of` whatever ``skip_centring`` says (the
        ``panel_mean`` of `separate_panel_mean`)."""
        centre = self.centre_of(slide_mean) if centred else self.skip_centre(slide_mean)
        if centre is not None and genes is not None:
            centre = centre[..., genes]
        if not scaled:
            values = self._depth_scaled(values, library)
        return mean_over_neighbours(values, visible, node_index, centre, counted)

    def skip_inputs(
        self,
        values: torch.Tensor,
        visible: torch.Tensor,
        node_index: torch.Tensor,
        *,
        library: torch.Tensor | None = None,
        slide_mean: torch.Tensor | None = None,
        genes: torch.Tensor | None = None,
        counted: torch.Tensor | None = None,
        scaled: bool = False,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The skip path's inputs of `SageGCN.reconstruct`, ``neighbour_mean`` and
        ``panel_mean`` (each None where the model has no use for it), by `neighbour_mean`
        (the arguments as there)."""
        if not self.config.spatial_skip:
            return None, None
        if not scaled:  # once, for both means
            values = self._depth_scaled(values, library)

        def mean(centred: bool) -> torch.Tensor:
            return self.neighbour_mean(
                values,
                visible,
                node_index,
                slide_mean=slide_mean,
                genes=genes,
                counted=counted,
                centred=centred,
                scaled=True,
            )

        return mean(False), (mean(True) if self.separate_panel_mean else None)

    def visible_library(
        self, values: torch.Tensor, slide_library: float | torch.Tensor | None = None
    ) -> torch.Tensor:
        """(U,) the ``library`` the methods here take: `depth_library` of (U, V) shown log1p
        values (dense or sparse CSR) and, with ``ModelConfig.slide_library_target``, the nodes'
        slide's median library. Needed with ``ModelConfig.depth_normalize``, ignored otherwise."""
        return depth_library(values, self.config, slide_library)

    def _depth_scaled(self, values: torch.Tensor, library: torch.Tensor | None) -> torch.Tensor:
        """Shown values (U, G) on the network's input scale: depth-normalised by the rows'
        ``library`` (U,) with ``ModelConfig.depth_normalize`` (computed from ``values`` when they
        hold all V genes), unchanged otherwise."""
        if not self.config.depth_normalize:
            return values
        if library is None:
            if values.shape[-1] != self.config.n_genes:
                raise ValueError("depth normalisation of some genes only: pass the library")
            return network_scale(values, self.config)
        return depth.normalize_depth_rows(values, library, self.config.library_target)

    @property
    def first_layer(self) -> DenseGCNLayer:
        """The first GCN layer (the one that reads the node inputs)."""
        return cast(DenseGCNLayer, self.layers[0])

    def project(
        self,
        values: torch.Tensor,
        visible: torch.Tensor | None = None,
        *,
        observed: torch.Tensor | None = None,
        hidden: torch.Tensor | None = None,
        library: torch.Tensor | None = None,
        slide_mean: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The first layer's linear map of U node inputs -> (U, h_0), before propagation.

        The map is linear and per node, so a spot is projected once and its row shared by every
        subgraph that contains it. ``values`` (U, V), dense or sparse CSR: the visible values (0
        where hidden), log1p counts; with depth normalisation they are first rescaled to a fixed
        visible library (``library`` (U,), default `visible_library` of ``values``). Visibility is
        either ``visible`` (U, V) dense 0/1, or sparse for the spots of
        one slide: ``observed`` (V,) the slide's measured genes and ``hidden`` an optional (U, V)
        CSR 0/1 of observed entries hidden in those spots. Then the visibility term is one vector
        for the slide minus a sparse correction, so the dense (U, 2V) input is never built and the
        value term costs nnz x h_0 instead of U x V x h_0 multiply-adds. ``slide_mean`` (V,):
        the nodes' slide's `slide_input_mean`, needed with ``ModelConfig.slide_centering``.
        """
        return self._project_scaled(
            self._depth_scaled(values, library),
            visible,
            observed=observed,
            hidden=hidden,
            slide_mean=slide_mean,
        )

    def _project_scaled(
        self,
        values: torch.Tensor,
        visible: torch.Tensor | None = None,
        *,
        observed: torch.Tensor | None = None,
        hidden: torch.Tensor | None = None,
        slide_mean: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`project` of values already on the input scale (see there); ``slide_mean`` may also
        be one row per node (U, V) with dense ``visible``."""
        if (visible is None) == (observed is None):
            raise ValueError("pass either visible or observed (with an optional hidden)")
        if slide_mean is not None and slide_mean.dim() > 1 and self.config.slide_centering:
            assert visible is not None, "per-node slide means need dense visibility"
            features = self._input_features(values, visible, slide_mean)
            return self.first_layer.linear(features)[: values.shape[0]]
        w_value, w_visible = self._input_weights(slide_mean=slide_mean)
        if values.layout == torch.strided:
            out = values @ w_value.T
        else:
            # Row-major (V, h_0) copies: sparse @ dense reads one dense row per non-zero, and rows
            # of a transposed view are strided columns (~30x slower on CPU).
            out = torch.sparse.mm(values, w_value.T.contiguous())
        if w_visible is None:
            return out
        if visible is not None:
            return out + visible @ w_visible.T
        assert observed is not None  # checked above
        out = out + w_visible @ observed.to(w_visible.dtype)
        if hidden is not None:
            out = out - torch.sparse.mm(hidden, w_visible.T.contiguous())
        return out

    def input_delta(
        self,
        genes: torch.Tensor,
        values: torch.Tensor,
        visible: torch.Tensor,
        new_values: torch.Tensor,
        new_visible: torch.Tensor,
        *,
        library: torch.Tensor | None = None,
        slide_mean: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Change (..., h_0) of a node's first-layer projection when its input of gene ``genes``
        goes from (``values``, ``visible``) to (``new_values``, ``new_visible``).

        All arguments broadcast to one shape (...): ``genes`` int64 vocabulary positions, values
        the shown values (0 where hidden), visibility 0/1. Clamping gene g to v is
        ``new = (v, 1)``, hiding it ``new = (0, 0)``. The first layer is linear, so adding the
        delta to `project`'s row equals projecting the changed input.

        With depth normalisation, ``library`` (broadcasting likewise) is the node's visible
        library *before* the change, and the change is made at that fixed library: the other genes'
        normalised values and the node's size factor stay as they were (the exact change would
        rescale every gene of the node; `forward` with ``library`` gives the same semantics).
        ``slide_mean`` (V,): the nodes' slide's, with ``ModelConfig.slide_centering``.
        """
        if self.config.depth_normalize:
            if library is None:
                raise ValueError("this model normalises depth: pass the nodes' library")
            target = self.config.library_target
            values = depth.normalize_depth(values, library, target)
            new_values = depth.normalize_depth(new_values, library, target)
        w_value, w_visible = self._input_weights(genes.reshape(-1), slide_mean)  # (h_0, G)
        out = (new_values - values).unsqueeze(-1) * w_value.T.reshape(*genes.shape, -1)
        if w_visible is not None:
            flag = (new_visible - visible).unsqueeze(-1)
            out = out + flag * w_visible.T.reshape(*genes.shape, -1)
        return out

    def _input_features(
        self, values: torch.Tensor, visible: torch.Tensor, slide_mean: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(R, F) the first layer's dense input from (R, V) shown values (on the input scale) and
        visibility: the z-scores ``(x - mean) / scale`` on visible genes (0 elsewhere) with
        ``standardize_input``, then the visibility flags with ``mask_indicator``.

        ``features @ weight.T`` equals `_project_scaled` (which folds the same maths into the
        weights), but the weight is used whole: rescaling and slicing a (h_0, 2V) weight costs a
        dozen elementwise passes over it per step, forward and backward, while these inputs are
        only R x 2V. Training, whose rows are dense, uses this form. ``slide_mean``: (R, V) or
        (V,), see `centre_of`.

        Under autocast the features are written once in its dtype (bf16: half the bytes of the
        (R, 2V) buffer, and the first layer's matmul would cast them anyway), with zero rows
        appended up to a multiple of `AUTOCAST_ROW_MULTIPLE`: oneDNN, which runs bf16 matmuls
        on CPU, keeps a primitive of ~21 MB for every distinct matmul shape it meets, and a
        batch's distinct spots vary from batch to batch (75 row counts grew the process by
        1.6 GB). The first layer's linear map has no bias, so zero rows project to zero and add
        nothing to the weight gradient; callers keep the first R rows.
        """
        device = values.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        if self.config.standardize_input:
            values = torch.addcmul(values, self.centre_of(slide_mean), visible, value=-1.0)
            values = values.div_(self.input_scale)
        n_rows, n_genes = values.shape
        if dtype is None:
            if not self.config.mask_indicator:
                return values
            return torch.cat([values, visible], dim=1)
        width = n_genes * (2 if self.config.mask_indicator else 1)
        padded = -(-n_rows // AUTOCAST_ROW_MULTIPLE) * AUTOCAST_ROW_MULTIPLE
        features = values.new_empty((padded, width), dtype=dtype)
        features[:n_rows, :n_genes] = values
        if self.config.mask_indicator:
            features[:n_rows, n_genes:] = visible
        features[n_rows:] = 0
        return features


def depth_library(
    values: torch.Tensor,
    config: ModelConfig,
    slide_library: float | torch.Tensor | None = None,
    shown_share: torch.Tensor | None = None,
) -> torch.Tensor:
    """(n,) each row's size factor for depth normalisation at ``config.library_target`` (T):
    its visible library L = ``Σ_g expm1(values)`` over (n, V) shown log1p values (dense or CSR),
    divided by ``shown_share`` (n,) where given (`PreparedSlide.shown_share`: the row's whole
    library estimated from the genes it shows).

    With ``config.slide_library_target`` it is L · T / M, M = ``slide_library`` (the rows'
    slide's `PreparedSlide.median_library`, a number or (n,)): normalising to T then reads the
    row at M counts, and restoring maps back to L, so `sagefm.nn.depth` keeps one target."""
    library = depth.visible_library(values)
    if shown_share is not None:
        library = library / shown_share.to(library.dtype).clamp(min=1e-12)
    if not config.slide_library_target:
        return library
    if slide_library is None:
        raise ValueError("this model reads each slide at its own median library: pass it")
    return library * (config.library_target / slide_library)


def network_scale(
    values: torch.Tensor,
    config: ModelConfig,
    slide_library: float | torch.Tensor | None = None,
    shown_share: torch.Tensor | None = None,
) -> torch.Tensor:
    """(n, V) shown log1p values (dense or CSR, 0 where not shown) on the scale the network reads:
    with ``config.depth_normalize``, each row normalised by its `depth_library` (``slide_library``
    and ``shown_share`` as there); unchanged otherwise. The slide means, the starting statistics
    and `InputScaling` (rows holding all V genes) all read values through it."""
    if not config.depth_normalize:
        return values
    library = depth_library(values, config, slide_library, shown_share)
    return depth.normalize_depth_rows(values, library, config.library_target)


def slide_input_mean(
    values: torch.Tensor,
    visible_spots: torch.Tensor,
    config: ModelConfig,
    slide_library: float | None = None,
    shown_share: torch.Tensor | None = None,
) -> torch.Tensor:
    """(V,) each gene's mean over the spots of one slide that show it, on the scale the network
    reads (`network_scale`, ``slide_library`` and ``shown_share`` as there): the ``slide_mean``
    of ``ModelConfig.slide_centering``. ``values`` (n, V) the shown log1p values (dense or CSR,
    0 where not shown), ``visible_spots`` (V,) how many spots show each gene; NaN where none does.

    Training takes it over whole slides (nothing hidden, each spot at its whole library), so a
    slide with hidden entries passes each spot's ``shown_share``: without it a spot hiding 30%
    of its genes reads 1/0.7 deeper, every gene's mean rises, and the head, which adds the mean
    back, overshoots (README, "The slide mean of a slide with hidden entries").
    """
    values = network_scale(values, config, slide_library, shown_share)
    if values.layout == torch.strided:
        total = values.sum(dim=0)
    else:
        total = torch.zeros(values.shape[1], dtype=values.dtype, device=values.device)
        total.index_add_(0, values.col_indices(), values.values())
    count = visible_spots.to(total.dtype)
    return torch.where(count > 0, total / count.clamp(min=1.0), torch.nan)
