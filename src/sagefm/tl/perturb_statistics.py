"""Statistics of a perturbation screen: clamp values, the matched null, per-pair tests and the
enrichment of ligand–receptor over null effects (see `sagefm.tl.perturb`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.stats

from sagefm.data.neighbourhood import neighbour_average
from sagefm.data.slides import PreparedSlide

#: a null ligand shares the tested ligand's decile of slide-mean expression and its tercile of
#: spatial smoothness (`spatial_smoothness`)
_N_EXPRESSION_BINS = 10
_N_SMOOTHNESS_BINS = 3


def clamp_range(
    values: np.ndarray, quantiles: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene low and high clamp values: quantiles over spots of (n_spots, G) log1p values."""
    low, high = np.quantile(values, quantiles, axis=0)
    return low.astype(np.float32), high.astype(np.float32)


def dense_columns(slide: PreparedSlide, genes: np.ndarray) -> np.ndarray:
    """(n_spots, G) float64 values of the vocabulary genes ``genes`` on the slide (0 where an
    entry is hidden: hidden values are never read)."""
    return np.asarray(slide.sparse_inputs()[0][:, genes].toarray(), dtype=np.float64)


def spatial_smoothness(values: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """(G,) the share of each gene's variance over spots that its mean over each spot's
    neighbours keeps: var(neighbour mean) / var(values) for ``values`` (n_spots, G) and
    ``neighbours`` (n_spots, k + 1) from `build_neighbourhoods` (the spot itself left out).

    About 1/k for a gene scattered at random, near 1 for one that varies smoothly over the slide
    (0 for a constant gene). A clamp in the neighbours moves a smooth ligand's neighbourhood the
    way the slide does, so a null must match it: L–R ligands are smoother than random genes of
    the same expression on the shared slides, and a model's effects grow with smoothness.
    """
    around = neighbour_average(values, neighbours, include_self=False).astype(np.float64)
    spread = values.var(axis=0)
    return np.divide(around.var(axis=0), spread, out=np.zeros_like(spread), where=spread > 0)


def _matching_bins(dense: np.ndarray, neighbours: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(G,) the joint bin of each gene's slide-mean expression and spatial smoothness, from its
    values ``dense`` (n_spots, G); the bins are quantiles over the ``reference`` genes (G,) bool."""
    mean, smooth = dense.mean(axis=0), spatial_smoothness(dense, neighbours)
    mean_edges = np.quantile(mean[reference], np.linspace(0, 1, _N_EXPRESSION_BINS + 1)[1:-1])
    smooth_edges = np.quantile(smooth[reference], np.linspace(0, 1, _N_SMOOTHNESS_BINS + 1)[1:-1])
    mean_bin = np.searchsorted(mean_edges, mean, side="right")
    smooth_bin = np.searchsorted(smooth_edges, smooth, side="right")
    return mean_bin * _N_SMOOTHNESS_BINS + smooth_bin


def draw_null(
    table: pd.DataFrame,
    slide: PreparedSlide,
    n_null: int,
    quantiles: tuple[float, float],
    rng: np.random.Generator,
) -> pd.DataFrame:
    """Null pairs: a tested pair's receptor with a random ligand matched to the tested ligand's
    decile of slide-mean expression and tercile of spatial smoothness (`spatial_smoothness`), or
    on expression alone where no gene shares both.

    Candidates are observed vocabulary genes with a non-degenerate clamp range, excluding the
    receptor itself and every gene the table pairs with that receptor. Returns ligand_index,
    receptor_index, ligand_low, ligand_high (at most ``n_null`` distinct pairs).
    """
    genes = np.flatnonzero(slide.observed)  # the tested ligands among them (they are measured)
    dense = dense_columns(slide, genes)
    low, high = clamp_range(dense, quantiles)
    usable = high > low
    bins = _matching_bins(dense, slide.neighbours, reference=usable)
    ligand_bin = bins[np.searchsorted(genes, table["ligand_index"].to_numpy())]
    genes, bins, low, high = genes[usable], bins[usable], low[usable], high[usable]
    pools = [genes[bins == b] for b in range(_N_EXPRESSION_BINS * _N_SMOOTHNESS_BINS)]
    by_expression = [genes[bins // _N_SMOOTHNESS_BINS == b] for b in range(_N_EXPRESSION_BINS)]
    partners = table.groupby("receptor_index")["ligand_index"].agg(set).to_dict()
    rows: dict[tuple[int, int], None] = {}
    for _ in range(20 * n_null):  # rejections and repeats happen; give up after 20 draws per pair
        if len(rows) == n_null:
            break
        j = int(rng.integers(len(table)))
        receptor = int(table["receptor_index"].iloc[j])
        pool = pools[ligand_bin[j]]
        pool = pool if pool.size else by_expression[ligand_bin[j] // _N_SMOOTHNESS_BINS]
        ligand = int(rng.choice(pool)) if pool.size else receptor
        if ligand != receptor and ligand not in partners[receptor]:
            rows[(ligand, receptor)] = None
    null = pd.DataFrame(list(rows), columns=["ligand_index", "receptor_index"], dtype=np.int64)
    at = np.searchsorted(genes, null["ligand_index"].to_numpy())
    null["ligand_low"], null["ligand_high"] = low[at], high[at]
    return null


def pair_statistics(effects: np.ndarray) -> pd.DataFrame:
    """Per-pair statistics of (n_spots, K) effects: mean, sd, 95% t-interval, share > 0, Wilcoxon
    p and its BH-FDR over the K pairs."""
    n = effects.shape[0]
    mean = effects.mean(axis=0)
    sd = effects.std(axis=0, ddof=1)
    half = scipy.stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n)
    with np.errstate(invalid="ignore", divide="ignore"):
        pvalue = scipy.stats.wilcoxon(effects, axis=0).pvalue
    pvalue = np.nan_to_num(pvalue, nan=1.0)  # all-zero effects: no evidence
    return pd.DataFrame(
        {
            "n_spots": n,
            "mean_effect": mean,
            "sd_effect": sd,
            "ci_low": mean - half,
            "ci_high": mean + half,
            "frac_positive": (effects > 0).mean(axis=0),
            "pvalue": pvalue,
            "fdr": scipy.stats.false_discovery_control(pvalue, method="bh"),
        }
    )


def data_effects(slide: PreparedSlide, pairs: pd.DataFrame) -> np.ndarray:
    """(K,) the data's own answer to each of the K ``pairs`` (ligand_index, receptor_index,
    ligand_low, ligand_high), with no model: the least-squares slope of the centre's receptor on
    its neighbours' mean ligand over every spot of the slide, the centre's log library (its
    vocabulary counts) held fixed, times the clamp range ``ligand_high - ligand_low``. Log1p
    values; a linear counterpart of the screen's effect, on the same pairs and null.

    The library is a covariate because depth varies smoothly across a slide: without it every
    gene pair would look associated through depth alone.
    """
    ligand = dense_columns(slide, pairs["ligand_index"].to_numpy())  # (n, K)
    receptor = dense_columns(slide, pairs["receptor_index"].to_numpy())  # (n, K)
    x = neighbour_average(ligand, slide.neighbours, include_self=False).astype(np.float64)
    library = np.log1p(slide.spot_library())  # (n,)
    design = np.column_stack([np.ones_like(library), library])  # (n, 2)
    rx, ry = (v - design @ np.linalg.lstsq(design, v, rcond=None)[0] for v in (x, receptor))
    variance = (rx**2).sum(axis=0)
    slope = np.divide(
        (rx * ry).sum(axis=0), variance, out=np.zeros_like(variance), where=variance > 0
    )
    return slope * (pairs["ligand_high"].to_numpy() - pairs["ligand_low"].to_numpy())


def null_pvalues(effects: np.ndarray, null_effects: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K,) share of null pairs with a |mean effect| at least each pair's (+1 smoothing) and its
    BH-FDR; NaN without null pairs."""
    null_abs = np.sort(np.abs(null_effects))
    if not null_abs.size:
        return np.full(effects.shape, np.nan), np.full(effects.shape, np.nan)
    at_least = null_abs.size - np.searchsorted(null_abs, np.abs(effects), "left")
    pvalue = (1.0 + at_least) / (1.0 + null_abs.size)
    return pvalue, scipy.stats.false_discovery_control(pvalue, method="bh")


def enrichment(lr: np.ndarray, null: np.ndarray) -> dict[str, float]:
    """AUROC of L–R vs null mean effects (|effect| one-sided, signed two-sided), Mann–Whitney p."""
    out: dict[str, float] = {"n_pairs": float(lr.size), "n_null": float(null.size)}
    if lr.size == 0 or null.size == 0:
        return out
    for name, a, b, alternative in (
        ("abs", np.abs(lr), np.abs(null), "greater"),
        ("signed", lr, null, "two-sided"),
    ):
        test = scipy.stats.mannwhitneyu(a, b, alternative=alternative)
        out[f"auroc_{name}"] = float(test.statistic / (a.size * b.size))
        out[f"pvalue_{name}"] = float(test.pvalue)
    return out
