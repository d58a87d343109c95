"""A slide prepared for the model: expression on the vocabulary, what is observed, its subgraphs."""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import anndata as ad
import numpy as np
import scipy.sparse as sp

from sagefm._constants import Keys
from sagefm.config import DataConfig, ModelConfig
from sagefm.data.expression import check_names, column_mean_variance, normalize_expression
from sagefm.data.neighbourhood import build_neighbourhoods
from sagefm.data.vocabulary import GeneMapping, GeneVocabulary
from sagefm.errors import InputDataError
from sagefm.io import physical_scale
from sagefm.io.lattice import median_spacing
from sagefm.io.scale import sagefm_info, spatial_coordinates

logger = logging.getLogger(__name__)

#: ``uns["sagefm"][GENE_MAPPING]``: how many of the slide's genes matched the vocabulary, and how
GENE_MAPPING = "gene_mapping"
#: accepted median spot spacing, micrometres (1 nm to 1 km: anything else is a wrong scale)
_SPACING_RANGE_UM = (1e-3, 1e9)
#: widest accepted slide, in spot spacings (float32 resolves ~1e-7 of the extent)
_MAX_EXTENT_IN_SPACINGS = 1e6


@dataclass(frozen=True)
class PreparedSlide:
    """Everything the model needs from one slide; no AnnData.

    values: (n_spots, V) CSR float32, the model's scale, 0 where not observed.
    observed: (V,) bool, vocabulary genes the slide measures.
    hidden: (n_spots, V) CSR bool or None, entries to treat as unobserved (imputation tests).
    neighbours: (n_spots, k + 1) int64, column 0 the spot itself.
    coords_um: (n_spots, 2) float32 micrometres from the slide's lower-left corner (shifted so that
        float32 keeps sub-micrometre precision whatever the origin of obsm["spatial"]).
    bandwidth_um: the slide's median nearest-neighbour spacing (default edge kernel width).
    """

    name: str
    values: sp.csr_matrix
    observed: np.ndarray
    hidden: sp.csr_matrix | None
    neighbours: np.ndarray
    coords_um: np.ndarray
    bandwidth_um: float

    @property
    def n_spots(self) -> int:
        return int(self.values.shape[0])

    def visible_rows(self, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(len(rows), V) bool: observed and not hidden; written into ``out`` when given."""
        visible = np.empty((len(rows), self.observed.size), bool) if out is None else out
        visible[...] = self.observed
        if self.hidden is not None:
            visible &= ~self.hidden[rows].toarray()
        return visible

    @functools.cached_property
    def hidden_observed(self) -> sp.csr_matrix | None:
        """(n_spots, V) CSR float32 0/1, the observed entries ``hidden`` hides; None without
        hidden entries. Taken once per slide."""
        if self.hidden is None:
            return None
        return sp.csr_matrix(self.hidden.multiply(self.observed[None, :]), dtype=np.float32)

    def sparse_inputs(self) -> tuple[sp.csr_matrix, sp.csr_matrix | None]:
        """The visible values (n_spots, V) CSR (``values`` itself without hidden entries; shared
        by every caller: do not modify it) and `hidden_observed`."""
        return self._shown_values, self.hidden_observed

    @functools.cached_property
    def _shown_values(self) -> sp.csr_matrix:
        """`sparse_inputs`' visible values, taken once per slide: the slide means, its median
        library and the inference chunks of one prediction all read them."""
        hidden = self.hidden_observed
        if hidden is None:
            return self.values
        shown = sp.csr_matrix(self.values - self.values.multiply(hidden))
        shown.eliminate_zeros()
        return shown

    def shown_share(self) -> np.ndarray:
        """(n_spots,) float64, the share of the slide's observed genes each spot shows: 1 without
        hidden entries, 0.7 for a spot with a random 30% of its genes hidden."""
        hidden = self.hidden_observed
        if hidden is None:
            return np.ones(self.n_spots)
        n_hidden = np.asarray(hidden.sum(axis=1), dtype=np.float64).ravel()
        return 1.0 - n_hidden / max(int(self.observed.sum()), 1)

    def spot_library(self) -> np.ndarray:
        """(n_spots,) float64 each spot's visible library (counts, ``Σ expm1(values)`` over the
        genes it shows) divided by its `shown_share`: a spot with a random 30% of its genes hidden
        (imputation tests) then counts about its full library, as in training, and nothing is
        read from the hidden values."""
        counts = self.sparse_inputs()[0].copy()
        counts.data = np.expm1(counts.data)
        return np.asarray(counts.sum(axis=1)).ravel() / np.maximum(self.shown_share(), 1e-12)

    def median_library(self) -> float:
        """The median `spot_library` of the slide's spots: the target of
        ``ModelConfig.slide_library_target``; 1.0 for a slide without counts."""
        library = self.spot_library()
        median = float(np.median(library)) if library.size else 0.0
        return median if median > 0 else 1.0

    def panel(self, genes: np.ndarray) -> PreparedSlide:
        """The slide as if it measured only ``genes`` ((V,) bool) of the vocabulary: a targeted
        panel of it, with its own statistics (`median_library`, slide means)."""
        values = sp.csr_matrix(self.values.multiply(genes[None, :]), dtype=np.float32)
        values.eliminate_zeros()
        return dataclasses.replace(self, values=values, observed=self.observed & genes)

    def visible_spots(self) -> np.ndarray:
        """(V,) int64, how many spots show each gene (observed and not hidden)."""
        count = np.where(self.observed, self.n_spots, 0).astype(np.int64)
        hidden = self.hidden_observed
        if hidden is not None:
            count -= np.asarray(hidden.sum(axis=0, dtype=np.int64)).ravel()
        return count


def slide_library(slide: PreparedSlide, config: ModelConfig) -> float | None:
    """The ``slide_library`` a network built with ``config`` takes for ``slide``: its
    `PreparedSlide.median_library` when ``ModelConfig.uses_slide_library``, else None."""
    return slide.median_library() if config.uses_slide_library else None


def observed_gene_stats(
    slides: Iterable[PreparedSlide],
    n_genes: int,
    *,
    transform: Callable[[PreparedSlide], sp.csr_matrix] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(V,) float32 mean and standard deviation of each vocabulary gene over the spots of the
    slides that measure it (0 and 0 for genes no slide measures), of the values or of
    ``transform(slide)``, (n, V) (the scale the network reads, e.g. depth-normalised).

    Pretraining starts the reconstruction head from the means (its bias), so that it begins at
    the gene-mean predictor instead of spending its first epochs finding each gene's level, and
    standardizes the input with them (`SageGCN.set_input_scaling`).
    """
    total = np.zeros(n_genes, dtype=np.float64)
    total_sq = np.zeros(n_genes, dtype=np.float64)
    count = np.zeros(n_genes, dtype=np.float64)
    for slide in slides:
        values = slide.values if transform is None else transform(slide)
        slide_mean, slide_var = column_mean_variance(values)
        total += slide.n_spots * slide_mean
        total_sq += slide.n_spots * (slide_var + slide_mean**2)
        count += slide.n_spots * slide.observed
    n = np.maximum(count, 1.0)
    mean = total / n
    sd = np.sqrt(np.maximum(total_sq / n - mean**2, 0.0))
    return mean.astype(np.float32), sd.astype(np.float32)


def spot_coordinates_um(adata: ad.AnnData) -> np.ndarray:
    """(n_spots, 2) physical coordinates in µm from ``obsm["spatial"]`` and the slide's scale."""
    coords = spatial_coordinates(adata)
    scale = physical_scale(adata)
    with np.errstate(over="ignore"):
        coords_um = coords[:, :2] * scale
    if not np.isfinite(coords_um).all():
        raise InputDataError(
            f'obsm["spatial"] times the scale ({scale:.3g} µm per unit) overflows: set '
            'adata.uns["sagefm"]["um_per_unit"] to the micrometres per coordinate unit'
        )
    return coords_um


def _checked_spacing_um(coords_um: np.ndarray) -> float:
    """The median spot spacing (µm), refusing layouts whose distances float32 cannot represent.

    The edge kernel divides by the spacing and the subgraph coordinates are float32 (7 digits):
    a spacing outside [1 nm, 1 km] means the scale is wrong, and a slide spanning more than a
    million spacings has far-off outlier spots that would collapse every neighbour distance to 0.
    """
    spacing = median_spacing(coords_um)
    if not _SPACING_RANGE_UM[0] <= spacing <= _SPACING_RANGE_UM[1]:
        raise InputDataError(
            f"spots are {spacing:.3g} µm apart (median nearest neighbour), outside the "
            f"{_SPACING_RANGE_UM[0]:g}-{_SPACING_RANGE_UM[1]:g} µm sagefm accepts: the scale of "
            'obsm["spatial"] is wrong; set adata.uns["sagefm"]["um_per_unit"] to the micrometres '
            "per coordinate unit"
        )
    extent = float(np.ptp(coords_um, axis=0).max())
    if extent > _MAX_EXTENT_IN_SPACINGS * spacing:
        raise InputDataError(
            f"the spots span {extent:.3g} µm but are {spacing:.3g} µm apart: some positions in "
            'obsm["spatial"] lie far from the tissue (outliers); drop those spots'
        )
    return spacing


def slide_name(adata: ad.AnnData, default: str) -> str:
    if Keys.SAMPLE_ID in adata.obs and adata.n_obs:
        ids = adata.obs[Keys.SAMPLE_ID].astype(str).unique()
        if len(ids) == 1:
            return str(ids[0])
    return default


def prepare_slide(
    adata: ad.AnnData,
    vocabulary: GeneVocabulary,
    config: DataConfig,
    *,
    hidden: np.ndarray | sp.spmatrix | None = None,
    name: str | None = None,
    layer: str | None = None,
) -> tuple[PreparedSlide, GeneMapping]:
    """Validate a slide and bring it onto the vocabulary.

    ``hidden`` (n_spots, n_genes of adata) bool hides entries everywhere (centre and neighbours),
    as does a bool layer ``Keys.LAYER_HIDDEN`` of ``adata`` (both: either hides an entry).
    Raises `InputDataError` for missing coordinates, too few spots, bad counts, duplicate names
    or no overlap with the vocabulary.
    """
    check_names(adata)
    coords_um = spot_coordinates_um(adata)
    neighbours = build_neighbourhoods(coords_um, config.n_neighbours)
    bandwidth_um = _checked_spacing_um(coords_um)
    mapping = vocabulary.map(adata)
    _record_gene_mapping(adata, mapping)
    expression = normalize_expression(adata, normalized_input=config.normalized_input, layer=layer)
    values = mapping.to_vocabulary(expression)
    hidden = _hidden_entries(adata, hidden)
    hidden_vocab = None if hidden is None else mapping.to_vocabulary(hidden)
    slide = PreparedSlide(
        name=name or slide_name(adata, "slide"),
        values=values,
        observed=mapping.observed,
        hidden=hidden_vocab,
        neighbours=neighbours,
        coords_um=(coords_um - coords_um.min(axis=0)).astype(np.float32),
        bandwidth_um=bandwidth_um,
    )
    logger.debug(
        "prepared %s: %d spots, %d of %d vocabulary genes observed, spacing %.1f µm",
        slide.name,
        slide.n_spots,
        int(slide.observed.sum()),
        len(vocabulary),
        slide.bandwidth_um,
    )
    return slide, mapping


def _hidden_entries(
    adata: ad.AnnData, hidden: np.ndarray | sp.spmatrix | None
) -> sp.csr_matrix | None:
    """(n_spots, n_genes) CSR bool: the entries ``hidden`` or the layer ``Keys.LAYER_HIDDEN``
    hides (None if neither is given)."""
    masks = [hidden] if hidden is not None else []
    if Keys.LAYER_HIDDEN in adata.layers:
        layer = adata.layers[Keys.LAYER_HIDDEN]
        if layer.dtype != bool:
            raise InputDataError(
                f"layers[{Keys.LAYER_HIDDEN!r}] marks hidden entries and must be boolean, "
                f"got dtype {layer.dtype}"
            )
        masks.append(layer)
    if not masks:
        return None
    for mask in masks:
        if mask.shape != adata.shape:
            raise InputDataError(
                f"mask must have the AnnData's shape {adata.shape}, got {mask.shape}"
            )
    out = sp.csr_matrix(masks[0], dtype=bool)
    return out if len(masks) == 1 else out.maximum(sp.csr_matrix(masks[1], dtype=bool))


def _record_gene_mapping(adata: ad.AnnData, mapping: GeneMapping) -> None:
    """Log how the slide's genes matched and keep the counts in ``uns["sagefm"]["gene_mapping"]``."""
    logger.info("genes of %s: %s", slide_name(adata, "the slide"), mapping.describe())
    if not adata.is_view:  # writing to a view would silently copy it (as `physical_scale`)
        info = sagefm_info(adata)
        info[GENE_MAPPING] = dict(mapping.counts)
        adata.uns[Keys.UNS] = info
