"""Figures (matplotlib, drawn without pyplot so the caller's backend is never changed)."""

from sagefm.pl.evaluation import confusion_matrices, domain_maps, gene_maps, gene_r_histogram
from sagefm.pl.perturbation import (
    attribution_bars,
    dependency_heatmap,
    effect_distribution,
    effect_map,
    top_pairs,
)

__all__ = [
    "attribution_bars",
    "confusion_matrices",
    "dependency_heatmap",
    "domain_maps",
    "effect_distribution",
    "effect_map",
    "gene_maps",
    "gene_r_histogram",
    "top_pairs",
]
