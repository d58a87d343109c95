"""In-silico perturbation against the data's own answer: report section ``perturbation``.

Every slide of `EvaluationConfig.perturbation_datasets` gets a `perturbation_screen` with LIANA's
consensus pairs and a null matched on expression and spatial smoothness. Two AUROCs of |effect|
(L–R pairs vs the null) are compared on the same pairs and null:

- the model's: the receptor's predicted change in the centre when the ligand is clamped from its
  low to its high value in the 14 neighbours;
- the data's (`sagefm.tl.perturb_statistics.data_effects`): the slope of the centre's receptor
  on its neighbours' mean ligand over the slide, log library held fixed. It is the task's
  baseline: an L–R signal the data's own linear association already shows needs no model.

Issue 13's bar 4 asks for a model AUROC of at least `PERTURBATION_BAR` with a Mann–Whitney p below
`PERTURBATION_ALPHA` on her2st and on DLPFC. It is read per slide (a slide meets it only when both
hold) and per dataset (`dataset_summary`: the mean AUROC of its slides and their one-sided p-values
combined by Stouffer's method).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.stats

from sagefm.data.slides import slide_name
from sagefm.errors import InputDataError
from sagefm.evaluation.report import markdown_table, records
from sagefm.pl import evaluation as figures
from sagefm.tl.perturb import PerturbationResult, perturbation_screen

if TYPE_CHECKING:
    from sagefm.evaluation.run import EvaluationRun

logger = logging.getLogger(__name__)

#: the bar: |effect| AUROC of L–R pairs against the null, and the p it must stay under
PERTURBATION_BAR = 0.6
PERTURBATION_ALPHA = 0.01
#: who answers: SAGE-FM's clamp, and the data's own slope
SOURCES = {"model": "SAGE-FM", "data": "data's own slope"}


def perturbation_row(
    run: EvaluationRun, dataset: str, adata: ad.AnnData, result: PerturbationResult
) -> dict[str, Any]:
    """One slide's row: pairs tested, each source's AUROC and p, whether it meets the bar, the
    size of the effects and how far the model's follow the data's (Spearman over pairs and null)."""
    effects = {
        "model": np.concatenate([result.table["mean_effect"], result.null["mean_effect"]]),
        "data": np.concatenate([result.table["data_effect"], result.null["data_effect"]]),
    }
    row = _slide(run, dataset, adata) | {"n_pairs": len(result.table), "n_null": len(result.null)}
    for source, scores in (("model", result.enrichment), ("data", result.data_enrichment)):
        auroc = scores.get("auroc_abs", float("nan"))
        pvalue = scores.get("pvalue_abs", float("nan"))
        row[f"auroc_{source}"] = auroc
        row[f"pvalue_{source}"] = pvalue
        row[f"meets_{source}"] = bool(auroc >= PERTURBATION_BAR and pvalue < PERTURBATION_ALPHA)
        row[f"median_abs_effect_{source}"] = float(np.median(np.abs(effects[source])))
    finite = np.isfinite(effects["model"]) & np.isfinite(effects["data"])
    row["spearman_model_data"] = (
        float(scipy.stats.spearmanr(effects["model"][finite], effects["data"][finite])[0])
        if finite.sum() > 2
        else float("nan")
    )
    return row


def _slide(run: EvaluationRun, dataset: str, adata: ad.AnnData) -> dict[str, Any]:
    return {"slide": slide_name(adata, "?"), "dataset": dataset, "split": run.split(adata)}


def _untestable_row(
    run: EvaluationRun, dataset: str, adata: ad.AnnData, error: InputDataError
) -> dict[str, Any]:
    """The row of a slide the screen refused (no testable pair, say): no scores, the reason kept."""
    logger.warning("perturbation skipped on %s: %s", slide_name(adata, "?"), error)
    row = _slide(run, dataset, adata) | {"n_pairs": 0, "n_null": 0, "untestable": str(error)}
    for source in SOURCES:
        row |= {f"auroc_{source}": np.nan, f"pvalue_{source}": np.nan, f"meets_{source}": False}
        row[f"median_abs_effect_{source}"] = np.nan
    return row | {"spearman_model_data": np.nan}


def perturbation_section(run: EvaluationRun, data: dict[str, list[ad.AnnData]]) -> tuple[dict, str]:
    """The perturbation screen on every slide of the perturbation datasets; (metrics, markdown)."""
    c = run.config
    rows = []
    for dataset in c.perturbation_datasets:
        for adata in data[dataset]:
            tick = time.perf_counter()
            try:
                result = perturbation_screen(
                    run.model,
                    adata.copy(),  # the screen writes its table into the AnnData it is given
                    n_spots=c.perturbation_spots,
                    n_null=c.perturbation_null,
                    seed=run.seed,
                    progress=run.progress,
                )
            except InputDataError as error:  # no testable pair: say so, score the other slides
                row = _untestable_row(run, dataset, adata, error)
            else:
                row = perturbation_row(run, dataset, adata, result)
            rows.append(row | {"wall_time_s": time.perf_counter() - tick})
    table = pd.DataFrame.from_records(rows)
    figures.perturbation_aurocs(
        table,
        run.figures / "perturbation_auroc.png",
        bar=PERTURBATION_BAR,
        alpha=PERTURBATION_ALPHA,
    )
    met = {
        source: {d: int(g[f"meets_{source}"].sum()) for d, g in table.groupby("dataset")}
        for source in SOURCES
    }
    datasets = dataset_summary(table)
    metrics = {
        "per_slide": records(table),
        "per_dataset": records(datasets),
        "n_slides_meeting_bar": met,
    }
    return metrics, _text(run, table, datasets)


def dataset_summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per dataset of `perturbation_row` rows: slides screened, and for each source the
    mean AUROC over them, their p-values combined (Stouffer, equal weights) and whether the
    dataset meets the bar on both. Slides without a score are left out."""
    rows = []
    for dataset, group in table.groupby("dataset", sort=False):
        scored = group[np.isfinite(group["auroc_model"].to_numpy(dtype=np.float64))]
        row: dict[str, Any] = {"dataset": dataset, "n_slides": len(scored)}
        for source in SOURCES:
            auroc = float(scored[f"auroc_{source}"].mean()) if len(scored) else float("nan")
            pvalues = scored[f"pvalue_{source}"].to_numpy(dtype=np.float64)
            pvalue = (
                float(scipy.stats.combine_pvalues(pvalues, method="stouffer").pvalue)
                if pvalues.size
                else float("nan")
            )
            row |= {f"auroc_{source}": auroc, f"pvalue_{source}": pvalue}
            row[f"meets_{source}"] = bool(auroc >= PERTURBATION_BAR and pvalue < PERTURBATION_ALPHA)
        rows.append(row)
    return pd.DataFrame.from_records(rows)


def _g(value: float) -> str:
    """Two significant digits: p-values and effects span orders of magnitude."""
    return f"{value:.2g}" if np.isfinite(value) else "–"


def _dataset_table(datasets: pd.DataFrame) -> pd.DataFrame:
    shown = datasets[["dataset", "n_slides"]].copy()
    for source, label in SOURCES.items():
        shown[f"mean AUROC {label}"] = datasets[f"auroc_{source}"]
        shown[f"combined p {label}"] = datasets[f"pvalue_{source}"].map(_g)
        shown[f"meets the bar, {label}"] = datasets[f"meets_{source}"].map(
            {True: "yes", False: "no"}
        )
    return shown


def _text(run: EvaluationRun, table: pd.DataFrame, datasets: pd.DataFrame) -> str:
    c = run.config
    shown = table[["slide", "dataset", "split", "n_pairs"]].copy()
    for source, label in SOURCES.items():
        shown[f"AUROC {label}"] = table[f"auroc_{source}"]
        shown[f"p {label}"] = table[f"pvalue_{source}"].map(_g)
        shown[f"median abs effect {label}"] = table[f"median_abs_effect_{source}"].map(_g)
    shown["Spearman model vs data"] = table["spearman_model_data"]
    shown["wall s"] = table["wall_time_s"].map("{:.0f}".format)
    tally = "; ".join(
        f"{dataset}: SAGE-FM {int(g['meets_model'].sum())} of {len(g)} slides, the data's own "
        f"{int(g['meets_data'].sum())}"
        for dataset, g in table.groupby("dataset", sort=False)
    )
    return "\n\n".join(
        [
            "## 6. In-silico perturbation",
            "LIANA consensus ligand–receptor pairs testable on each slide against "
            f"{c.perturbation_null} null pairs matched on expression and spatial smoothness, at "
            f"{c.perturbation_spots} centre spots drawn with seed {run.seed}; the ligand clamped "
            "at its 5th vs 95th percentile in the 14 neighbours. *SAGE-FM*: AUROC of the "
            "receptor's predicted |change| in the centre, L–R pairs vs null (Mann–Whitney p). "
            "*data's own slope*: the same AUROC for the slope of the centre's receptor on its "
            "neighbours' mean ligand over the slide, log library held fixed (no model): the "
            "signal the data show without one. Effects in log1p units.",
            markdown_table(shown),
            f"**Slides meeting the bar (AUROC ≥ {PERTURBATION_BAR}, p < {PERTURBATION_ALPHA})**: "
            f"{tally}.",
            "Per dataset: the mean AUROC of its slides, their p-values combined by Stouffer's "
            "method.",
            markdown_table(_dataset_table(datasets)),
            "![AUROC per slide](figures/perturbation_auroc.png)",
        ]
    )
