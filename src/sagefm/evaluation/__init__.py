"""The reproducible evaluation harness: SAGE-FM against baselines on the shared data.

`evaluate` writes the report; `masked_gene_recovery` scores imputation on one slide. The datasets
and every setting are described by `EvaluationConfig` (saved as ``config.json`` beside the report).
This package may import `sagefm.tl` and `sagefm.pl`; neither imports it.
"""

from sagefm.evaluation.config import SECTIONS, EvaluationConfig, EvaluationDataset, PhenotypeTask
from sagefm.evaluation.evaluate import evaluate
from sagefm.evaluation.recovery import RecoveryResult, masked_gene_recovery

__all__ = [
    "SECTIONS",
    "EvaluationConfig",
    "EvaluationDataset",
    "PhenotypeTask",
    "RecoveryResult",
    "evaluate",
    "masked_gene_recovery",
]
