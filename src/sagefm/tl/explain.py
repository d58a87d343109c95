r"""Which input genes drive the prediction of a target gene at the centre spot.

For each centre spot the target is hidden in the centre (as when it is imputed) and the model's
prediction of it is attributed to every input feature of the 15-node subgraph by torch autograd on
the network inputs (`SageGCN.node_features`: values and, with the mask indicator, visibility flags).
A gene's attribution sums its value and flag features; per spot it is split into the **centre**
(node 0) and the **neighbours** (summed over nodes 1..14), then averaged over spots.

Methods:

* ``"integrated_gradients"`` (Sundararajan et al. 2017): ``(x − x₀) · mean_α ∇f(x₀ + α(x − x₀))``
  over ``n_steps`` midpoints. Units: the target's log1p prediction. Completeness: a spot's
  attributions sum to ``f(x) − f(x₀)``. Baselines: ``"hidden"`` (x₀ = 0, every gene hidden
  everywhere: "what does seeing the tissue add") or ``"mean"`` (each observed gene at its slide mean,
  visibility unchanged: "what do deviations from the average spot add").
* ``"gradient"``: ``∂f/∂value_g`` at the input, averaged over spots: the sensitivity of the
  prediction per unit log1p of the gene (signed; no baseline).

The spatial skip path (when the model has one) sees the neighbours' values through their mean over
the neighbours that measure the gene; the number of such neighbours is held fixed along the
integration path, so the skip term scales with the values as every other input does.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Literal

import anndata as ad
import numpy as np
import pandas as pd
import torch

from sagefm.data.batches import SubgraphCollator
from sagefm.data.slides import PreparedSlide, prepare_slide
from sagefm.data.vocabulary import normalize_gene_key
from sagefm.errors import InputDataError
from sagefm.nn.gcn import SageGCN

if TYPE_CHECKING:
    from sagefm.model import SageFM

Method = Literal["integrated_gradients", "gradient"]
Baseline = Literal["hidden", "mean"]
Position = Literal["centre", "neighbours"]

#: subgraphs per forward/backward pass: bounds memory at ~chunk × 15 × 2V × 16 bytes
_CHUNK = 32


def _gene_positions(model: SageFM, genes: Sequence[str], observed: np.ndarray) -> np.ndarray:
    """Vocabulary positions of ``genes`` (symbols or Ensembl ids) measured on the slide."""
    vocab = model.vocabulary
    lookup = {normalize_gene_key(s): i for i, s in enumerate(vocab.symbols)}
    lookup.update({normalize_gene_key(g): i for i, g in enumerate(vocab.gene_ids) if g})
    index = np.array([lookup.get(normalize_gene_key(g), -1) for g in genes], dtype=np.int64)
    unknown = [g for g, i in zip(genes, index, strict=True) if i < 0]
    if unknown:
        raise InputDataError(f"genes not in the model's vocabulary: {unknown[:20]}")
    unseen = [g for g, i in zip(genes, index, strict=True) if not observed[i]]
    if unseen:
        raise InputDataError(
            f"genes not measured on this slide: {unseen[:20]}; the model can only be explained "
            "for genes the slide measures"
        )
    return index


def _spot_indices(
    adata: ad.AnnData, spots: Sequence[int] | Sequence[str] | np.ndarray | None
) -> np.ndarray:
    """Spot positions from None (all), integer positions, a boolean mask or obs names."""
    if spots is None:
        return np.arange(adata.n_obs)
    arr = np.asarray(spots)
    if arr.dtype == bool:
        if arr.shape != (adata.n_obs,):
            raise InputDataError(
                f"a boolean spot mask needs {adata.n_obs} entries, got {arr.shape}"
            )
        index = np.flatnonzero(arr)
    elif np.issubdtype(arr.dtype, np.integer):
        index = arr.astype(np.int64)
        if index.size and (index.min() < 0 or index.max() >= adata.n_obs):
            raise InputDataError(f"spot positions must be in [0, {adata.n_obs})")
    else:
        missing = ~np.isin(arr.astype(str), adata.obs_names)
        if missing.any():
            raise InputDataError(f"unknown spot names: {arr[missing][:5].tolist()}")
        index = adata.obs_names.get_indexer(arr.astype(str))
    if index.size == 0:
        raise InputDataError("no spots selected")
    return index


def _subgraph_inputs(
    network: SageGCN, slide: PreparedSlide, spots: np.ndarray, config: SageFM
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]]:
    """Per chunk of centres: node features (b, N, F) (node 0 = centre), adj, visibility (b, N, V)."""
    collate = SubgraphCollator([slide], config.config.model, mask_fraction=None)
    for start in range(0, spots.size, _CHUNK):
        batch = collate([(0, int(i), 0) for i in spots[start : start + _CHUNK]])
        neighbours = network.node_features(batch.values, batch.visible)[batch.node_index[:, 1:]]
        centre = network.node_features(batch.centre_values, batch.centre_visible)
        features = torch.cat([centre[:, None], neighbours], dim=1)
        visible = torch.cat(
            [batch.centre_visible[:, None], batch.visible[batch.node_index[:, 1:]]], dim=1
        )
        yield features, batch.adj, visible


def _predict_target(
    network: SageGCN,
    features: torch.Tensor,
    adj: torch.Tensor | None,
    counts: torch.Tensor,
    target: int,
) -> torch.Tensor:
    """The target's prediction (b,) at each centre from node features (b, N, F).

    `SageGCN.forward` takes values and visibility and builds the features itself; attribution
    needs the features as the differentiable leaf, so this composes the same public pieces.
    """
    projected = network.project_features(features)  # (b, N, h0)
    if adj is None:
        projected = projected.mean(dim=1, keepdim=True)
    embedding = network.encode(projected, adj)
    skip = None
    if network.skip_weight is not None:
        skip = features[:, 1:, : network.config.n_genes].sum(dim=1) / counts
    return network.reconstruct(embedding, skip)[:, target]


def _hide(features: torch.Tensor, gene: int, n_genes: int, indicator: bool) -> torch.Tensor:
    """Features with ``gene`` hidden in the centre (value and flag 0)."""
    out = features.clone()
    out[:, 0, gene] = 0.0
    if indicator:
        out[:, 0, n_genes + gene] = 0.0
    return out


def _attributions(
    model: SageFM,
    adata: ad.AnnData,
    targets: np.ndarray,
    spots: np.ndarray,
    *,
    method: Method,
    baseline: Baseline,
    n_steps: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean attributions (T, 2, V) (position 0 centre, 1 neighbours), observed (V,), f(x) − f(x₀) (T,)."""
    if method not in ("integrated_gradients", "gradient"):
        raise InputDataError(f"method must be 'integrated_gradients' or 'gradient', got {method!r}")
    if baseline not in ("hidden", "mean"):
        raise InputDataError(f"baseline must be 'hidden' or 'mean', got {baseline!r}")
    if n_steps < 1:
        raise InputDataError(f"n_steps must be >= 1, got {n_steps}")
    network = model.network
    n_genes, indicator = network.config.n_genes, network.config.input_has_visibility
    slide, _ = prepare_slide(adata, model.vocabulary, model.config.data)
    gene_mean = torch.as_tensor(np.asarray(slide.values.mean(axis=0)).ravel(), dtype=torch.float32)
    total = np.zeros((targets.size, 2, n_genes))
    gap = np.zeros(targets.size)
    for features, adj, visible in _subgraph_inputs(network, slide, spots, model):
        counts = visible[:, 1:].sum(dim=1).clamp(min=1.0)  # (b, V) neighbours measuring each gene
        for t, target in enumerate(targets.tolist()):
            x = _hide(features, target, n_genes, indicator)
            if method == "gradient":
                alphas, x0 = [1.0], torch.zeros_like(x)
            else:
                alphas = ((np.arange(n_steps) + 0.5) / n_steps).tolist()
                x0 = torch.zeros_like(x)
                if baseline == "mean":
                    x0[..., :n_genes] = gene_mean * (x[..., n_genes:] if indicator else 1.0)
                    if indicator:
                        x0[..., n_genes:] = x[..., n_genes:]
                    x0 = _hide(x0, target, n_genes, indicator)
            grad = torch.zeros_like(x)
            for alpha in alphas:
                point = (x0 + alpha * (x - x0)).requires_grad_(True)
                out = _predict_target(network, point, adj, counts, target)
                (g,) = torch.autograd.grad(out.sum(), point)
                grad += g / len(alphas)
            if method == "gradient":
                # sensitivity to each gene's value; a hidden value is not an input
                per_feature = grad[..., :n_genes] * visible
                per_feature[:, 0, target] = 0.0
            else:
                per_feature = grad * (x - x0)
                per_feature = per_feature[..., :n_genes] + (
                    per_feature[..., n_genes:] if indicator else 0.0
                )
                with torch.no_grad():
                    gap[t] += float(
                        (
                            _predict_target(network, x, adj, counts, target)
                            - _predict_target(network, x0, adj, counts, target)
                        ).sum()
                    )
            total[t, 0] += per_feature[:, 0].sum(dim=0).detach().numpy()
            total[t, 1] += per_feature[:, 1:].sum(dim=(0, 1)).detach().numpy()
    return total / spots.size, slide.observed, gap / spots.size


def explain(
    model: SageFM,
    adata: ad.AnnData,
    target: str,
    *,
    spots: Sequence[int] | Sequence[str] | np.ndarray | None = None,
    method: Method = "integrated_gradients",
    baseline: Baseline = "hidden",
    n_steps: int = 32,
) -> pd.DataFrame:
    """Input genes ranked by their attribution to ``target``'s prediction at the centre.

    spots: centres to average over (None = all; positions, a boolean mask or obs names).
    Returns one row per (measured vocabulary gene, position) with columns ``gene``, ``position``
    ("centre" / "neighbours"), ``attribution`` (mean over spots; see the module docstring for units)
    and ``rank`` (1 = largest |attribution| within the position), sorted by position then rank.
    The target itself is hidden in the centre, so its centre attribution is 0. ``attrs`` holds
    ``target``, ``method``, ``n_spots`` and, for integrated gradients, ``prediction_gap``: the mean
    f(x) − f(x₀), which the attributions of a spot sum to.
    """
    slide_observed = model.vocabulary.map(adata).observed
    (index,) = _gene_positions(model, [target], slide_observed)
    spot_index = _spot_indices(adata, spots)
    scores, observed, gap = _attributions(
        model,
        adata,
        np.array([index]),
        spot_index,
        method=method,
        baseline=baseline,
        n_steps=n_steps,
    )
    genes = np.flatnonzero(observed)
    symbols = np.asarray(model.vocabulary.symbols)
    parts = []
    for p, position in enumerate(("centre", "neighbours")):
        part = pd.DataFrame(
            {"gene": symbols[genes], "position": position, "attribution": scores[0, p, genes]}
        )
        part = part.reindex(part["attribution"].abs().sort_values(ascending=False).index)
        part["rank"] = np.arange(1, len(part) + 1)
        parts.append(part)
    table = pd.concat(parts, ignore_index=True)
    table.attrs.update(
        target=model.vocabulary.symbols[index],
        method=method,
        baseline=baseline if method == "integrated_gradients" else None,
        n_spots=int(spot_index.size),
        prediction_gap=float(gap[0]) if method == "integrated_gradients" else None,
    )
    return table


def dependency_matrix(
    model: SageFM,
    adata: ad.AnnData,
    genes: Sequence[str],
    *,
    position: Position = "neighbours",
    spots: Sequence[int] | Sequence[str] | np.ndarray | None = None,
    method: Method = "gradient",
    baseline: Baseline = "hidden",
    n_steps: int = 16,
) -> pd.DataFrame:
    """Gene × gene dependencies: row = input gene (in the ``position`` nodes), column = output gene.

    Entry (g, r): the mean attribution of input g to the centre prediction of r, r hidden in the
    centre (so the centre diagonal is 0). The default ``"gradient"`` gives ∂pred_r/∂x_g per unit
    log1p, summed over the neighbours for ``position="neighbours"``.
    """
    if position not in ("centre", "neighbours"):
        raise InputDataError(f"position must be 'centre' or 'neighbours', got {position!r}")
    if len(genes) == 0 or len(set(genes)) != len(genes):
        raise InputDataError("give a non-empty list of distinct genes")
    index = _gene_positions(model, list(genes), model.vocabulary.map(adata).observed)
    scores, _, _ = _attributions(
        model,
        adata,
        index,
        _spot_indices(adata, spots),
        method=method,
        baseline=baseline,
        n_steps=n_steps,
    )
    p = 0 if position == "centre" else 1
    names = [model.vocabulary.symbols[i] for i in index]
    matrix = pd.DataFrame(scores[:, p][:, index].T, index=names, columns=names)
    matrix.index.name, matrix.columns.name = f"input ({position})", "output (centre)"
    return matrix
