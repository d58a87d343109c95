"""Baseline spot representations the evaluation compares SAGE-FM with, computed on the same spots.

* ``pca``: PCA of highly variable genes of log-normalised expression (log1p of counts per 10k),
  the standard single-cell starting point.
* ``neighbour_pca``: the same, after averaging each spot's expression with its 14 nearest spots
  (the subgraph SAGE-FM sees). The simplest spatial baseline: a model that does not beat it has
  learned nothing beyond spatial smoothing.
* ``banksy``: BANKSY's spot features (Singhal et al., Nat. Genet. 2024, ``banksy_py``): each gene's
  own expression and its mean over the 14 nearest spots (the spot excluded), each z-scored, weighted
  sqrt(1 - λ) and sqrt(λ) (λ = 0.8, BANKSY's setting for domains) and concatenated, then PCA.
  Unlike BANKSY the neighbours are weighted uniformly (BANKSY: a Gaussian of distance), the same 14
  spots as the other spatial baselines.
* ``banksy_agf``: BANKSY itself (``pybanksy``, the authors' Python package) on each slide alone:
  own expression, the Gaussian-weighted mean of the ``k_geom`` nearest spots and the azimuthal
  Gabor filter (AGF, m = 1, uncentred as the package computes it), each z-scored on its slide
  (free of a slide's per-gene scale, and of its offsets but in the AGF) and weighted by λ, then PCA
  fitted on the training slides. Settings chosen on DLPFC 151673–75 domains with the matrix
  clustered directly, before this PCA was added (README, Ablations, session 33; through the PCA
  every setting scores 0.31–0.38 there): k_geom 6 (Visium's first ring, as BANKSY's own DLPFC
  vignette), AGF on, λ 0.2.
* ``mofa``: MOFA+ factors (`mofapy2`, the paper's baseline) on a few hundred HVGs.
* ``pca_slide_centred`` (label transfer only): PCA of the same HVGs after subtracting each slide's
  own mean of every gene. It removes per-slide (patient, batch) offsets without labels, the
  counterpart of `ModelConfig.slide_centering`; slide-level tasks would lose their signal to it.

HVGs, z-scores and PCA are fitted on training slides and applied to the others (features comparable
across slides).
MOFA+ has no projection of new samples, so its factors are always fitted, without labels, on the
concatenation of every slide it is asked about.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Sequence

import anndata as ad
import numpy as np
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from sagefm.data.neighbourhood import neighbour_average
from sagefm.errors import InputDataError

logger = logging.getLogger(__name__)

#: Baseline names, in the order tables list them.
BASELINE_METHODS = ("pca", "mofa", "neighbour_pca", "banksy")
#: BANKSY's neighbourhood weight λ for domain finding.
BANKSY_LAMBDA = 0.8


def shared_genes(slides: Sequence[ad.AnnData]) -> list[str]:
    """Genes measured on every slide, in the first slide's order."""
    common = set(slides[0].var_names)
    for adata in slides[1:]:
        common &= set(adata.var_names)
    genes = [g for g in slides[0].var_names if g in common]
    if not genes:
        raise InputDataError("the slides share no gene names; baselines need common genes")
    return genes


def log_normalize(adata: ad.AnnData, genes: Sequence[str]) -> np.ndarray:
    """(n_spots, len(genes)) float32 log1p of counts per 10,000 (library size over all genes)."""
    import scanpy as sc  # heavy; only the evaluation needs it

    work = ad.AnnData(X=adata.X.copy().astype(np.float32), var=adata.var[[]].copy())
    sc.pp.normalize_total(work, target_sum=1e4)
    sc.pp.log1p(work)
    X = work[:, list(genes)].X
    return np.asarray(X.toarray() if hasattr(X, "toarray") else X, dtype=np.float32)


def highly_variable(matrices: Sequence[np.ndarray], genes: Sequence[str], n_top: int) -> np.ndarray:
    """Indices of the ``n_top`` most variable genes (scanpy's Seurat flavour) over the stacked spots."""
    import scanpy as sc

    stacked = ad.AnnData(X=np.vstack(matrices))
    stacked.var_names = list(genes)
    n_top = min(n_top, stacked.n_vars)
    sc.pp.highly_variable_genes(stacked, n_top_genes=n_top, flavor="seurat")
    return np.flatnonzero(stacked.var["highly_variable"].to_numpy())


def _fitted_pca(
    matrices: Sequence[np.ndarray], train: Sequence[int], n_comps: int, seed: int
) -> list[np.ndarray]:
    fit = np.vstack([matrices[i] for i in train])
    pca = PCA(n_components=min(n_comps, *fit.shape), random_state=seed).fit(fit)
    return [pca.transform(m).astype(np.float32) for m in matrices]


def banksy_features(
    own: Sequence[np.ndarray],
    neighbour_mean: Sequence[np.ndarray],
    *,
    train: Sequence[int],
    lam: float = BANKSY_LAMBDA,
) -> list[np.ndarray]:
    """(n_spots_i, 2G) per slide: [sqrt(1 - λ) z(own), sqrt(λ) z(neighbour mean)] (BANKSY, m = 0).

    z-scores per gene use the ``train`` slides' mean and SD (constant genes stay 0).
    """
    parts = []
    for weight, matrices in ((np.sqrt(1.0 - lam), own), (np.sqrt(lam), neighbour_mean)):
        scaler = StandardScaler().fit(np.vstack([matrices[i] for i in train]))
        parts.append([weight * scaler.transform(m) for m in matrices])
    return [np.hstack(pair).astype(np.float32) for pair in zip(*parts, strict=True)]


def pca_embeddings(
    expression: Sequence[np.ndarray],
    neighbours: Sequence[np.ndarray],
    genes: Sequence[str],
    *,
    train: Sequence[int],
    n_hvg: int,
    n_comps: int,
    seed: int,
    banksy_lambda: float = BANKSY_LAMBDA,
) -> dict[str, list[np.ndarray]]:
    """``pca``, ``neighbour_pca`` and ``banksy`` for every slide, (n_spots_i, n_comps) each.

    ``expression[i]`` is slide i's log-normalised matrix, ``neighbours[i]`` its subgraphs
    (`build_neighbourhoods`). HVGs, z-scores and PCAs are fitted on the ``train`` slides only.
    """
    hvg = highly_variable([expression[i] for i in train], genes, n_hvg)
    own = [x[:, hvg] for x in expression]
    inputs = {
        "pca": own,
        "neighbour_pca": [neighbour_average(x, nb) for x, nb in zip(own, neighbours, strict=True)],
        "banksy": banksy_features(
            own,
            [
                neighbour_average(x, nb, include_self=False)
                for x, nb in zip(own, neighbours, strict=True)
            ],
            train=train,
            lam=banksy_lambda,
        ),
    }
    return {name: _fitted_pca(m, train, n_comps, seed) for name, m in inputs.items()}


def banksy_agf_embeddings(
    expression: Sequence[np.ndarray],
    coords_um: Sequence[np.ndarray],
    genes: Sequence[str],
    *,
    train: Sequence[int],
    n_hvg: int,
    n_comps: int,
    seed: int,
    k_geom: int,
    lam: float,
    max_m: int,
) -> list[np.ndarray]:
    """``banksy_agf`` for every slide, (n_spots_i, n_comps): `banksy_agf_features` of each slide
    alone on the ``train`` slides' HVGs that vary on every slide, PCA fitted on the ``train``
    slides."""
    hvg = highly_variable([expression[i] for i in train], genes, n_hvg)
    hvg = hvg[np.all([x[:, hvg].std(axis=0) > 0 for x in expression], axis=0)]
    matrices = [
        banksy_agf_features(x[:, hvg], xy, k_geom=k_geom, lam=lam, max_m=max_m)
        for x, xy in zip(expression, coords_um, strict=True)
    ]
    return _fitted_pca(matrices, train, n_comps, seed)


def slide_centred_pca(
    expression: Sequence[np.ndarray],
    genes: Sequence[str],
    *,
    train: Sequence[int],
    n_hvg: int,
    n_comps: int,
    seed: int,
) -> list[np.ndarray]:
    """``pca_slide_centred`` for every slide, (n_spots_i, n_comps): the ``train`` slides' HVGs,
    each slide centred on its own gene means, PCA fitted on the ``train`` slides."""
    hvg = highly_variable([expression[i] for i in train], genes, n_hvg)
    centred = [x[:, hvg] - x[:, hvg].mean(axis=0) for x in expression]
    return _fitted_pca(centred, train, n_comps, seed)


def mofa_factors(
    expression: Sequence[np.ndarray],
    genes: Sequence[str],
    *,
    n_genes: int,
    n_factors: int,
    iterations: int,
    seed: int,
) -> list[np.ndarray]:
    """MOFA+ factors (n_spots_i, n_factors) per slide, fitted on all slides stacked (one group).

    One group rather than one per slide: group-wise centring would remove slide-level differences,
    which are the signal in slide-level phenotype tasks. Gaussian likelihood on log-normalised HVGs.
    """
    from mofapy2.run.entry_point import entry_point

    hvg = highly_variable(expression, genes, n_genes)
    stacked = np.vstack([m[:, hvg] for m in expression]).astype(np.float64)
    # mofapy2 prints its progress to stdout whatever `quiet` says; keep it out of the user's terminal.
    with contextlib.redirect_stdout(io.StringIO()):
        ent = entry_point()
        ent.set_data_options(scale_views=False)
        ent.set_data_matrix([[stacked]], likelihoods=["gaussian"])
        ent.set_model_options(factors=n_factors)
        ent.set_train_options(
            iter=iterations, convergence_mode="fast", seed=seed, quiet=True, verbose=False
        )
        ent.build()
        ent.run()
    factors = np.asarray(ent.model.nodes["Z"].getExpectation(), dtype=np.float32)
    logger.info(
        "MOFA+: %d spots x %d genes -> %d factors", stacked.shape[0], hvg.size, factors.shape[1]
    )
    bounds = np.cumsum([m.shape[0] for m in expression])[:-1]
    return np.split(factors, bounds)


def banksy_agf_features(
    expression: np.ndarray, coords_um: np.ndarray, *, k_geom: int, lam: float, max_m: int
) -> np.ndarray:
    """(n_spots, G * (2 + max_m)) BANKSY's matrix of one section, from the authors' ``pybanksy``.

    ``expression`` (n_spots, G) log-normalised, ``coords_um`` (n_spots, 2). Blocks: own expression,
    the mean over the ``k_geom`` nearest spots (weights a Gaussian of distance scaled by each spot's
    median neighbour distance, summing to 1) and, for m = 1 .. ``max_m``, the azimuthal Gabor filter
    (|Σ w e^{imθ} x| over 2 k_geom spots, uncentred as pybanksy 1.3.5 computes it; BANKSY's
    definition subtracts the local mean); each block z-scored over the section and
    weighted sqrt(1 - λ) (own) and sqrt(λ) split between the neighbour blocks as BANKSY does.
    Genes constant over the section are left out (G counts the others): pybanksy z-scores a
    block by E[x²] - E[x]², which for a constant gene's neighbour mean is rounding noise.
    """
    from banksy.embed_banksy import generate_banksy_matrix
    from banksy.initialize_banksy import initialize_banksy

    values = np.asarray(expression, dtype=np.float64)
    values = values[:, values.std(axis=0) > 0]
    if values.shape[1] == 0:
        raise InputDataError("BANKSY needs at least one gene that varies over the section")
    section = ad.AnnData(X=values)
    section.obsm["coord_xy"] = np.asarray(coords_um, dtype=np.float64)
    # pybanksy prints its progress and timings to stdout; keep them out of the user's terminal.
    with contextlib.redirect_stdout(io.StringIO()):
        weights = initialize_banksy(
            section,
            ("x", "y", "coord_xy"),
            num_neighbours=k_geom,
            nbr_weight_decay="scaled_gaussian",
            max_m=max_m,
            plt_edge_hist=False,
            plt_nbr_weights=False,
            plt_theta=False,
        )
        # As the package computes it: its generate_banksy_matrix (1.3.5) passes the
        # variance_balance flag where create_nbr_matrix expects `center`, so the AGF is taken on
        # uncentred expression. That scored higher on the tuning sections than the centred AGF
        # of BANKSY's definition (README, Ablations, session 33), so the stronger one is kept.
        matrices, _ = generate_banksy_matrix(section, weights, [lam], max_m=max_m, verbose=False)
    features = np.asarray(matrices["scaled_gaussian"][lam]["adata"].X, dtype=np.float32)
    logger.info("BANKSY (pybanksy): %d spots x %d features", *features.shape)
    return features
