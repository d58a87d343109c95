"""The baselines of masked-gene recovery (`sagefm.evaluation.recovery`), from visible entries only.

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

import numpy as np
import torch
from sklearn.utils.extmath import randomized_svd

from sagefm.data.neighbourhood import neighbourhood_matrix
from sagefm.nn.depth import normalize_depth, restore_depth

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
