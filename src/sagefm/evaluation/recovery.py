"""Masked-gene recovery: hide observed values, predict them, compare with simple baselines.

Section 1 of the report (`recovery_section`) scores every slide of the recovery datasets.

The baselines (`sagefm.evaluation.recovery_baselines`) see exactly what the model sees; the
strongest on every shared slide is ``low_rank``, a rank-5 completion of the slide.

``model_adapted`` (with `EvaluationConfig.adapt_epochs`) is the model adapted to the slide by
`SageFM.adapt` in each round with that round's hidden entries unobserved (never an input, never a
target): the setting of a user who adapts to their slide before imputing, beside zero-shot.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import scipy.stats

from sagefm._constants import Keys
from sagefm.data.neighbourhood import build_neighbourhoods
from sagefm.data.slides import slide_name, spot_coordinates_um
from sagefm.evaluation.recovery_baselines import BASELINES, LOW_RANK, baseline_predictions
from sagefm.evaluation.report import LABELS, markdown_table, records, split_summary, verdict
from sagefm.pl import evaluation as figures

if TYPE_CHECKING:
    from sagefm.evaluation.run import EvaluationRun
    from sagefm.model import SageFM

#: the model's predictions: zero-shot, and adapted to the slide (`EvaluationConfig.adapt_epochs`)
MODELS = ("model", "model_adapted")


def random_observed_mask(
    n_spots: int, scored: np.ndarray, fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """(n_spots, n_genes) bool hiding ``round(fraction * n_scored)`` of the ``scored`` genes per spot.

    ``scored`` is (n_genes,) bool; within each spot the hidden genes are chosen uniformly.
    """
    cols = np.flatnonzero(scored)
    n_hide = round(fraction * cols.size)
    mask = np.zeros((n_spots, scored.size), dtype=bool)
    if n_hide == 0:
        return mask
    pick = np.argsort(rng.random((n_spots, cols.size)), axis=1)[:, :n_hide]
    mask[np.arange(n_spots)[:, None], cols[pick]] = True
    return mask


@dataclass
class RecoveryResult:
    """Masked-gene recovery on one slide. RMSEs are over all hidden entries, on the model's scale."""

    rmse: dict[str, float]  #: "model" and each baseline
    per_gene: pd.DataFrame  #: gene, n, r, pvalue, fdr, and per-gene RMSE of model and baselines
    frac_significant: float  #: share of scored genes with BH-FDR < 5% (two-sided Pearson)
    frac_significant_positive: float  #: ... and r > 0
    n_hidden: int
    rounds: int
    fraction: float
    seed: int

    def summary(self) -> dict[str, Any]:
        best = min(BASELINES, key=lambda b: self.rmse[b])
        return {
            "rmse": self.rmse,
            "ratio_to_zero": {k: v / self.rmse["zero"] for k, v in self.rmse.items()},
            "strongest_baseline": best,
            "beats_all_baselines": self.rmse["model"] < self.rmse[best],
            "n_genes": len(self.per_gene),
            "frac_significant": self.frac_significant,
            "frac_significant_positive": self.frac_significant_positive,
            "n_hidden": self.n_hidden,
            "rounds": self.rounds,
            "fraction": self.fraction,
            "seed": self.seed,
        }


def masked_gene_recovery(
    model: SageFM,
    adata: ad.AnnData,
    *,
    fraction: float = 0.3,
    rounds: int = 1,
    seed: int = 0,
    progress: bool = False,
    adapt: Callable[[ad.AnnData], SageFM] | None = None,
) -> RecoveryResult:
    """Hide ``fraction`` of each spot's vocabulary genes (``rounds`` times), predict, score.

    Hidden entries are unobserved everywhere (centre and neighbours) for the model and baselines.
    Per-gene Pearson r pools each gene's hidden entries over rounds; p-values are BH-corrected.
    ``adapt`` (optional) returns a model adapted to a copy of ``adata`` whose
    ``layers[Keys.LAYER_HIDDEN]`` holds the round's mask; its predictions are ``model_adapted``.
    """
    scored = np.zeros(adata.n_vars, dtype=bool)
    scored[model.vocabulary.map(adata).slide_index] = True
    columns = np.flatnonzero(scored)  # everything is scored on the genes the model reads
    truth = model.normalize(adata)[:, columns].astype(np.float64)
    neighbours = build_neighbourhoods(spot_coordinates_um(adata), model.config.data.n_neighbours)
    rng = np.random.default_rng(seed)
    names = ["model", *(["model_adapted"] if adapt else []), *BASELINES]
    pairs: dict[str, list[np.ndarray]] = {k: [] for k in names}
    truths: list[np.ndarray] = []
    genes: list[np.ndarray] = []
    for _ in range(rounds):
        mask = random_observed_mask(adata.n_obs, scored, fraction, rng)
        predictions = {"model": _imputed(model, adata, mask, progress)[:, columns]}
        if adapt:
            masked = adata.copy()
            masked.layers[Keys.LAYER_HIDDEN] = sp.csr_matrix(mask)
            adapted = adapt(masked)
            predictions["model_adapted"] = _imputed(adapted, adata, mask, progress)[:, columns]
        hidden = mask[:, columns]
        predictions.update(baseline_predictions(truth, hidden, neighbours))
        rows, cols = np.nonzero(hidden)
        truths.append(truth[rows, cols])
        genes.append(columns[cols])
        for k in names:
            pairs[k].append(predictions[k][rows, cols])
    y = np.concatenate(truths)
    g = np.concatenate(genes)
    preds = {k: np.concatenate(v) for k, v in pairs.items()}
    rmse = {k: float(np.sqrt(np.mean((preds[k] - y) ** 2))) for k in names}
    per_gene = _per_gene_table(adata.var_names.to_numpy(), g, y, preds)
    significant = per_gene["fdr"] < 0.05
    return RecoveryResult(
        rmse=rmse,
        per_gene=per_gene,
        frac_significant=float(significant.mean()),
        frac_significant_positive=float((significant & (per_gene["r"] > 0)).mean()),
        n_hidden=int(y.size),
        rounds=rounds,
        fraction=fraction,
        seed=seed,
    )


def _imputed(model: SageFM, adata: ad.AnnData, mask: np.ndarray, progress: bool) -> np.ndarray:
    """(n_spots, n_genes) float64 `SageFM.impute` of ``adata`` with ``mask`` hidden."""
    return model.impute(adata, mask, layer_added=None, progress=progress).astype(np.float64)


def _per_gene_table(
    names: np.ndarray, gene: np.ndarray, truth: np.ndarray, preds: dict[str, np.ndarray]
) -> pd.DataFrame:
    order = np.argsort(gene, kind="stable")
    bounds = np.flatnonzero(np.diff(gene[order])) + 1
    records = []
    for idx in np.split(order, bounds):
        y, p = truth[idx], preds["model"][idx]
        constant = np.ptp(y) == 0 or np.ptp(p) == 0
        r, pvalue = (np.nan, 1.0) if constant or idx.size < 3 else scipy.stats.pearsonr(p, y)
        record = {
            "gene": names[gene[idx[0]]],
            "n": int(idx.size),
            "r": float(r),
            "pvalue": float(pvalue),
        }
        for k, v in preds.items():
            record[f"rmse_{k}"] = float(np.sqrt(np.mean((v[idx] - y) ** 2)))
        records.append(record)
    table = pd.DataFrame.from_records(records)
    table["fdr"] = scipy.stats.false_discovery_control(table["pvalue"].to_numpy(), method="bh")
    return table


# ------------------------------------------------------------------------- report section
def slide_row(
    run: EvaluationRun, dataset: str, adata: ad.AnnData, result: RecoveryResult
) -> dict[str, Any]:
    return {
        "slide": slide_name(adata, "?"),
        "dataset": dataset,
        "split": run.split(adata),
        **{f"rmse_{k}": v for k, v in result.rmse.items()},
        "best": LABELS[min(result.rmse, key=lambda k: result.rmse[k])],
        "frac_significant": result.frac_significant,
        "n_genes": len(result.per_gene),
        "n_hidden": result.n_hidden,
    }


def recovery_section(run: EvaluationRun, data: dict[str, list[ad.AnnData]]) -> tuple[dict, str]:
    """Section 1: masked-gene recovery on every slide; (metrics, markdown)."""
    c = run.config
    rows, r_values, costs = [], {}, []
    maps: tuple[ad.AnnData, pd.DataFrame] | None = None

    def adapt(adata: ad.AnnData) -> SageFM:
        adapted, cost = run.adapted_model(adata)
        costs.append(cost | {"slide": slide_name(adata, "?")})
        return adapted

    for dataset in c.recovery_datasets:
        rs = []
        for adata in data[dataset]:
            result = masked_gene_recovery(
                run.model,
                adata,
                fraction=c.mask_fraction,
                rounds=c.rounds,
                seed=run.seed,
                adapt=adapt if c.adapt_epochs else None,
            )
            rows.append(slide_row(run, dataset, adata, result))
            rs.append(result.per_gene["r"].to_numpy())
            maps = maps or (adata, result.per_gene)
        r_values[dataset] = np.concatenate(rs)
    assert maps is not None
    table = pd.DataFrame.from_records(rows)
    figures.gene_r_histogram(r_values, run.figures / "recovery_gene_r.png")
    genes = _marker_genes(maps[1], c.marker_genes, c.n_marker_genes)
    _gene_maps(run, maps[0], genes)
    metrics, summary = recovery_table(table)
    metrics["adaptation"] = costs
    adapted = (
        f" *SAGE-FM adapted*: the model after up to {c.adapt_epochs} epochs of `SageFM.adapt` on "
        "the slide alone, once per round, with the round's hidden entries unobserved (never an "
        "input, never a target)."
        if c.adapt_epochs
        else ""
    )
    text = "\n\n".join(
        [
            "## 1. Masked-gene recovery",
            f"{c.mask_fraction:.0%} of each spot's vocabulary genes hidden (from the model and from the "
            f"baselines), {c.rounds} round(s) with seed {run.seed}; RMSE on log1p counts over all hidden "
            "entries. Per-gene Pearson r pools each gene's hidden entries; p-values BH-corrected "
            f"(FDR 5%). The low-rank completion is a rank-{LOW_RANK} hard-impute of the slide's "
            "visible entries at its median library (`low_rank_completion`), restored at each "
            f"spot's depth.{adapted}",
            summary,
            "![per-gene r](figures/recovery_gene_r.png)",
            f"![true vs predicted](figures/recovery_gene_maps.png)\n\nMaps on {slide_name(maps[0], '?')}: "
            f"each gene hidden at every spot and predicted from the rest ({', '.join(genes)}).",
        ]
    )
    return metrics, text


def recovery_table(table: pd.DataFrame) -> tuple[dict[str, Any], str]:
    """Metrics (per-slide rows, mean RMSEs, slides won) and markdown (the per-slide table, the
    verdict, the means by pretraining split) of `slide_row` rows."""
    methods = tuple(m for m in MODELS if f"rmse_{m}" in table) + BASELINES
    means = {k: float(table[f"rmse_{k}"].mean()) for k in methods}
    shown = table[["slide", "dataset", "split"]].copy()
    for k in methods:
        shown[f"RMSE {LABELS[k]}"] = table[f"rmse_{k}"]
    shown["best"] = table["best"]
    shown["% genes FDR<5%"] = 100 * table["frac_significant"]
    long = table.melt(
        id_vars=["split"], value_vars=[f"rmse_{k}" for k in methods], var_name="method"
    )
    long["method"] = long["method"].str.removeprefix("rmse_")
    best_baseline = table[[f"rmse_{b}" for b in BASELINES]].min(axis=1)
    wins = {m: int((table[f"rmse_{m}"] < best_baseline).sum()) for m in methods if m in MODELS}
    below = {m: int((table[f"rmse_{m}"] < table["rmse_neighbour_mean"]).sum()) for m in wins}
    tally = "; ".join(
        f"{LABELS[m]} beats every baseline on {wins[m]} of {len(table)} slides and the "
        f"neighbour mean on {below[m]}"
        for m in wins
    )
    text = "\n\n".join(
        [
            markdown_table(shown),
            verdict(means, higher_is_better=False, metric="mean RMSE") + f" {tally}.",
            "Mean RMSE by pretraining split:\n\n" + split_summary(long, "value"),
        ]
    )
    metrics = {
        "per_slide": records(table),
        "mean_rmse": means,
        "n_slides_model_best": wins["model"],
        "n_slides_best": wins,
        "n_slides_below_neighbour_mean": below,
    }
    return metrics, text


def _marker_genes(per_gene: pd.DataFrame, markers: tuple[str, ...], n: int) -> list[str]:
    """Known markers the slide has, topped up with the genes the model recovers best."""
    present = set(per_gene["gene"])
    genes = [g for g in markers if g in present][:n]
    ranked = per_gene.sort_values("r", ascending=False)["gene"]
    genes += [g for g in ranked if g not in genes][: n - len(genes)]
    return genes


def _gene_maps(run: EvaluationRun, adata: ad.AnnData, genes: list[str]) -> None:
    columns = adata.var_names.get_indexer(genes)
    mask = np.zeros(adata.shape, dtype=bool)
    mask[:, columns] = True
    predicted = run.model.impute(adata, mask, layer_added=None, progress=run.progress)[:, columns]
    truth = run.model.normalize(adata)[:, columns]
    figures.gene_maps(
        np.asarray(adata.obsm["spatial"])[:, :2],
        genes,
        truth,
        predicted,
        run.figures / "recovery_gene_maps.png",
        title=slide_name(adata, ""),
    )
