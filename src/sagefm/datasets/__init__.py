"""Datasets: the synthetic Visium-like tissue generator (ground truth for tests and the demo)."""

from sagefm.datasets.synthetic import SyntheticTissueConfig, planted_pairs, synthetic_tissue

__all__ = ["SyntheticTissueConfig", "planted_pairs", "synthetic_tissue"]
