"""Synthetic binned tissue: the bins hold exactly the spots' counts, and a model pretrained on
Visium-like spots embeds their pseudo-spots as well as the spots themselves."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

import sagefm
from sagefm.config import ModelConfig, SageFMConfig, TrainConfig
from sagefm.datasets import synthetic_tissue
from sagefm.datasets.binned import synthetic_binned_tissue
from sagefm.errors import ConfigError
from sagefm.io.lattice import median_spacing

TISSUE = {"grid_rows": 14, "grid_cols": 14, "n_genes": 80, "seed": 4}


@pytest.mark.parametrize("bin_um", [8.0, 16.0])
def test_bins_split_each_spot_exactly(bin_um: float) -> None:
    bins, spots = synthetic_binned_tissue(bin_um, **TISSUE)
    (same,) = synthetic_tissue(n_slides=1, **TISSUE)
    assert (spots.X != same.X).nnz == 0  # the public generator's slide, untouched
    source = bins.obs["source_spot"].to_numpy()
    summed = np.zeros(spots.shape)
    np.add.at(summed, source, bins.X.toarray())
    np.testing.assert_array_equal(summed, spots.X.toarray())
    assert median_spacing(bins.obsm["spatial"]) == pytest.approx(bin_um)
    # a spot's hexagonal cell (8660 µm²) holds ~8660 / bin_um² bins
    per_spot = np.bincount(source).mean()
    assert per_spot == pytest.approx(100.0**2 * np.sqrt(3) / 2 / bin_um**2, rel=0.15)
    assert (bins.obs["domain"].to_numpy() == spots.obs["domain"].to_numpy()[source]).all()
    assert sagefm.pp.detect_resolution(bins) == "visium_hd"
    del bins.uns["sagefm"]["resolution"]
    assert sagefm.pp.detect_resolution(bins) == "visium_hd"  # from the 8 or 16 µm lattice


def test_bin_size_is_checked() -> None:
    with pytest.raises(ConfigError, match="bin_size_um"):
        synthetic_binned_tissue(5.0, **TISSUE)


def domain_ari(embedding: np.ndarray, labels: np.ndarray, n_domains: int) -> float:
    return float(
        np.mean(
            [
                adjusted_rand_score(
                    labels, KMeans(n_domains, n_init=10, random_state=s).fit_predict(embedding)
                )
                for s in range(3)
            ]
        )
    )


@pytest.mark.slow
def test_model_pretrained_on_spots_recovers_domains_of_pseudo_spots(tmp_path) -> None:
    # Slides 1 and 2 of the seed train a tiny model; slide 0, held out, is binned at 8 µm.
    slides = synthetic_tissue(n_slides=3, **TISSUE)
    config = SageFMConfig(
        model=ModelConfig(hidden_sizes=(32, 16, 16, 16, 32)),
        train=TrainConfig(max_epochs=3, batch_size=32, seed=3),
    )
    model, _ = sagefm.SageFM.pretrain(
        slides[1:2], val_slides=slides[2:], output=tmp_path, config=config, progress=False
    )
    bins, spots = synthetic_binned_tissue(8.0, **TISSUE)
    pseudo = sagefm.pp.aggregate_to_spots(bins)
    truth = (
        bins.obs.groupby("sagefm_spot", observed=True)["domain"]
        .agg(lambda s: s.value_counts().idxmax())
        .reindex(pseudo.obs_names)
        .astype(str)
        .to_numpy()
    )
    k = spots.obs["domain"].nunique()
    on_pseudo = domain_ari(model.embed(pseudo), truth, k)
    on_spots = domain_ari(model.embed(spots), spots.obs["domain"].astype(str).to_numpy(), k)
    chance = domain_ari(np.random.default_rng(0).normal(size=(len(truth), 16)), truth, k)
    scores = f"domain ARI: pseudo-spots {on_pseudo:.3f}, spots {on_spots:.3f}, chance {chance:.3f}"
    assert abs(chance) < 0.05, scores
    assert on_pseudo > chance + 0.15, scores
    assert on_pseudo > on_spots - 0.1, scores  # as good as on the spots the model knows
    sagefm.pp.spots_to_positions(bins, pseudo)
    assert np.isfinite(bins.obsm["X_sagefm"][bins.obs["sagefm_spot"].notna().to_numpy()]).all()
