"""Masked-gene recovery: hide observed values, predict them, compare with simple baselines.

Section 1 of the report (`recovery_section`) scores every slide of the recovery datasets.

Baselines see exactly what the model sees (the hidden entries are hidden from them too):
``zero`` (the paper's "no imputation"), ``gene_mean`` (each gene's mean over the slide's visible
entries) and ``neighbour_mean`` (the gene's mean over the spot's neighbours where visible, falling
back to the gene mean). A model that does not beat ``neighbour_mean`` has learned nothing beyond
spatial smoothing.

``scaled_gene_mean`` and ``scaled_neighbour_mean`` are the same two means taken after every spot is
brought to the slide's median library (`sagefm.nn.depth.normalize_depth`, as scanpy's
``normalize_total``), then restored at the predicted spot's own library (both estimated from the
visible genes, see `baseline_predictions`). A model that normalises depth gets about this for
free: with a constant deep path it predicts such a mean, so it must beat these too.

``low_rank`` completes the slide's matrix at the median library from its visible entries
(`low_rank_completion`, rank `LOW_RANK`), restored at each spot's library like the scaled means.
It is the classic matrix-completion baseline (hard-impute, Mazumder et al., JMLR 2010): it uses
co-expression on the slide, where the means use none. On every shared slide it is the strongest
baseline (README, "A low-rank completion of each slide").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.stats
import torch
from sklearn.utils.extmath import randomized_svd

from sagefm.data.neighbourhood import build_neighbourhoods, neighbourhood_matrix
from sagefm.data.slides import slide_name, spot_coordinates_um
from sagefm.evaluation.report import LABELS, markdown_table, records, split_summary, verdict
from sagefm.nn.depth import normalize_depth, restore_depth
from sagefm.pl import evaluation as figures

if TYPE_CHECKING:
    from sagefm.evaluation.run import EvaluationRun
    from sagefm.model import SageFM

BASELINES = (
    "zero",
    "gene_mean",
    "neighbour_mean",
    "scaled_gene_mean",
    "scaled_neighbour_mean",
    "low_rank",
)
#: rank of `low_rank_completion` in the baseline. Ranks 2, 3 and 5 were within 0.002 of RMSE of
#: each other on the tuning slides (her2st A1-D1, DLPFC 151673-75), 5 the best on DLPFC; 20 was worse.
LOW_RANK = 5
#: fill-and-refit rounds of `low_rank_completion` (5, 10, 20 and 40 were within 0.0002 of RMSE
#: on her2st A1, B1 and DLPFC 151673)
LOW_RANK_ROUNDS = 20


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


def _visible_mean(shown: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(n_genes,) each gene's mean over its visible entries: ``shown`` (n_spots, n_genes) is 0
    where hidden, ``counts`` (n_genes,) the visible entries of each gene (0 for a gene with none)."""
    return np.divide(shown.sum(axis=0), counts, out=np.zeros(shown.shape[1]), where=counts > 0)


def baseline_predictions(
    truth: np.ndarray, mask: np.ndarray, neighbours: np.ndarray
) -> dict[str, np.ndarray]:
    """Every baseline (n_spots, n_genes) from the visible entries only (``mask`` = hidden).

    ``truth`` is log1p counts. The scaled baselines and ``low_rank`` bring each spot to the
    median library first and back to its own after: a spot's library is its visible counts
    divided by the share of the given genes it shows, so a spot with 30% hidden counts about its
    full library, as `sagefm.data.slides.PreparedSlide.median_library` does.
    """
    visible = ~mask
    shown = np.where(visible, truth, 0.0)
    counts = visible.sum(axis=0)  # (n_genes,) spots showing each gene
    operator = neighbourhood_matrix(neighbours, include_self=False)
    nb_count = operator @ visible.astype(np.float64)  # (n_spots, n_genes) neighbours showing it

    def means(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n_genes,) each gene's mean over its visible entries of ``values`` (0 where hidden),
        and (n_spots, n_genes) its mean over the visible neighbours (the gene mean if none)."""
        gene = _visible_mean(values, counts)
        nb = np.where(nb_count > 0, (operator @ values) / np.maximum(nb_count, 1), gene[None, :])
        return gene, nb

    gene_mean, nb_mean = means(shown)
    share = visible.sum(axis=1) / max(truth.shape[1], 1)
    library = np.expm1(shown).sum(axis=1) / np.maximum(share, 1e-12)
    target = float(np.median(library[library > 0])) if (library > 0).any() else 1.0
    library_t = torch.as_tensor(library)[:, None]  # (n_spots, 1) counts
    scaled = normalize_depth(torch.as_tensor(shown), library_t, target).numpy()
    restored = [
        restore_depth(torch.as_tensor(m), library_t, target).numpy()  # (n_spots, n_genes)
        for m in (*means(scaled), low_rank_completion(scaled, visible))
    ]
    return {
        "zero": np.zeros_like(truth),
        "gene_mean": np.broadcast_to(gene_mean, truth.shape),
        "neighbour_mean": nb_mean,
        "scaled_gene_mean": restored[0],
        "scaled_neighbour_mean": restored[1],
        "low_rank": restored[2],
    }


def low_rank_completion(
    values: np.ndarray,
    visible: np.ndarray,
    rank: int = LOW_RANK,
    rounds: int = LOW_RANK_ROUNDS,
    seed: int = 0,
) -> np.ndarray:
    """(n_spots, n_genes) hard-impute of ``values`` from its ``visible`` entries (both that shape).

    Hidden entries start at their gene's visible mean; each round fits the genes' means plus a
    rank-``rank`` truncated SVD (randomised, ``seed``) to the filled matrix and refills the hidden
    entries with it, clipped at 0 (values are log1p-scale). Returns the last fit at every entry.
    Hidden entries of ``values`` are never read.
    """
    gene = _visible_mean(np.where(visible, values, 0.0), visible.sum(axis=0))
    fill = np.where(visible, values, gene[None, :])
    rank = min(rank, min(values.shape) - 1)
    fit = fill
    for _ in range(rounds if rank > 0 else 0):
        centre = fill.mean(axis=0)
        u, s, vt = randomized_svd(fill - centre, rank, n_iter=2, random_state=seed)
        fit = np.clip((u * s) @ vt + centre, 0.0, None)
        fill = np.where(visible, values, fit)
    return fit


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
) -> RecoveryResult:
    """Hide ``fraction`` of each spot's vocabulary genes (``rounds`` times), predict, score.

    Hidden entries are unobserved everywhere (centre and neighbours) for the model and baselines.
    Per-gene Pearson r pools each gene's hidden entries over rounds; p-values are BH-corrected.
    """
    scored = np.zeros(adata.n_vars, dtype=bool)
    scored[model.vocabulary.map(adata).slide_index] = True
    columns = np.flatnonzero(scored)  # everything is scored on the genes the model reads
    truth = model.normalize(adata)[:, columns].astype(np.float64)
    neighbours = build_neighbourhoods(spot_coordinates_um(adata), model.config.data.n_neighbours)
    rng = np.random.default_rng(seed)
    names = ["model", *BASELINES]
    pairs: dict[str, list[np.ndarray]] = {k: [] for k in names}
    truths: list[np.ndarray] = []
    genes: list[np.ndarray] = []
    for _ in range(rounds):
        mask = random_observed_mask(adata.n_obs, scored, fraction, rng)
        imputed = model.impute(adata, mask, layer_added=None, progress=progress)[:, columns]
        predictions = {"model": imputed.astype(np.float64)}
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
    rows, r_values = [], {}
    maps: tuple[ad.AnnData, pd.DataFrame] | None = None
    for dataset in c.recovery_datasets:
        rs = []
        for adata in data[dataset]:
            result = masked_gene_recovery(
                run.model, adata, fraction=c.mask_fraction, rounds=c.rounds, seed=run.seed
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
    text = "\n\n".join(
        [
            "## 1. Masked-gene recovery",
            f"{c.mask_fraction:.0%} of each spot's vocabulary genes hidden (from the model and from the "
            f"baselines), {c.rounds} round(s) with seed {run.seed}; RMSE on log1p counts over all hidden "
            "entries. Per-gene Pearson r pools each gene's hidden entries; p-values BH-corrected "
            f"(FDR 5%). The low-rank completion is a rank-{LOW_RANK} hard-impute of the slide's "
            "visible entries at its median library (`low_rank_completion`), restored at each "
            "spot's depth.",
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
    methods = ("model", *BASELINES)
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
    n_wins = int((table["best"] == "SAGE-FM").sum())
    text = "\n\n".join(
        [
            markdown_table(shown),
            verdict(means, higher_is_better=False, metric="mean RMSE")
            + f" SAGE-FM is best on {n_wins} of {len(table)} slides.",
            "Mean RMSE by pretraining split:\n\n" + split_summary(long, "value"),
        ]
    )
    metrics = {"per_slide": records(table), "mean_rmse": means, "n_slides_model_best": n_wins}
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
