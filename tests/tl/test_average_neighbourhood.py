"""`sagefm.tl.average_neighbourhood` on hand-built tissue whose answer is known."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from sagefm._constants import Keys
from sagefm.data.neighbourhood import build_neighbourhoods
from sagefm.errors import InputDataError
from sagefm.tl import average_neighbourhood, domains


def _striped_slide(
    n_side: int = 20, noise: float = 2.5, seed: int = 0
) -> tuple[ad.AnnData, np.ndarray]:
    """A square lattice (100 µm) in two bands (left / right half) and an embedding whose band
    signal (±1 on 8 dimensions) is buried in per-spot noise of SD ``noise``."""
    coords = np.array([(x, y) for y in range(n_side) for x in range(n_side)], dtype=float) * 100.0
    band = (coords[:, 0] >= n_side * 50.0).astype(int)
    rng = np.random.default_rng(seed)
    embedding = (2.0 * band[:, None] - 1.0) + noise * rng.normal(size=(band.size, 8))
    adata = ad.AnnData(X=np.zeros((band.size, 1), dtype=np.float32))
    adata.obsm["spatial"] = coords
    adata.obsm[Keys.X_EMB] = embedding
    adata.uns["sagefm"] = {"um_per_unit": 1.0}
    return adata, band


def test_average_is_the_mean_over_each_spot_and_its_nearest_spots_and_is_recorded() -> None:
    adata, _ = _striped_slide(n_side=8)
    result = average_neighbourhood(adata)
    neighbours = build_neighbourhoods(adata.obsm["spatial"], 14)
    expected = adata.obsm[Keys.X_EMB][neighbours].mean(axis=1)
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-6)
    assert adata.obsm[Keys.X_EMB_NEIGHBOURHOOD] is result
    assert adata.uns["sagefm"]["average_neighbourhood"][Keys.X_EMB_NEIGHBOURHOOD] == {
        "use_rep": Keys.X_EMB,
        "n_neighbours": 14,
    }
    six = average_neighbourhood(adata, n_neighbours=6, key_added="six")
    np.testing.assert_allclose(
        six,
        adata.obsm[Keys.X_EMB][build_neighbourhoods(adata.obsm["spatial"], 6)].mean(axis=1),
        rtol=1e-5,
        atol=1e-6,
    )


def test_averaging_a_noisy_embedding_finds_the_bands_its_spots_alone_do_not() -> None:
    adata, band = _striped_slide()
    raw = domains(adata, 2, n_comps=None, refine=False, key_added="raw")
    average_neighbourhood(adata)
    smooth = domains(
        adata, 2, use_rep=Keys.X_EMB_NEIGHBOURHOOD, n_comps=None, refine=False, key_added="smooth"
    )
    raw_ari = adjusted_rand_score(band, raw.cat.codes)
    smooth_ari = adjusted_rand_score(band, smooth.cat.codes)
    assert raw_ari < 0.6 and smooth_ari > 0.9


def test_missing_or_malformed_representations_are_refused() -> None:
    adata, _ = _striped_slide(n_side=5)
    with pytest.raises(InputDataError, match="X_other"):
        average_neighbourhood(adata, use_rep="X_other")
    adata.obsm["X_bad"] = np.full((adata.n_obs, 2), np.nan)
    with pytest.raises(InputDataError, match="finite"):
        average_neighbourhood(adata, use_rep="X_bad")
    with pytest.raises(InputDataError, match="n_neighbours"):
        average_neighbourhood(adata, n_neighbours=0)
