"""Downstream tools: evaluation, imputation scoring, perturbation, interpretation."""

from sagefm.tl.evaluate import EvaluationConfig, evaluate
from sagefm.tl.explain import dependency_matrix, explain
from sagefm.tl.imputation import RecoveryResult, masked_gene_recovery
from sagefm.tl.lr_pairs import lr_pairs
from sagefm.tl.perturb import PerturbationResult, perturb, perturbation_screen

__all__ = [
    "EvaluationConfig",
    "PerturbationResult",
    "RecoveryResult",
    "dependency_matrix",
    "evaluate",
    "explain",
    "lr_pairs",
    "masked_gene_recovery",
    "perturb",
    "perturbation_screen",
]
