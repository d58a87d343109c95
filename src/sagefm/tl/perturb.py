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
gene pairs matched on expression and on the receptor: each null pair keeps the receptor of a random
tested pair and replaces its ligand by a random gene from the same decile of slide-mean expression
(never a gene the table pairs with that receptor). ``null_pvalue`` is the share of null pairs with a
|mean effect| at least as large (+1 smoothing), and the **enrichment** of L–R over null effects is an
AUROC with a one-sided Mann–Whitney p-value.

Speed. The first GCN layer is linear, so every spot is projected once; a clamp changes each
neighbour's projection by ``(v − x_g)·W[:, g]`` (+ ``W[:, V+g]`` if ``g`` was hidden) and hiding the
receptor changes the centre's by ``−x_r·W[:, r] − W[:, V+r]``. Only the later layers run per
(pair, spot, clamp value), many per call, and only the receptor's output unit is read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.stats
import torch
from tqdm.auto import tqdm

from sagefm._constants import Keys
from sagefm.data.batches import SubgraphBatch, SubgraphCollator
from sagefm.data.slides import PreparedSlide, prepare_slide
from sagefm.data.vocabulary import normalize_gene_key
from sagefm.errors import InputDataError
from sagefm.nn.gcn import SageGCN
from sagefm.tl.lr_pairs import lr_pairs

if TYPE_CHECKING:
    from sagefm.model import SageFM

logger = logging.getLogger(__name__)

#: centre spots sampled per slide by default: enough for stable per-pair statistics, and keeps
#: thousands of pairs within minutes on a CPU (cost is linear in spots × pairs)
DEFAULT_N_SPOTS = 100
#: null pairs drawn by default
DEFAULT_N_NULL = 300
#: (pair, spot, clamp value) items per forward call: bounds memory at ~items × 15 × h0 × 12 bytes
DEFAULT_BATCH_ITEMS = 1024
#: decile bins for expression matching of null ligands
_N_EXPRESSION_BINS = 10


def pair_label(ligand: str, receptor: str) -> str:
    """Column name of a pair in the per-spot effect table: ``"LIGAND->RECEPTOR"``."""
    return f"{ligand}->{receptor}"


@dataclass
class PerturbationResult:
    """Output of `perturbation_screen`.

    table: one row per tested pair (input order); null: the same columns for the null pairs;
    enrichment: AUROC / Mann–Whitney of L–R vs null effects; spot_effects: (n_spots, n_pairs) effects
    indexed by ``obs_names`` of the sampled spots, columns `pair_label`.
    """

    table: pd.DataFrame
    null: pd.DataFrame
    enrichment: dict[str, float]
    spot_effects: pd.DataFrame
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
            "top_pairs": ranked[[*columns, "null_fdr", "fdr"]].head(top).to_dict("records"),
            "parameters": self.parameters,
        }


@torch.inference_mode()
def clamp_predictions(
    network: SageGCN,
    batch: SubgraphBatch,
    ligands: np.ndarray,
    receptors: np.ndarray,
    clamp_values: np.ndarray,
    *,
    hide_receptor_in_neighbours: bool = False,
    batch_items: int = DEFAULT_BATCH_ITEMS,
    progress: bool = False,
) -> np.ndarray:
    """Receptor predictions at the centres with the ligand clamped in the neighbours.

    batch: B subgraphs as seen (no masks); ligands, receptors: (K,) vocabulary positions;
    clamp_values: (K, C) values the ligand is set to in all neighbours (C = 2: low, high).
    Returns (B, K, C) predictions of ``receptors[k]`` at each centre, the receptor hidden there
    (and in the neighbours with ``hide_receptor_in_neighbours``, unless it is the clamped ligand).
    Uses the linearity of the first layer (module docstring); equals `SageGCN.forward` on the
    perturbed inputs (tests/tl/test_perturb.py).
    """
    w_value, w_visible = network.input_weights()  # (h0, V) each; see SageGCN.input_weights
    lig = torch.as_tensor(ligands, dtype=torch.long)
    rec = torch.as_tensor(receptors, dtype=torch.long)
    values_to = torch.as_tensor(clamp_values, dtype=w_value.dtype)  # (K, C)
    n_items = values_to.shape[1]
    projected = torch.cat(
        [
            network.project(batch.values[i : i + 4096], batch.visible[i : i + 4096])
            for i in range(0, batch.values.shape[0], 4096)
        ]
    )  # (U, h0)
    centre_projected = network.project(batch.centre_values, batch.centre_visible)  # (B, h0)
    neighbours = batch.node_index[:, 1:]  # (B, N-1)
    lig_seen = batch.values[:, lig][neighbours]  # (B, N-1, K), 0 where hidden
    lig_hidden = 1.0 - batch.visible[:, lig][neighbours]  # (B, N-1, K)
    rec_seen = batch.centre_values[:, rec]  # (B, K)
    rec_visible = batch.centre_visible[:, rec]  # (B, K)
    # receptor in the neighbours, to hide there too (not when it is the clamped ligand itself)
    hide_nb = float(hide_receptor_in_neighbours) * (lig != rec).to(w_value.dtype)  # (K,)
    rec_nb_seen = batch.values[:, rec][neighbours] * hide_nb  # (B, N-1, K)
    rec_nb_visible = batch.visible[:, rec][neighbours] * hide_nb
    w_lig, w_rec = w_value[:, lig].T, w_value[:, rec].T  # (K, h0)
    if w_visible is not None:
        w_lig_flag, w_rec_flag = w_visible[:, lig].T, w_visible[:, rec].T
    else:
        w_lig_flag = w_rec_flag = torch.zeros_like(w_lig)
    head_w, head_b = network.head.weight[rec], network.head.bias[rec]  # (K, h_last), (K,)
    # The spatial skip path adds skip_weight[r] * (r's mean over the neighbours) to the logit; the
    # clamp changes that mean only when the ligand is the receptor itself (then every neighbour = v).
    skip = torch.zeros(batch.node_index.shape[0], len(ligands), n_items)  # (B, K, C)
    if network.skip_weight is not None:
        mean = network.neighbour_mean(batch.values, batch.visible, batch.node_index)[:, rec]
        mean = mean * (1.0 - hide_nb)  # a receptor hidden in every neighbour has mean 0
        same = (lig == rec)[None, :, None]
        skip = network.skip_weight[rec][None, :, None] * torch.where(
            same, values_to[None], mean[:, :, None]
        )

    n_centres, n_nodes = batch.node_index.shape
    n_pairs = len(ligands)
    out = np.empty((n_centres, n_pairs, n_items), dtype=np.float32)
    spots_per_call = max(1, min(n_centres, batch_items // n_items))
    pairs_per_call = max(1, batch_items // (n_items * spots_per_call))
    chunks = [
        (slice(b, b + spots_per_call), slice(k, k + pairs_per_call))
        for b in range(0, n_centres, spots_per_call)
        for k in range(0, n_pairs, pairs_per_call)
    ]
    for sb, sk in tqdm(chunks, desc="perturb", unit="call", disable=not progress):
        # the centre as seen (as in `SageGCN.forward`), then its neighbours: (b, N, h0)
        base = torch.cat([centre_projected[sb, None], projected[batch.node_index[sb, 1:]]], dim=1)
        b, k = base.shape[0], w_lig[sk].shape[0]
        # neighbours: (v - x_g) W[:, g] + hidden_g W[:, V+g]            -> (b, k, C, N-1, h0)
        coef = values_to[sk].T[None, None] - lig_seen[sb][:, :, sk].unsqueeze(2)  # (b, N-1, C, k)
        nb = coef.permute(0, 3, 2, 1).unsqueeze(-1) * w_lig[sk][None, :, None, None, :]
        flag = lig_hidden[sb][:, :, sk].permute(0, 2, 1)[:, :, None, :, None]  # (b, k, 1, N-1, 1)
        nb = nb + flag * w_lig_flag[sk][None, :, None, None, :]
        hidden_rec = -(
            rec_nb_seen[sb][:, :, sk].permute(0, 2, 1)[:, :, None, :, None]
            * w_rec[sk][None, :, None, None, :]
            + rec_nb_visible[sb][:, :, sk].permute(0, 2, 1)[:, :, None, :, None]
            * w_rec_flag[sk][None, :, None, None, :]
        )
        nb = nb + hidden_rec
        # centre: hide the receptor, -x_r W[:, r] - visible_r W[:, V+r]   -> (b, k, h0)
        centre = -(
            rec_seen[sb][:, sk, None] * w_rec[sk][None]
            + rec_visible[sb][:, sk, None] * w_rec_flag[sk][None]
        )
        centre = centre[:, :, None, None, :].expand(b, k, n_items, 1, -1)
        delta = torch.cat([centre, nb], dim=3)  # (b, k, C, N, h0)
        h = (base[:, None, None] + delta).reshape(b * k * n_items, n_nodes, -1)
        adj = batch.adj
        if adj is None:
            h = h.mean(dim=1, keepdim=True)  # complete graph: encode takes the node mean
        else:
            adj = adj[sb][:, None, None].expand(b, k, n_items, n_nodes, n_nodes)
            adj = adj.reshape(b * k * n_items, n_nodes, n_nodes)
        embedding = network.encode(h, adj).reshape(b, k, n_items, -1)
        logits = (embedding * head_w[sk][None, :, None, :]).sum(-1) + head_b[sk][None, :, None]
        logits = logits + skip[sb, sk]
        out[sb, sk] = network.out_act(logits).cpu().numpy()
    return out


def _resolve_genes(
    names: pd.Series, model: SageFM, observed: np.ndarray, column: str
) -> np.ndarray:
    """Vocabulary positions of gene names (symbol or Ensembl id); InputDataError naming bad ones."""
    vocab = model.vocabulary
    lookup = {normalize_gene_key(s): i for i, s in enumerate(vocab.symbols)}
    lookup.update({normalize_gene_key(g): i for i, g in enumerate(vocab.gene_ids) if g})
    index = np.array([lookup.get(normalize_gene_key(n), -1) for n in names], dtype=np.int64)
    unknown = sorted(set(names[index < 0].astype(str)))
    if unknown:
        raise InputDataError(
            f"{len(unknown)} {column} gene(s) are not in the model's vocabulary of {len(vocab)} "
            f"genes: {unknown[:20]}; drop those pairs (only vocabulary genes can be perturbed)"
        )
    unseen = sorted(set(names[~observed[index]].astype(str)))
    if unseen:
        raise InputDataError(
            f"{len(unseen)} {column} gene(s) are not measured on this slide: {unseen[:20]}; "
            "drop those pairs (a gene the slide does not measure has no expression to clamp or read)"
        )
    return index


def _clamp_range(
    values: np.ndarray, quantiles: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene low and high clamp values: quantiles over spots of (n_spots, G) log1p values."""
    low, high = np.quantile(values, quantiles, axis=0)
    return low.astype(np.float32), high.astype(np.float32)


def _dense_columns(slide: PreparedSlide, genes: np.ndarray) -> np.ndarray:
    return np.asarray(slide.values[:, genes].toarray(), dtype=np.float64)


def _draw_null(
    table: pd.DataFrame,
    slide: PreparedSlide,
    n_null: int,
    quantiles: tuple[float, float],
    rng: np.random.Generator,
) -> pd.DataFrame:
    """Null pairs: a tested pair's receptor with a random ligand of the same expression decile.

    Candidates are observed vocabulary genes with a non-degenerate clamp range, excluding the
    receptor itself and every gene the table pairs with that receptor. Returns ligand_index,
    receptor_index, ligand_low, ligand_high (at most ``n_null`` distinct pairs).
    """
    genes = np.flatnonzero(slide.observed)
    dense = _dense_columns(slide, genes)
    low, high = _clamp_range(dense, quantiles)
    usable = high > low
    genes, mean, low, high = genes[usable], dense[:, usable].mean(axis=0), low[usable], high[usable]
    edges = np.quantile(mean, np.linspace(0, 1, _N_EXPRESSION_BINS + 1)[1:-1])
    pools = [genes[np.searchsorted(edges, mean, side="right") == b] for b in range(edges.size + 1)]
    ligand_mean = _dense_columns(slide, table["ligand_index"].to_numpy()).mean(axis=0)
    ligand_bin = np.searchsorted(edges, ligand_mean, side="right")
    partners = table.groupby("receptor_index")["ligand_index"].agg(set).to_dict()
    rows: dict[tuple[int, int], None] = {}
    for _ in range(20 * n_null):  # rejections and repeats happen; give up after 20 draws per pair
        if len(rows) == n_null:
            break
        j = int(rng.integers(len(table)))
        receptor = int(table["receptor_index"].iloc[j])
        pool = pools[ligand_bin[j]]
        ligand = int(rng.choice(pool)) if pool.size else receptor
        if ligand != receptor and ligand not in partners[receptor]:
            rows[(ligand, receptor)] = None
    null = pd.DataFrame(list(rows), columns=["ligand_index", "receptor_index"], dtype=np.int64)
    at = np.searchsorted(genes, null["ligand_index"].to_numpy())
    null["ligand_low"], null["ligand_high"] = low[at], high[at]
    return null


def _pair_statistics(effects: np.ndarray) -> pd.DataFrame:
    """Per-pair statistics of (n_spots, K) effects: mean, sd, 95% t-interval, share > 0, Wilcoxon p."""
    n = effects.shape[0]
    mean = effects.mean(axis=0)
    sd = effects.std(axis=0, ddof=1)
    half = scipy.stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n)
    with np.errstate(invalid="ignore", divide="ignore"):
        pvalue = scipy.stats.wilcoxon(effects, axis=0).pvalue
    return pd.DataFrame(
        {
            "n_spots": n,
            "mean_effect": mean,
            "sd_effect": sd,
            "ci_low": mean - half,
            "ci_high": mean + half,
            "frac_positive": (effects > 0).mean(axis=0),
            "pvalue": np.nan_to_num(pvalue, nan=1.0),  # all-zero effects: no evidence
        }
    )


def _enrichment(lr: np.ndarray, null: np.ndarray) -> dict[str, float]:
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
    table["ligand_index"] = _resolve_genes(table["ligand"], model, slide.observed, "ligand")
    table["receptor_index"] = _resolve_genes(table["receptor"], model, slide.observed, "receptor")
    return table


def perturbation_screen(
    model: SageFM,
    adata: ad.AnnData,
    pairs: pd.DataFrame | None = None,
    *,
    n_spots: int | None = DEFAULT_N_SPOTS,
    quantiles: tuple[float, float] = (0.05, 0.95),
    n_null: int = DEFAULT_N_NULL,
    resource: str = "consensus",
    hide_receptor_in_neighbours: bool = False,
    seed: int = 0,
    batch_items: int = DEFAULT_BATCH_ITEMS,
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
    default pairs they are dropped with a warning. Records parameters and the enrichment in
    ``adata.uns["sagefm"]["perturb"]``.
    """
    lo_q, hi_q = quantiles
    if not 0.0 <= lo_q < hi_q <= 1.0:
        raise InputDataError(f"quantiles must satisfy 0 <= low < high <= 1, got {quantiles}")
    if n_spots is not None and n_spots < 3:
        raise InputDataError(f"n_spots must be at least 3 (or None for all), got {n_spots}")
    if n_null < 0:
        raise InputDataError(f"n_null must be >= 0, got {n_null}")
    slide, _ = prepare_slide(adata, model.vocabulary, model.config.data)
    table = _validated_pairs(pairs, model, adata, slide, resource)
    low, high = _clamp_range(_dense_columns(slide, table["ligand_index"].to_numpy()), quantiles)
    flat = high <= low
    if flat.any():
        names = sorted(set(table.loc[flat, "ligand"]))
        message = (
            f"{int(flat.sum())} pair(s) have a ligand whose {lo_q:.0%} and {hi_q:.0%} quantiles on "
            f"this slide are equal (e.g. never expressed), so there is nothing to clamp: ligands "
            f"{names[:20]}"
        )
        if pairs is not None:
            raise InputDataError(message + "; drop those pairs or widen quantiles (e.g. (0, 1))")
        logger.warning("%s; dropped", message)
        table, low, high = table[~flat].reset_index(drop=True), low[~flat], high[~flat]
        if table.empty:
            raise InputDataError("no ligand varies on this slide: no pair can be perturbed")
    table["ligand_low"], table["ligand_high"] = low, high

    rng = np.random.default_rng(seed)
    n = slide.n_spots
    spots = (
        np.arange(n) if n_spots is None or n_spots >= n else np.sort(rng.choice(n, n_spots, False))
    )
    null = _draw_null(table, slide, n_null, quantiles, rng) if n_null else table.iloc[:0]
    everything = pd.concat(
        [table[["ligand_index", "receptor_index", "ligand_low", "ligand_high"]], null],
        ignore_index=True,
    )
    collate = SubgraphCollator([slide], model.config.model, mask_fraction=None)
    batch = collate([(0, int(i), 0) for i in spots]).to(next(model.network.parameters()).device)
    logger.info(
        "perturbing %d pairs + %d null pairs at %d spots", len(table), len(null), spots.size
    )
    predictions = clamp_predictions(
        model.network,
        batch,
        everything["ligand_index"].to_numpy(),
        everything["receptor_index"].to_numpy(),
        everything[["ligand_low", "ligand_high"]].to_numpy(),
        hide_receptor_in_neighbours=hide_receptor_in_neighbours,
        batch_items=batch_items,
        progress=progress,
    )
    effects = (predictions[:, :, 1] - predictions[:, :, 0]).astype(np.float64)  # (S, K + n_null)
    k = len(table)
    symbols = np.asarray(model.vocabulary.symbols)
    null = null.assign(
        ligand=symbols[null["ligand_index"].to_numpy()],
        receptor=symbols[null["receptor_index"].to_numpy()],
    )
    table = pd.concat([table, _pair_statistics(effects[:, :k])], axis=1)
    null = pd.concat([null, _pair_statistics(effects[:, k:])], axis=1)
    for part in (table, null):
        part["fdr"] = scipy.stats.false_discovery_control(part["pvalue"], method="bh")
    null_abs = np.sort(null["mean_effect"].abs().to_numpy())
    if null_abs.size:
        at_least = null_abs.size - np.searchsorted(null_abs, table["mean_effect"].abs(), "left")
        table["null_pvalue"] = (1.0 + at_least) / (1.0 + null_abs.size)
        table["null_fdr"] = scipy.stats.false_discovery_control(table["null_pvalue"], method="bh")
    else:
        table["null_pvalue"] = table["null_fdr"] = np.nan
    enrichment = _enrichment(table["mean_effect"].to_numpy(), null["mean_effect"].to_numpy())
    parameters = {
        "n_spots": int(spots.size),
        "quantiles": [lo_q, hi_q],
        "n_null": len(null),
        "hide_receptor_in_neighbours": hide_receptor_in_neighbours,
        "seed": seed,
        "resource": resource if pairs is None else "user",
    }
    adata.uns.setdefault(Keys.UNS, {})["perturb"] = {**parameters, "enrichment": enrichment}
    spot_effects = pd.DataFrame(
        effects[:, :k].astype(np.float32),
        index=adata.obs_names[spots],
        columns=[pair_label(a, b) for a, b in zip(table["ligand"], table["receptor"], strict=True)],
    )
    return PerturbationResult(table, null, enrichment, spot_effects, parameters)


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
    over pairs), null_pvalue, null_fdr (against the expression-matched null). The enrichment over the
    null is in ``table.attrs["enrichment"]``. With ``return_spot_effects=True`` returns
    ``(table, spot_effects)``, spot_effects (n_spots, n_pairs) indexed by the sampled spots'
    ``obs_names``, columns `pair_label` in table order.
    """
    result = perturbation_screen(model, adata, pairs, **options)
    result.table.attrs["enrichment"] = result.enrichment
    if return_spot_effects:
        return result.table, result.spot_effects
    return result.table
