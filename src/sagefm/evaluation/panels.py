"""Masked-gene recovery on targeted panels: report section ``panels``.

Targeted assays measure a few hundred genes (the prostate slides: 310 of a 5,000-gene
vocabulary), where pretraining slides show the model thousands. Each recovery slide is cut to a
random panel of `EvaluationConfig.panel_genes` of its vocabulary genes and scored by the
recovery protocol, the model against the same baselines (`sagefm.evaluation.recovery`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anndata as ad
import numpy as np
import pandas as pd

from sagefm.evaluation.recovery import masked_gene_recovery, recovery_table, slide_row

if TYPE_CHECKING:
    from sagefm.evaluation.run import EvaluationRun
    from sagefm.model import SageFM


def panel_cut(adata: ad.AnnData, model: SageFM, n_genes: int, seed: int) -> ad.AnnData:
    """``adata`` cut to ``n_genes`` of its vocabulary genes drawn at random with ``seed`` (all of
    them if it has no more): the slide as a targeted panel would measure it."""
    genes = model.vocabulary.map(adata).slide_index
    if genes.size <= n_genes:
        return adata
    keep = np.sort(np.random.default_rng(seed).choice(genes, size=n_genes, replace=False))
    return adata[:, keep].copy()


def panels_section(run: EvaluationRun, data: dict[str, list[ad.AnnData]]) -> tuple[dict, str]:
    """Recovery on every recovery slide cut to a random panel; (metrics, markdown)."""
    c = run.config
    rows = []
    for dataset in c.recovery_datasets:
        for adata in data[dataset]:
            cut = panel_cut(adata, run.model, c.panel_genes, run.seed)
            result = masked_gene_recovery(
                run.model, cut, fraction=c.mask_fraction, rounds=c.rounds, seed=run.seed
            )
            rows.append(slide_row(run, dataset, adata, result))
    metrics, text = recovery_table(pd.DataFrame.from_records(rows))
    intro = (
        f"## 1b. Masked-gene recovery on targeted panels\n\nEach slide above cut to {c.panel_genes} "
        f"of its vocabulary genes drawn at random (seed {run.seed}), as a targeted panel would "
        "measure it (the prostate slides measure 310), then the protocol of section 1."
    )
    return metrics, intro + "\n\n" + text
