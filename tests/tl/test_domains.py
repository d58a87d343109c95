"""`sagefm.tl.domains` on hand-built tissue whose domains are known."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from sagefm.errors import InputDataError
from sagefm.tl import domains
from sagefm.tl.domains import domain_features, refine_labels


def _two_patches(n_side: int = 6, gap_um: float = 5000.0) -> tuple[np.ndarray, np.ndarray]:
    """Two square lattices (100 µm spacing) far apart: (coords (2 n², 2), patch (2 n²,) int)."""
    grid = np.array([(x, y) for y in range(n_side) for x in range(n_side)], dtype=float) * 100.0
    coords = np.vstack([grid, grid + np.array([gap_um, 0.0])])
    return coords, np.repeat([0, 1], n_side * n_side)


def _slide(features: np.ndarray, coords: np.ndarray) -> ad.AnnData:
    adata = ad.AnnData(X=features.astype(np.float32))
    adata.obs_names = [f"s{i}" for i in range(adata.n_obs)]
    adata.obsm["spatial"] = coords
    adata.obsm["X_sagefm"] = features
    adata.uns["sagefm"] = {"um_per_unit": 1.0}
    return adata


def _separated_features(patch: np.ndarray, seed: int = 0) -> np.ndarray:
    """(n, 40): patch 0 around 0, patch 1 around 10 on every dimension, unit noise."""
    rng = np.random.default_rng(seed)
    return 10.0 * patch[:, None] + rng.normal(size=(patch.size, 40))


def test_two_separated_domains_are_recovered_exactly_and_recorded() -> None:
    coords, patch = _two_patches()
    adata = _slide(_separated_features(patch), coords)
    labels = domains(adata, 2, refine=False, seed=0)
    assert adjusted_rand_score(patch, labels) == 1.0
    assert adata.obs["sagefm_domain"].dtype == "category"
    assert list(adata.obs["sagefm_domain"].cat.categories) == ["0", "1"]
    assert (adata.obs["sagefm_domain"] == labels).all() and (labels.index == adata.obs_names).all()
    params = adata.uns["sagefm"]["domains"]["sagefm_domain"]
    assert params["n_domains"] == 2 and params["n_comps"] == 20 and params["refine"] is False
    assert adata.uns["sagefm"]["um_per_unit"] == 1.0  # the slide's scale is kept


def test_refinement_fixes_an_isolated_mislabelled_spot() -> None:
    coords, patch = _two_patches()
    features = _separated_features(patch)
    odd = 14  # an interior spot of patch 0 that looks like patch 1
    features[odd] = _separated_features(np.ones(1, dtype=int), seed=1)[0]
    adata = _slide(features, coords)
    raw = domains(adata, 2, refine=False, key_added="raw", seed=0).cat.codes.to_numpy()
    assert raw[odd] != raw[odd + 1] and adjusted_rand_score(patch, raw) < 1.0
    refined = domains(adata, 2, refine=True, seed=0)
    assert adjusted_rand_score(patch, refined) == 1.0
    assert set(adata.uns["sagefm"]["domains"]) == {"raw", "sagefm_domain"}


def test_majority_vote_keeps_the_own_label_on_ties_and_ignores_itself() -> None:
    # spot 0 has neighbours 1-4 (labels 1, 1, 2, 2); spots 1 and 2 (3 and 4) only see each other
    neighbours = np.array(
        [[0, 1, 2, 3, 4], [1, 2, 2, 2, 2], [2, 1, 1, 1, 1], [3, 4, 4, 4, 4], [4, 3, 3, 3, 3]]
    )
    assert refine_labels(np.array([2, 1, 1, 2, 2]), neighbours).tolist() == [2, 1, 1, 2, 2]
    assert refine_labels(np.array([0, 1, 1, 2, 2]), neighbours).tolist() == [1, 1, 1, 2, 2]
    # spot 1 (label 0) sees only label 1 among its neighbours, its own vote does not count
    assert refine_labels(np.array([1, 0, 1, 2, 2]), neighbours)[1] == 1


def test_the_same_seed_gives_the_same_domains() -> None:
    rng = np.random.default_rng(3)
    coords = rng.random((150, 2)) * 2000
    adata = _slide(rng.normal(size=(150, 30)), coords)  # no structure: labels depend on the seed
    first = domains(adata, 4, seed=5).to_numpy()
    again = domains(adata, 4, seed=5).to_numpy()
    assert (first == again).all()
    others = [domains(adata, 4, seed=s).to_numpy() for s in range(6, 10)]
    assert any(adjusted_rand_score(first, o) < 1.0 for o in others)


def test_kmeans_and_x_are_accepted_and_the_representation_is_reduced() -> None:
    coords, patch = _two_patches()
    adata = _slide(_separated_features(patch), coords)
    labels = domains(adata, 2, use_rep="X", method="kmeans", key_added="km", n_comps=5)
    assert adjusted_rand_score(patch, labels) == 1.0
    assert domain_features(adata.X, n_comps=5, seed=0).shape == (adata.n_obs, 5)
    assert domain_features(adata.X, n_comps=None, seed=0).shape == adata.shape


def test_missing_representation_and_bad_k_are_user_errors() -> None:
    coords, patch = _two_patches()
    adata = _slide(_separated_features(patch), coords)
    with pytest.raises(InputDataError, match='no "X_other"'):
        domains(adata, 2, use_rep="X_other")
    with pytest.raises(InputDataError, match="n_domains"):
        domains(adata, 0)
    assert "sagefm_domain" not in adata.obs
    assert isinstance(domains(adata, 2), pd.Series)
