r"""In-silico ligand→receptor perturbation: clamp a ligand in the neighbours, read the receptor.

Semantics (per pair ``(g, r)`` and per centre spot ``s``):

* the ligand ``g`` is set to a **low** and a **high** value in the 14 neighbours of ``s`` (not in
  ``s`` itself), visible in both; the values are the ``quantiles`` (default 5th and 95th percentile)
  of the ligand's log1p expression over all spots of the slide, zeros included;
* the receptor ``r`` is hidden in the centre (value 0, visibility indicator 0), as in pretraining;
* the model predicts ``r`` at the centre; the **effect** is ``pred(high) − pred(low)`` in log1p units.

Statistics per pair, over the sampled spots: mean effect with a t confidence interval, the share of
spots with a positive effect, a Wilcoxon signed-rank test of the per-spot effects against 0 (i.e. a
paired test of pred(high) vs pred(low)) and BH-FDR over pairs. With a deterministic model almost any
consistent effect is "significant" over hundreds of spots, so the screen also draws a **null** of
gene pairs matched on the receptor, on expression and on spatial smoothness: each null pair keeps
the receptor of a random tested pair and replaces its ligand by a random gene from the same decile
of slide-mean expression and the same tercile of spatial smoothness (`spatial_smoothness`: L–R
ligands vary more smoothly over a slide than random genes, and a clamp in the neighbours moves a
smooth gene's neighbourhood further), never a gene the table pairs with that receptor.
``null_pvalue`` is the share of null pairs with a |mean effect| at least as large (+1 smoothing),
and the **enrichment** of L–R over null effects is an AUROC with a one-sided Mann–Whitney p-value.

Speed: every spot is projected once and a clamp changes its first-layer projection by a delta,
so only the later layers run per (pair, spot, clamp value) (`sagefm.tl.clamp`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anndata as ad
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from sagefm._constants import Keys
from sagefm.data.inference import DEFAULT_CHUNK_SIZE, inference_chunks
from sagefm.data.slides import PreparedSlide, prepare_slide
from sagefm.errors import InputDataError
from sagefm.tl.clamp import clamp_predictions
from sagefm.tl.genes import measured_genes
from sagefm.tl.lr_pairs import lr_pairs, pair_label
from sagefm.tl.perturb_statistics import (
    clamp_range,
    data_effects,
    dense_columns,
    draw_null,
    enrichment,
    null_pvalues,
    pair_statistics,
)
from sagefm.train.datamodule import centring_mean

if TYPE_CHECKING:
    from sagefm.model import SageFM

logger = logging.getLogger(__name__)

#: centre spots sampled per slide by default: enough for stable per-pair statistics, and keeps
#: thousands of pairs within minutes on a CPU (cost is linear in spots × pairs)
DEFAULT_N_SPOTS = 100
#: null pairs drawn by default
DEFAULT_N_NULL = 300
#: ligand values clamped low and high: these quantiles of its expression over the slide
DEFAULT_QUANTILES = (0.05, 0.95)
#: the hint of errors naming genes a pair table cannot use
_PAIR_GENE_HINT = "; drop those pairs (a gene must be in the vocabulary and measured on the slide)"


@dataclass
class PerturbationResult:
    """Output of `perturbation_screen`.

    table: one row per tested pair (input order); null: the same columns for the null pairs;
    enrichment: AUROC / Mann–Whitney of L–R vs null effects; spot_effects: (n_spots, n_pairs) effects
    indexed by ``obs_names`` of the sampled spots, columns `pair_label`; data_enrichment: the same
    AUROC for the data's own linear answer to each pair (column ``data_effect``, `data_effects`),
    the baseline the model's enrichment is read against.
    """

    table: pd.DataFrame
    null: pd.DataFrame
    enrichment: dict[str, float]
    spot_effects: pd.DataFrame
    data_enrichment: dict[str, float] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)

    def summary(self, *, alpha: float = 0.05, top: int = 10) -> dict[str, Any]:
        """JSON-ready counts of significant pairs (by null and by spot-level test) and top pairs."""
        t = self.table
        by_null = t["null_fdr"] < alpha
        by_spots = t["fdr"] < alpha
        ranked = t.reindex(t["mean_effect"].abs().sort_values(ascending=False).index)
        columns = ["ligand", "receptor", "mean_effect", "ci_low", "ci_high", "frac_positive"]
        return {
            "n_pairs": len(t),
            "n_null": len(self.null),
            "n_spots": int(t["n_spots"].iloc[0]) if len(t) else 0,
            "alpha": alpha,
            "significant_vs_null": {
                "positive": int((by_null & (t["mean_effect"] > 0)).sum()),
                "negative": int((by_null & (t["mean_effect"] < 0)).sum()),
            },
            "significant_spot_test": {
                "positive": int((by_spots & (t["mean_effect"] > 0)).sum()),
                "negative": int((by_spots & (t["mean_effect"] < 0)).sum()),
            },
            "enrichment": self.enrichment,
            "data_enrichment": self.data_enrichment,
            "top_pairs": ranked[[*columns, "null_fdr", "fdr"]].head(top).to_dict("records"),
            "parameters": self.parameters,
        }


def _validated_pairs(
    pairs: pd.DataFrame | None,
    model: SageFM,
    adata: ad.AnnData,
    slide: PreparedSlide,
    resource: str,
) -> pd.DataFrame:
    """The pair table with ligand_index, receptor_index (vocabulary positions); errors name bad genes."""
    if pairs is None:
        table = lr_pairs(model, adata, resource=resource)
    else:
        if not isinstance(pairs, pd.DataFrame) or not {"ligand", "receptor"} <= set(pairs.columns):
            raise InputDataError("pairs must be a DataFrame with columns 'ligand' and 'receptor'")
        if pairs.empty:
            raise InputDataError("pairs is empty: give at least one ligand–receptor pair")
        table = pairs.reset_index(drop=True).copy()
        table["ligand"] = table["ligand"].astype(str)
        table["receptor"] = table["receptor"].astype(str)
    for role in ("ligand", "receptor"):
        table[f"{role}_index"] = measured_genes(
            model.vocabulary, list(table[role]), slide.observed, what=role, hint=_PAIR_GENE_HINT
        )
    return table


def _with_clamp_values(
    table: pd.DataFrame, slide: PreparedSlide, quantiles: tuple[float, float], user_pairs: bool
) -> pd.DataFrame:
    """The table with ligand_low, ligand_high; a pair whose ligand has low == high raises
    `InputDataError` (user pairs) or is dropped with a warning (default pairs)."""
    low, high = clamp_range(dense_columns(slide, table["ligand_index"].to_numpy()), quantiles)
    flat = high <= low
    if flat.any():
        names = sorted(set(table.loc[flat, "ligand"]))
        message = (
            f"{int(flat.sum())} pair(s) have a ligand whose {quantiles[0]:.0%} and "
            f"{quantiles[1]:.0%} quantiles on this slide are equal (e.g. never expressed), so "
            f"there is nothing to clamp: ligands {names[:20]}"
        )
        if user_pairs:
            raise InputDataError(message + "; drop those pairs or widen quantiles (e.g. (0, 1))")
        logger.warning("%s; dropped", message)
        table, low, high = table[~flat].reset_index(drop=True), low[~flat], high[~flat]
        if table.empty:
            raise InputDataError("no ligand varies on this slide: no pair can be perturbed")
    return table.assign(ligand_low=low, ligand_high=high)


def _effects(
    model: SageFM,
    slide: PreparedSlide,
    spots: np.ndarray,
    pairs: pd.DataFrame,
    *,
    hide_receptor_in_neighbours: bool,
    chunk_size: int,
    progress: bool,
) -> np.ndarray:
    """(n_spots, K) effects pred(high) − pred(low) of the K ``pairs`` (ligand_index,
    receptor_index, ligand_low, ligand_high) at the centres ``spots``."""
    effects = np.empty((spots.size, len(pairs)), dtype=np.float64)
    device = next(model.network.parameters()).device
    chunks = inference_chunks(
        slide,
        model.config.model,
        spots=spots,
        chunk_size=chunk_size,
        device=device,
        slide_mean=centring_mean(slide, model.config.model),
    )
    for chunk in tqdm(chunks, desc="perturb", unit="chunk", disable=not progress):
        predictions = clamp_predictions(
            model.network,
            chunk,
            pairs["ligand_index"].to_numpy(),
            pairs["receptor_index"].to_numpy(),
            pairs[["ligand_low", "ligand_high"]].to_numpy(),
            hide_receptor_in_neighbours=hide_receptor_in_neighbours,
            chunk_size=chunk_size,
        )
        effects[chunk.positions] = predictions[:, :, 1] - predictions[:, :, 0]
    return effects


def _sample_spots(n: int, n_spots: int | None, rng: np.random.Generator) -> np.ndarray:
    """``n_spots`` of ``n`` spot positions drawn without replacement, sorted (None: all)."""
    if n_spots is None or n_spots >= n:
        return np.arange(n)
    return np.sort(rng.choice(n, n_spots, replace=False))


def _check_options(n_spots: int | None, quantiles: tuple[float, float], n_null: int) -> None:
    lo_q, hi_q = quantiles
    if not 0.0 <= lo_q < hi_q <= 1.0:
        raise InputDataError(f"quantiles must satisfy 0 <= low < high <= 1, got {quantiles}")
    if n_spots is not None and n_spots < 3:
        raise InputDataError(f"n_spots must be at least 3 (or None for all), got {n_spots}")
    if n_null < 0:
        raise InputDataError(f"n_null must be >= 0, got {n_null}")


def _scored(
    table: pd.DataFrame, null: pd.DataFrame, effects: np.ndarray, symbols: np.ndarray
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]:
    """The pair and null tables with their statistics, and the enrichment, from (S, K + n_null)
    effects (the table's pairs first)."""
    k = len(table)
    null = null.assign(
        ligand=symbols[null["ligand_index"].to_numpy()],
        receptor=symbols[null["receptor_index"].to_numpy()],
    )
    table = pd.concat([table, pair_statistics(effects[:, :k])], axis=1)
    null = pd.concat([null, pair_statistics(effects[:, k:])], axis=1)
    table["null_pvalue"], table["null_fdr"] = null_pvalues(
        table["mean_effect"].to_numpy(), null["mean_effect"].to_numpy()
    )
    return table, null, enrichment(table["mean_effect"].to_numpy(), null["mean_effect"].to_numpy())


def perturbation_screen(
    model: SageFM,
    adata: ad.AnnData,
    pairs: pd.DataFrame | None = None,
    *,
    n_spots: int | None = DEFAULT_N_SPOTS,
    quantiles: tuple[float, float] = DEFAULT_QUANTILES,
    n_null: int = DEFAULT_N_NULL,
    resource: str = "consensus",
    hide_receptor_in_neighbours: bool = False,
    seed: int = 0,
    key_added: str = Keys.PERTURBATION,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: bool = False,
) -> PerturbationResult:
    """Clamp each pair's ligand in the neighbours low/high and score the receptor (module docstring).

    pairs: DataFrame with ``ligand``, ``receptor`` (symbols or Ensembl ids; other columns are kept);
    None = LIANA ``resource`` pairs testable on this slide (`sagefm.tl.lr_pairs`).
    n_spots: centres sampled with ``seed`` (None = every spot). quantiles: the low/high clamp values
    as quantiles of the ligand's log1p expression over the slide ((0, 1) = min/max).
    n_null: null pairs (0 = none; then null_pvalue is NaN and there is no enrichment).
    hide_receptor_in_neighbours: also hide the receptor in the 14 neighbours, so the prediction
    cannot lean on the receptor's own neighbourhood values (off by default: the issue's semantics).
    User-given pairs whose ligand has low == high raise `InputDataError` naming them; with the
    default pairs they are dropped with a warning. The table goes to ``adata.uns[key_added]``, the
    per-spot effects to ``adata.obsm[key_added]`` (NaN at spots not sampled), parameters and the
    enrichment to ``adata.uns["sagefm"]["perturb"]``.
    """
    _check_options(n_spots, quantiles, n_null)
    slide, _ = prepare_slide(adata, model.vocabulary, model.config.data)
    table = _validated_pairs(pairs, model, adata, slide, resource)
    table = _with_clamp_values(table, slide, quantiles, user_pairs=pairs is not None)
    rng = np.random.default_rng(seed)
    spots = _sample_spots(slide.n_spots, n_spots, rng)
    null = draw_null(table, slide, n_null, quantiles, rng) if n_null else table.iloc[:0]
    columns = ["ligand_index", "receptor_index", "ligand_low", "ligand_high"]
    everything = pd.concat([table[columns], null[columns]], ignore_index=True)
    logger.info(
        "perturbing %d pairs + %d null pairs at %d spots", len(table), len(null), spots.size
    )
    effects = _effects(
        model,
        slide,
        spots,
        everything,
        hide_receptor_in_neighbours=hide_receptor_in_neighbours,
        chunk_size=chunk_size,
        progress=progress,
    )
    table, null, scores = _scored(
        table, null[columns], effects, np.asarray(model.vocabulary.symbols)
    )
    data = data_effects(slide, everything)  # (K + n_null,), the table's pairs first
    table["data_effect"], null["data_effect"] = data[: len(table)], data[len(table) :]
    data_scores = enrichment(table["data_effect"].to_numpy(), null["data_effect"].to_numpy())
    parameters = {
        "n_spots": int(spots.size),
        "quantiles": list(quantiles),
        "n_null": len(null),
        "hide_receptor_in_neighbours": hide_receptor_in_neighbours,
        "seed": seed,
        "resource": resource if pairs is None else "user",
        "key_added": key_added,
    }
    spot_effects = pd.DataFrame(
        effects[:, : len(table)].astype(np.float32),
        index=adata.obs_names[spots],
        columns=[pair_label(a, b) for a, b in zip(table["ligand"], table["receptor"], strict=True)],
    )
    result = PerturbationResult(
        table, null, scores, spot_effects, parameters=parameters, data_enrichment=data_scores
    )
    _store(adata, result, key_added)
    return result


def _store(adata: ad.AnnData, result: PerturbationResult, key_added: str) -> None:
    """The screen in ``adata``: table in uns, per-spot effects in obsm, parameters under "sagefm"."""
    adata.uns[key_added] = result.table
    adata.obsm[key_added] = result.spot_effects.reindex(adata.obs_names)
    adata.uns.setdefault(Keys.UNS, {})["perturb"] = {
        **result.parameters,
        "enrichment": result.enrichment,
        "data_enrichment": result.data_enrichment,
    }


def perturb(
    model: SageFM,
    adata: ad.AnnData,
    pairs: pd.DataFrame | None = None,
    *,
    return_spot_effects: bool = False,
    **options: Any,
) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """Ligand→receptor effects, one row per pair (see `perturbation_screen` for ``options``).

    Columns: ligand, receptor (+ the input's other columns), ligand_index, receptor_index,
    ligand_low, ligand_high (clamp values, log1p), n_spots, mean_effect, sd_effect, ci_low, ci_high
    (95% t-interval of the mean), frac_positive, pvalue (Wilcoxon signed-rank over spots), fdr (BH
    over pairs), null_pvalue, null_fdr (against the matched null), data_effect (the data's own
    linear answer, `sagefm.tl.perturb_statistics.data_effects`). The enrichment over the null is
    in ``table.attrs["enrichment"]``, the data's in ``table.attrs["data_enrichment"]``. With
    ``return_spot_effects=True`` returns ``(table, spot_effects)``, spot_effects (n_spots,
    n_pairs) indexed by the sampled spots' ``obs_names``, columns `pair_label` in table order.
    """
    result = perturbation_screen(model, adata, pairs, **options)
    result.table.attrs["enrichment"] = result.enrichment
    result.table.attrs["data_enrichment"] = result.data_enrichment
    if return_spot_effects:
        return result.table, result.spot_effects
    return result.table
