"""Downstream tools: evaluation, imputation scoring, perturbation, interpretation."""

from sagefm.tl.imputation import RecoveryResult, masked_gene_recovery

__all__ = ["RecoveryResult", "masked_gene_recovery"]
