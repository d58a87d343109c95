r"""Which input genes drive the prediction of a target gene at the centre spot.

For each centre spot the target is hidden in the centre (as when it is imputed) and the model's
prediction of it is attributed to every input feature of the 15-node subgraph by torch autograd on
the network inputs (the shown values and visibility flags of every node, `SageGCN.project`).
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
the neighbours that measure the gene (with ``ModelConfig.skip_centring``, its departure from the
input's mean, which scales with the visibility flags); the number of such neighbours is held fixed
along the integration path, so the skip term scales with the inputs as every other input does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import anndata as ad
import numpy as np
import pandas as pd
import torch

from sagefm._constants import Keys
from sagefm.data.inference import DEFAULT_CHUNK_SIZE, InferenceChunk, inference_chunks
from sagefm.data.slides import prepare_slide
from sagefm.errors import InputDataError
from sagefm.nn.gcn import SageGCN
from sagefm.tl.genes import measured_genes
from sagefm.train.datamodule import centring_mean

if TYPE_CHECKING:
    from sagefm.model import SageFM

Method = Literal["integrated_gradients", "gradient"]
Baseline = Literal["hidden", "mean"]
Position = Literal["centre", "neighbours"]

#: the hint of errors naming genes that cannot be explained
_GENE_HINT = "; the model can only be explained for vocabulary genes the slide measures"


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


def _predict_target(
    network: SageGCN,
    values: torch.Tensor,
    visible: torch.Tensor,
    seen: torch.Tensor,
    chunk: InferenceChunk,
    target: int,
) -> torch.Tensor:
    """The target's prediction (b,) at each centre from node inputs (b, N, V): shown values and
    visibility, the differentiable leaves. ``seen`` (b, N, V), the slide's visibility, counts the
    neighbours of the skip path's mean and gives the share of the vocabulary the centre shows
    (both held fixed along the integration path); ``chunk`` gives
    the adjacency and the slide's statistics."""
    b, n, v = values.shape
    flat = values.reshape(b * n, v)
    library = network.visible_library(flat, chunk.slide_library)  # (b N,)
    slide_mean = chunk.slide_mean
    projected = network.project(
        flat, visible.reshape(b * n, v), library=library, slide_mean=slide_mean
    )
    embedding = network.encode(projected.reshape(b, n, -1), chunk.adj)
    nodes = torch.arange(b * n, device=values.device).reshape(b, n)
    column = [target]  # (b N, 1): neighbour_mean takes (U, G)
    skip, panel_mean = network.skip_inputs(
        flat[:, column],
        visible.reshape(b * n, v)[:, column],
        nodes,
        library=library,
        slide_mean=slide_mean,
        genes=torch.tensor(column, device=values.device),
        counted=seen.reshape(b * n, v)[:, column],
    )
    centre_library = library.reshape(b, n)[:, 0]
    return network.reconstruct(
        embedding,
        None if skip is None else skip[:, 0],
        genes=torch.tensor(target),
        library=centre_library,
        slide_mean=slide_mean,
        slide_library=chunk.slide_library,
        shown=(seen[:, 0].sum(-1) - seen[:, 0, target]) / v,  # the centre, its target hidden
        panel_mean=None if panel_mean is None else panel_mean[:, 0],
    )


def _hidden_at_centre(
    values: torch.Tensor, visible: torch.Tensor, gene: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Node inputs (b, N, V) with ``gene`` hidden in the centre (value and flag 0)."""
    values, visible = values.clone(), visible.clone()
    values[:, 0, gene] = 0.0
    visible[:, 0, gene] = 0.0
    return values, visible


def _baseline(
    values: torch.Tensor,
    visible: torch.Tensor,
    gene_mean: torch.Tensor,
    target: int,
    baseline: Baseline,
    indicator: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x₀ (module docstring): every gene hidden, or each gene at its slide mean, visibility kept."""
    if baseline == "hidden":
        return torch.zeros_like(values), torch.zeros_like(visible)
    mean_values = gene_mean * (visible if indicator else 1.0)
    return _hidden_at_centre(mean_values.expand_as(values), visible, target)


def _chunk_attributions(
    network: SageGCN,
    seen_values: torch.Tensor,
    seen: torch.Tensor,
    chunk: InferenceChunk,
    target: int,
    baseline: tuple[torch.Tensor, torch.Tensor] | None,
    n_steps: int,
) -> tuple[torch.Tensor, float]:
    """Attributions (b, N, V) of one target over a chunk's subgraphs, and the summed f(x) − f(x₀).

    ``baseline`` None: the gradient method (sensitivity to each visible value); else x₀ of
    integrated gradients.
    """
    x = _hidden_at_centre(seen_values, seen, target)
    x0 = baseline if baseline is not None else (torch.zeros_like(x[0]), torch.zeros_like(x[1]))
    alphas = [1.0] if baseline is None else ((np.arange(n_steps) + 0.5) / n_steps).tolist()
    grads = [torch.zeros_like(x[0]), torch.zeros_like(x[1])]
    for alpha in alphas:
        point = [(a0 + alpha * (a - a0)).requires_grad_(True) for a, a0 in zip(x, x0, strict=True)]
        out = _predict_target(network, point[0], point[1], seen, chunk, target)
        parts = torch.autograd.grad(out.sum(), point, allow_unused=True)
        for grad, part in zip(grads, parts, strict=True):
            if part is not None:  # the visibility is unused without a visibility term
                grad += part / len(alphas)
    if baseline is None:  # sensitivity to each gene's value; a hidden value is not an input
        per_feature = grads[0] * seen
        per_feature[:, 0, target] = 0.0
        return per_feature, 0.0
    per_feature = grads[0] * (x[0] - x0[0]) + grads[1] * (x[1] - x0[1])
    with torch.no_grad():
        gap = _predict_target(network, *x, seen, chunk, target) - _predict_target(
            network, *x0, seen, chunk, target
        )
    return per_feature, float(gap.sum())


def _attributions(
    model: SageFM,
    adata: ad.AnnData,
    targets: np.ndarray,
    spots: np.ndarray,
    *,
    method: Method,
    baseline: Baseline,
    n_steps: int,
    chunk_size: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean attributions (T, 2, V) (position 0 centre, 1 neighbours), observed (V,), f(x) − f(x₀) (T,)."""
    if method not in ("integrated_gradients", "gradient"):
        raise InputDataError(f"method must be 'integrated_gradients' or 'gradient', got {method!r}")
    if baseline not in ("hidden", "mean"):
        raise InputDataError(f"baseline must be 'hidden' or 'mean', got {baseline!r}")
    if n_steps < 1:
        raise InputDataError(f"n_steps must be >= 1, got {n_steps}")
    network = model.network
    indicator = network.config.input_has_visibility
    slide, _ = prepare_slide(adata, model.vocabulary, model.config.data)
    gene_mean = torch.as_tensor(np.asarray(slide.values.mean(axis=0)).ravel(), dtype=torch.float32)
    total = np.zeros((targets.size, 2, network.config.n_genes))
    gap = np.zeros(targets.size)
    chunks = inference_chunks(
        slide,
        model.config.model,
        spots=spots,
        chunk_size=chunk_size,
        slide_mean=centring_mean(slide, model.config.model),
    )
    for chunk in chunks:
        values, visible = (part[chunk.node_index] for part in chunk.dense())  # (b, N, V)
        for t, target in enumerate(targets.tolist()):
            x0 = None
            if method == "integrated_gradients":
                x0 = _baseline(values, visible, gene_mean, target, baseline, indicator)
            per_feature, chunk_gap = _chunk_attributions(
                network, values, visible, chunk, target, x0, n_steps
            )
            total[t, 0] += per_feature[:, 0].sum(dim=0).detach().numpy()
            total[t, 1] += per_feature[:, 1:].sum(dim=(0, 1)).detach().numpy()
            gap[t] += chunk_gap
    return total / spots.size, slide.observed, gap / spots.size


def _ranked(scores: np.ndarray, observed: np.ndarray, symbols: np.ndarray) -> pd.DataFrame:
    """The attribution table of `explain` from (2, V) scores (centre, neighbours)."""
    genes = np.flatnonzero(observed)
    parts = []
    for p, position in enumerate(("centre", "neighbours")):
        part = pd.DataFrame(
            {"gene": symbols[genes], "position": position, "attribution": scores[p, genes]}
        )
        part = part.reindex(part["attribution"].abs().sort_values(ascending=False).index)
        part["rank"] = np.arange(1, len(part) + 1)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def explain(
    model: SageFM,
    adata: ad.AnnData,
    target: str,
    *,
    spots: Sequence[int] | Sequence[str] | np.ndarray | None = None,
    method: Method = "integrated_gradients",
    baseline: Baseline = "hidden",
    n_steps: int = 32,
    key_added: str = Keys.EXPLANATION,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> pd.DataFrame:
    """Input genes ranked by their attribution to ``target``'s prediction at the centre.

    spots: centres to average over (None = all; positions, a boolean mask or obs names).
    Returns one row per (measured vocabulary gene, position) with columns ``gene``, ``position``
    ("centre" / "neighbours"), ``attribution`` (mean over spots; see the module docstring for units)
    and ``rank`` (1 = largest |attribution| within the position), sorted by position then rank.
    The target itself is hidden in the centre, so its centre attribution is 0. ``attrs`` holds
    ``target``, ``method``, ``n_spots`` and, for integrated gradients, ``prediction_gap``: the mean
    f(x) − f(x₀), which the attributions of a spot sum to. The table also goes to
    ``adata.uns[key_added]``, the ``attrs`` to ``adata.uns["sagefm"]["explain"]``.
    """
    observed = model.vocabulary.map(adata).observed
    (index,) = measured_genes(model.vocabulary, [target], observed, hint=_GENE_HINT)
    spot_index = _spot_indices(adata, spots)
    scores, observed, gap = _attributions(
        model,
        adata,
        np.array([index]),
        spot_index,
        method=method,
        baseline=baseline,
        n_steps=n_steps,
        chunk_size=chunk_size,
    )
    table = _ranked(scores[0], observed, np.asarray(model.vocabulary.symbols))
    integrated = method == "integrated_gradients"
    table.attrs.update(
        target=model.vocabulary.symbols[index],
        method=method,
        baseline=baseline if integrated else None,
        n_spots=int(spot_index.size),
        prediction_gap=float(gap[0]) if integrated else None,
    )
    adata.uns[key_added] = table
    adata.uns.setdefault(Keys.UNS, {})["explain"] = {
        **{k: v for k, v in table.attrs.items() if v is not None},
        "key_added": key_added,
    }
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
    key_added: str = Keys.DEPENDENCY,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> pd.DataFrame:
    """Gene × gene dependencies: row = input gene (in the ``position`` nodes), column = output gene.

    Entry (g, r): the mean attribution of input g to the centre prediction of r, r hidden in the
    centre (so the centre diagonal is 0). The default ``"gradient"`` gives ∂pred_r/∂x_g per unit
    log1p, summed over the neighbours for ``position="neighbours"``. Also stored in
    ``adata.uns[key_added]``, parameters in ``adata.uns["sagefm"]["dependency_matrix"]``.
    """
    if position not in ("centre", "neighbours"):
        raise InputDataError(f"position must be 'centre' or 'neighbours', got {position!r}")
    if len(genes) == 0 or len(set(genes)) != len(genes):
        raise InputDataError("give a non-empty list of distinct genes")
    observed = model.vocabulary.map(adata).observed
    index = measured_genes(model.vocabulary, list(genes), observed, hint=_GENE_HINT)
    spot_index = _spot_indices(adata, spots)
    scores, _, _ = _attributions(
        model,
        adata,
        index,
        spot_index,
        method=method,
        baseline=baseline,
        n_steps=n_steps,
        chunk_size=chunk_size,
    )
    p = 0 if position == "centre" else 1
    names = [model.vocabulary.symbols[i] for i in index]
    matrix = pd.DataFrame(scores[:, p][:, index].T, index=names, columns=names)
    matrix.index.name, matrix.columns.name = f"input ({position})", "output (centre)"
    adata.uns[key_added] = matrix
    adata.uns.setdefault(Keys.UNS, {})["dependency_matrix"] = {
        "position": position,
        "method": method,
        "n_spots": int(spot_index.size),
        "key_added": key_added,
    }
    return matrix
