"""Tests of the synthetic tissue generator: contract, determinism and the planted biology."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData
from scipy.spatial import cKDTree

from sagefm._constants import VISIUM_CENTRE_TO_CENTRE_UM, VISIUM_SPOT_DIAMETER_UM, Keys
from sagefm.datasets import SyntheticTissueConfig, planted_pairs, synthetic_tissue
from sagefm.datasets.synthetic import LR_RADIUS_UM, SYNTHETIC_UNS_KEY
from sagefm.errors import ConfigError, InputDataError

SMALL = SyntheticTissueConfig(n_slides=2, grid_rows=12, grid_cols=12, n_genes=80, n_lr_pairs=4)


@pytest.fixture(scope="module")
def default_slides() -> list[AnnData]:
    return synthetic_tissue()


def _xy_um(adata: AnnData) -> np.ndarray:
    return adata.obsm[Keys.SPATIAL] * adata.uns[Keys.UNS][Keys.UM_PER_UNIT]


def _neighbour_mean(adata: AnnData, values: np.ndarray, radius_um: float) -> np.ndarray:
    """Mean of ``values`` (N, C) over spots within ``radius_um``, the spot itself excluded."""
    n = adata.n_obs
    pairs = cKDTree(_xy_um(adata)).query_pairs(radius_um, output_type="ndarray")
    rows = np.concatenate([pairs[:, 0], pairs[:, 1]])
    cols = np.concatenate([pairs[:, 1], pairs[:, 0]])
    adjacency = sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n))
    degree = np.maximum(np.asarray(adjacency.sum(axis=1)), 1.0)
    return np.asarray(adjacency @ values) / degree


def _log_normalised(adata: AnnData) -> np.ndarray:
    counts = adata.X.toarray().astype(np.float64)
    return np.log1p(counts / counts.sum(axis=1, keepdims=True) * 1e4)


def _assert_slides_equal(first: list[AnnData], second: list[AnnData]) -> None:
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        assert (a.X != b.X).nnz == 0
        pd.testing.assert_frame_equal(a.obs, b.obs)
        pd.testing.assert_frame_equal(a.var, b.var)
        np.testing.assert_array_equal(a.obsm[Keys.SPATIAL], b.obsm[Keys.SPATIAL])
    pd.testing.assert_frame_equal(planted_pairs(first), planted_pairs(second))


def test_same_seed_gives_identical_slides_and_another_seed_differs() -> None:
    first = synthetic_tissue(SMALL)
    _assert_slides_equal(first, synthetic_tissue(SMALL))
    other = synthetic_tissue(SMALL, seed=1)
    assert not np.array_equal(first[0].obs["domain"], other[0].obs["domain"])
    assert not planted_pairs(first).equals(planted_pairs(other))


def test_a_slide_does_not_depend_on_how_many_slides_are_drawn() -> None:
    _assert_slides_equal(synthetic_tissue(SMALL, n_slides=1), synthetic_tissue(SMALL)[:1])


def test_slides_follow_the_anndata_contract(default_slides: list[AnnData]) -> None:
    config = SyntheticTissueConfig()
    assert len(default_slides) == config.n_slides
    sample_ids = set()
    for adata in default_slides:
        assert sp.isspmatrix_csr(adata.X) or isinstance(adata.X, sp.csr_array)
        assert adata.X.dtype in (np.int32, np.int64)
        assert adata.X.min() >= 0
        assert 0.8 * config.grid_rows * config.grid_cols <= adata.n_obs
        assert adata.n_obs <= config.grid_rows * config.grid_cols
        assert adata.n_vars == config.n_panel
        assert adata.var_names.is_unique and adata.obs_names.is_unique
        assert adata.obsm[Keys.SPATIAL].dtype == np.float64
        assert adata.obsm[Keys.SPATIAL].shape == (adata.n_obs, 2)
        sample_id = adata.obs[Keys.SAMPLE_ID].iloc[0]
        assert (adata.obs[Keys.SAMPLE_ID] == sample_id).all()
        sample_ids.add(sample_id)
        assert isinstance(adata.obs["domain"].dtype, pd.CategoricalDtype)
        assert len(adata.obs["domain"].cat.categories) == config.n_domains
        assert adata.uns[Keys.UNS] == {
            Keys.UM_PER_UNIT: 0.5,
            Keys.SCALE_SOURCE: "synthetic",
            Keys.PLATFORM: "visium",
        }
        diameter_px = adata.uns[Keys.SPATIAL][sample_id]["scalefactors"]["spot_diameter_fullres"]
        assert diameter_px * adata.uns[Keys.UNS][Keys.UM_PER_UNIT] == VISIUM_SPOT_DIAMETER_UM
        truth = adata.uns[SYNTHETIC_UNS_KEY]
        assert truth["config"] == asdict(config)
        assert list(truth["planted_pairs"].columns) == ["ligand", "receptor", "sign", "strength"]
    assert len(sample_ids) == config.n_slides


def test_lattice_is_visium_hex_with_100_um_pitch(default_slides: list[AnnData]) -> None:
    adata = default_slides[0]
    rows, cols = adata.obs["array_row"].to_numpy(), adata.obs["array_col"].to_numpy()
    assert np.array_equal(rows % 2, cols % 2)
    distances, _ = cKDTree(_xy_um(adata)).query(_xy_um(adata), k=7)
    np.testing.assert_allclose(distances[:, 1].min(), VISIUM_CENTRE_TO_CENTRE_UM)
    # Interior spots have the 6 neighbours of ring 1 at 100 µm.
    interior = np.isclose(distances[:, 6], VISIUM_CENTRE_TO_CENTRE_UM)
    assert interior.mean() > 0.8


def test_planted_pairs_are_mixed_in_sign_and_match_the_config(
    default_slides: list[AnnData],
) -> None:
    pairs = planted_pairs(default_slides)
    assert len(pairs) == SyntheticTissueConfig().n_lr_pairs
    assert set(pairs["sign"]) == {1, -1}
    assert (pairs["sign"] == 1).sum() == len(pairs) // 2
    assert pairs["strength"].between(0.8, 1.2).all()
    assert pairs["ligand"].str.startswith("LIG").all()
    assert pairs["receptor"].str.startswith("REC").all()
    pd.testing.assert_frame_equal(planted_pairs(default_slides[1]), pairs)


def test_panels_differ_but_ligands_receptors_and_decoys_are_always_measured(
    default_slides: list[AnnData],
) -> None:
    pairs = planted_pairs(default_slides)
    decoys = list(default_slides[0].uns[SYNTHETIC_UNS_KEY]["decoy_ligands"])
    assert decoys and not set(decoys) & set(pairs["ligand"])
    always = set(pairs["ligand"]) | set(pairs["receptor"]) | set(decoys)
    panels = [frozenset(a.var_names) for a in default_slides]
    assert len(set(panels)) == len(panels)
    for panel in panels:
        assert always <= panel
    assert len(frozenset.union(*panels)) > len(panels[0])


def test_counts_are_sparse_and_over_dispersed(default_slides: list[AnnData]) -> None:
    adata = default_slides[0]
    counts = adata.X.toarray().astype(np.float64)
    assert 0.2 < (counts == 0).mean() < 0.9
    means = counts.mean(axis=0)
    assert means.max() > 20 * np.median(means)  # highly and lowly expressed genes
    # Within one domain, mid-expressed genes are still over-dispersed (negative binomial).
    in_domain = counts[(adata.obs["domain"] == adata.obs["domain"].mode()[0]).to_numpy()]
    mean, var = in_domain.mean(axis=0), in_domain.var(axis=0)
    mid = (mean > 2) & (mean < 30)
    assert mid.sum() > 20
    assert (var[mid] > mean[mid]).mean() > 0.95


def test_domain_marker_genes_are_spatially_autocorrelated(default_slides: list[AnnData]) -> None:
    adata = default_slides[0]
    expression = _log_normalised(adata)
    domain_means = pd.DataFrame(expression).groupby(adata.obs["domain"].to_numpy()).mean()
    marker = int(domain_means.var(axis=0).to_numpy().argmax())
    neighbours = _neighbour_mean(adata, expression[:, [marker]], 1.1 * VISIUM_CENTRE_TO_CENTRE_UM)
    assert np.corrcoef(expression[:, marker], neighbours[:, 0])[0, 1] > 0.3


def test_planted_effects_are_visible_within_domains(default_slides: list[AnnData]) -> None:
    """corr(receptor, neighbour-mean ligand) after removing slide x domain means has the sign."""
    pairs = planted_pairs(default_slides)
    residuals = []
    for adata in default_slides:
        expression = _log_normalised(adata)
        column = {gene: i for i, gene in enumerate(adata.var_names)}
        ligands = expression[:, [column[g] for g in pairs["ligand"]]]
        receptors = expression[:, [column[g] for g in pairs["receptor"]]]
        stacked = np.hstack([receptors, _neighbour_mean(adata, ligands, LR_RADIUS_UM)])
        by_domain = pd.DataFrame(stacked).groupby(adata.obs["domain"].to_numpy(), observed=True)
        residuals.append(stacked - by_domain.transform("mean").to_numpy())
    centred = np.vstack(residuals)  # (spots of all slides, receptors then neighbour ligands)
    n_pairs = len(pairs)
    correlations = np.array(
        [np.corrcoef(centred[:, i], centred[:, n_pairs + i])[0, 1] for i in range(n_pairs)]
    )
    signs = pairs["sign"].to_numpy()
    assert (correlations[signs > 0] > 0.2).all(), correlations
    assert (correlations[signs < 0] < -0.2).all(), correlations


def test_overrides_replace_config_fields() -> None:
    slides = synthetic_tissue(SMALL, n_slides=1, panel_fraction=1.0)
    assert len(slides) == 1
    assert slides[0].n_vars == SMALL.n_genes
    assert slides[0].uns[SYNTHETIC_UNS_KEY]["config"]["panel_fraction"] == 1.0


def test_h5ad_round_trip_keeps_the_ground_truth(tmp_path: Path) -> None:
    adata = synthetic_tissue(SMALL, n_slides=1)[0]
    path = tmp_path / "synthetic.h5ad"
    adata.write_h5ad(path)
    pd.testing.assert_frame_equal(planted_pairs(ad.read_h5ad(path)), planted_pairs(adata))


def test_planted_pairs_rejects_slides_not_made_by_the_generator() -> None:
    with pytest.raises(InputDataError, match="synthetic_tissue"):
        planted_pairs(AnnData(np.zeros((3, 2), dtype=np.float32)))
    first = synthetic_tissue(SMALL, n_slides=1)
    second = synthetic_tissue(SMALL, n_slides=1, seed=5)
    with pytest.raises(InputDataError, match="different"):
        planted_pairs(first + second)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"n_slides": 0}, "n_slides"),
        ({"grid_rows": 3}, "4 x 4"),
        ({"grid_cols": 2}, "4 x 4"),
        ({"panel_fraction": 0.0}, "panel_fraction"),
        ({"panel_fraction": 1.5}, "panel_fraction"),
        ({"n_lr_pairs": 300, "n_genes": 500}, "n_genes"),
        ({"n_lr_pairs": 10, "n_genes": 100, "panel_fraction": 0.1}, "panel_fraction"),
        ({"mean_depth": -1.0}, "mean_depth"),
        ({"dispersion": 0.0}, "dispersion"),
        ({"n_domains": 0}, "n_domains"),
        ({"n_slides": 2.5}, "integer"),
        ({"seed": -1}, "seed"),
        ({"not_a_field": 1}, "unknown"),
    ],
)
def test_bad_config_raises_config_error(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        synthetic_tissue(**overrides)  # type: ignore[arg-type]
