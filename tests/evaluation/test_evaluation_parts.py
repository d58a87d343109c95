"""The pieces of the evaluation report, on hand-built inputs whose answers are known."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from sagefm.data.neighbourhood import build_neighbourhoods
from sagefm.errors import ConfigError, InputDataError
from sagefm.evaluation import EvaluationConfig
from sagefm.evaluation.annotation import pooled_confusion, score_transfer
from sagefm.evaluation.baselines import (
    banksy_agf_embeddings,
    banksy_agf_features,
    banksy_features,
    mofa_factors,
    pca_embeddings,
    shared_genes,
    slide_centred_pca,
)
from sagefm.evaluation.data import pretraining_splits, spot_labels
from sagefm.evaluation.domains import domain_scores
from sagefm.evaluation.phenotype import blocked_auroc, blocked_folds, make_windows, window_cells
from sagefm.evaluation.report import markdown_table, verdict
from sagefm.tl.domains import cluster, domain_features
from sagefm.tl.transfer import fit_label_classifier, predict_labels


def _blobs(n_per: int, k: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = 20.0 * np.eye(k, dim)
    labels = np.repeat(np.arange(k), n_per)
    return centres[labels] + rng.normal(size=(labels.size, dim)), labels


# ------------------------------------------------------------------ domains
def test_perfect_clusters_score_one_and_unlabelled_spots_are_ignored() -> None:
    truth = pd.Series(["L1"] * 5 + ["L2"] * 5 + [np.nan] * 3, dtype=object)
    labels = np.array([3] * 5 + [7] * 5 + [3, 7, 7])  # cluster ids need not match label names
    features = np.where(labels[:, None] == 3, 0.0, 10.0) + np.arange(13)[:, None] * 1e-3
    scores = domain_scores(features, labels, truth)
    assert scores["ari"] == pytest.approx(1.0)
    assert scores["nmi"] == pytest.approx(1.0)
    assert scores["silhouette"] > 0.99
    assert scores["davies_bouldin"] < 0.01


def test_swapped_halves_score_zero_ari() -> None:
    truth = pd.Series(["a", "a", "b", "b"] * 25)
    labels = np.array([0, 1, 0, 1] * 25)  # independent of the truth
    assert domain_scores(np.eye(100)[:, :3], labels, truth)["ari"] == pytest.approx(0.0, abs=0.02)


@pytest.mark.parametrize("method", ["kmeans", "gmm"])
def test_clustering_recovers_separated_blobs(method: str) -> None:
    x, truth = _blobs(40, 4, 6)
    labels = cluster(x, 4, method, seed=0)
    assert domain_scores(x, labels, pd.Series(truth))["ari"] == pytest.approx(1.0)


def test_wide_representations_are_reduced_before_clustering() -> None:
    x = np.random.default_rng(0).normal(size=(50, 80))
    assert domain_features(x, n_comps=10, seed=0).shape == (50, 10)
    assert domain_features(x[:, :5], n_comps=10, seed=0).shape == (50, 5)


# ------------------------------------------------------------------ annotation
def test_label_transfer_on_separable_features_is_perfect() -> None:
    x, y = _blobs(30, 3, 5)
    names = np.array(["tumour", "stroma", "fat"])[y]
    classifier = fit_label_classifier(x[::2], names[::2], seed=0)
    result = score_transfer(names[1::2], predict_labels(classifier, x[1::2])[0])
    assert result.accuracy == result.balanced_accuracy == result.macro_f1 == 1.0
    confusion = pooled_confusion([result, result], ["fat", "stroma", "tumour"])
    assert np.array_equal(confusion, np.diag([30, 30, 30]))


# ------------------------------------------------------------------ phenotype
def _grid_windows(n: int, slides: tuple[str, ...] = ("s1", "s2")) -> pd.DataFrame:
    cells = [(s, x, y) for s in slides for x in range(n) for y in range(n)]
    return pd.DataFrame(cells, columns=["slide", "cell_x", "cell_y"])


def test_spatial_folds_never_put_neighbouring_windows_on_both_sides() -> None:
    table = _grid_windows(9)
    y = (table["cell_x"] >= 4).to_numpy()
    folds = blocked_folds(table, y, block_windows=3, n_splits=3, seed=0)
    cells = table[["cell_x", "cell_y"]].to_numpy()
    slide = table["slide"].to_numpy()
    tested = np.concatenate([test for _, test in folds])
    assert np.array_equal(np.sort(tested), np.arange(len(table)))  # every window tested once
    for train, test in folds:
        assert train.size > 0 and not set(train) & set(test)
        for i in train:
            same = slide[test] == slide[i]
            gap = np.abs(cells[test][same] - cells[i]).max(axis=1)
            assert (gap > 1).all(), "a training window touches a test window"
        # a whole block is tested together
        block = {(slide[i], cells[i, 0] // 3, cells[i, 1] // 3) for i in test}
        members = [
            j for j in range(len(table)) if (slide[j], cells[j, 0] // 3, cells[j, 1] // 3) in block
        ]
        assert set(members) == set(test)


def test_windows_take_the_majority_label_and_pool_means() -> None:
    coords = np.array([[0, 0], [10, 10], [20, 5], [150, 0], [160, 10]], dtype=float)
    labels = np.array([True, True, False, False, None], dtype=object)
    assert window_cells(coords, 100.0).tolist() == [[0, 0], [0, 0], [0, 0], [1, 0], [1, 0]]
    windows = make_windows({"s": (coords, labels)}, window_um=100.0, min_spots=1)
    assert windows.table["label"].tolist() == [True, False]
    assert windows.table["n_spots"].tolist() == [3, 1]  # the unlabelled spot is not pooled
    pooled = windows.pool({"s": np.arange(5, dtype=float)[:, None]})
    assert pooled[:, 0].tolist() == [1.0, 3.0]
    assert len(make_windows({"s": (coords, labels)}, window_um=100.0, min_spots=2).table) == 1


def test_blocked_auroc_is_one_on_a_separable_signal() -> None:
    table = _grid_windows(9)
    y = ((table["cell_x"] + table["cell_y"]) % 2 == 0).to_numpy()
    features = np.c_[y + np.random.default_rng(0).normal(0, 0.1, y.size), np.ones(y.size)]
    folds = blocked_folds(table, y, block_windows=3, n_splits=3, seed=0)
    result = blocked_auroc(features, y, folds, seed=0)
    assert result["auroc"] == 1.0 and result["n_folds"] == 3


# ------------------------------------------------------------------ baselines
def test_pca_is_fitted_on_training_slides_and_projects_the_others() -> None:
    rng = np.random.default_rng(0)
    genes = [f"g{i}" for i in range(40)]
    train = rng.normal(size=(60, 40)).astype(np.float32) + 5
    test = rng.normal(size=(30, 40)).astype(np.float32) + 5
    neighbours = [build_neighbourhoods(rng.random((n, 2)) * 1000, 14) for n in (60, 30)]
    out = pca_embeddings([train, test], neighbours, genes, train=[0], n_hvg=20, n_comps=5, seed=0)
    assert [m.shape for m in out["pca"]] == [(60, 5), (30, 5)]
    np.testing.assert_allclose(out["pca"][0].mean(axis=0), 0.0, atol=1e-4)  # centred on train only
    assert np.abs(out["pca"][1].mean(axis=0)).max() > 1e-3


def test_shared_genes_keeps_the_intersection_in_order() -> None:
    a = ad.AnnData(np.zeros((2, 3)))
    a.var_names = ["x", "y", "z"]
    b = ad.AnnData(np.zeros((2, 2)))
    b.var_names = ["z", "x"]
    assert shared_genes([a, b]) == ["x", "z"]


def test_mofa_recovers_a_planted_factor() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(120, 1))
    x = (z @ rng.normal(size=(1, 30)) * 2 + rng.normal(0, 0.3, (120, 30)) + 3).astype(np.float32)
    genes = [f"g{i}" for i in range(30)]
    factors = mofa_factors([x[:70], x[70:]], genes, n_genes=30, n_factors=3, iterations=50, seed=0)
    assert [f.shape for f in factors] == [(70, 3), (50, 3)]
    stacked = np.vstack(factors)
    best = max(abs(np.corrcoef(stacked[:, k], z[:, 0])[0, 1]) for k in range(3))
    assert best > 0.95


# ------------------------------------------------------------------ report pieces
def test_verdict_says_when_sagefm_loses() -> None:
    text = verdict({"sagefm": 0.2, "pca": 0.3, "mofa": 0.1}, higher_is_better=True, metric="ARI")
    assert "Best ARI: PCA (HVG) (0.300)" in text and "SAGE-FM (0.200) loses to PCA (HVG)" in text
    won = verdict({"model": 0.5, "zero": 0.9}, higher_is_better=False, metric="RMSE")
    assert "SAGE-FM (0.500)" in won and "loses" not in won
    # SAGE-FM's best representation is the one compared
    both = {"sagefm": 0.2, "sagefm_neighbourhood": 0.35, "pca": 0.3, "neighbour_pca": 0.4}
    text = verdict(both, higher_is_better=True, metric="ARI")
    assert "SAGE-FM neighbour-avg (0.350) loses to neighbour-avg PCA (rank 2 of 4)" in text
    won = verdict(both | {"neighbour_pca": 0.3}, higher_is_better=True, metric="ARI")
    assert "Best ARI: SAGE-FM neighbour-avg (0.350)" in won and "loses" not in won


def test_markdown_table_formats_floats_and_missing_values() -> None:
    frame = pd.DataFrame({"a": ["x"], "b": [0.12345], "c": [float("nan")]})
    assert markdown_table(frame).splitlines() == [
        "| a | b | c |",
        "|---|---|---|",
        "| x | 0.123 | – |",
    ]


def test_pretraining_splits_come_from_the_run_record(tmp_path) -> None:
    (tmp_path / "best").mkdir()
    record = {"train_slides": ["A1", "B1"], "val_slides": ["C1"]}
    (tmp_path / "run.json").write_text(json.dumps(record))
    splits, source = pretraining_splits(tmp_path / "best")
    assert splits == {"A1": "in-pretraining", "B1": "in-pretraining", "C1": "validation"}
    assert source == str(tmp_path / "run.json")
    assert pretraining_splits(None) == ({}, None)


def test_banksy_features_weight_z_scored_own_and_neighbour_expression() -> None:
    rng = np.random.default_rng(0)
    own = [rng.normal(3, 2, (50, 4)), rng.normal(3, 2, (20, 4))]
    nb = [rng.normal(-1, 5, (50, 4)), rng.normal(-1, 5, (20, 4))]
    features = banksy_features(own, nb, train=[0], lam=0.8)
    assert [f.shape for f in features] == [(50, 8), (20, 8)]
    # on the training slide each half is z-scored, then weighted sqrt(1 - λ) and sqrt(λ)
    np.testing.assert_allclose(features[0].std(axis=0), np.sqrt([0.2] * 4 + [0.8] * 4), rtol=1e-5)
    np.testing.assert_allclose(features[0].mean(axis=0), 0.0, atol=1e-6)
    expected = np.sqrt(0.8) * (nb[1] - nb[0].mean(axis=0)) / nb[0].std(axis=0)
    np.testing.assert_allclose(features[1][:, 4:], expected, rtol=1e-5)
    assert not banksy_features(own, nb, train=[0], lam=0.0)[0][:, 4:].any()


def _population_z(x: np.ndarray) -> np.ndarray:
    sd = x.std(axis=0)
    return np.divide(x - x.mean(axis=0), sd, out=np.zeros_like(x), where=sd > 0)


def test_banksy_agf_features_are_banksys_weighted_blocks() -> None:
    """pybanksy's matrix, checked against the formula by hand on a jittered 8 x 8 lattice:
    own block sqrt(1 - λ) z(x); mean block sqrt(2λ/3) z(W x), W a row-normalised Gaussian of
    distance over the 6 nearest spots, scaled by their median distance; AGF block sqrt(λ/3).
    A constant gene is left out."""
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(np.arange(8.0), np.arange(8.0)), axis=-1).reshape(-1, 2)
    coords = 100.0 * grid + rng.normal(0, 5, grid.shape)
    x = np.column_stack([grid[:, 0] + rng.normal(0, 0.1, 64), np.ones(64), rng.normal(size=64)])
    lam, k, varying = 0.2, 6, x[:, [0, 2]]
    features = banksy_agf_features(x, coords, k_geom=k, lam=lam, max_m=1)
    assert features.shape == (64, 6) and np.isfinite(features).all()
    np.testing.assert_allclose(
        features[:, :2], np.sqrt(1 - lam) * _population_z(varying), atol=1e-5
    )
    distances = np.linalg.norm(coords[:, None] - coords[None], axis=-1)
    np.fill_diagonal(distances, np.inf)
    nearest = np.argsort(distances, axis=1)[:, :k]
    d = np.take_along_axis(distances, nearest, axis=1)
    w = np.exp(-((d / np.median(d, axis=1, keepdims=True)) ** 2))
    w /= w.sum(axis=1, keepdims=True)
    mean = _population_z(np.einsum("nk,nkg->ng", w, varying[nearest]))
    np.testing.assert_allclose(features[:, 2:4], np.sqrt(2 * lam / 3) * mean, atol=1e-5)
    np.testing.assert_allclose(features[:, 4:].std(axis=0), np.sqrt(lam / 3), rtol=1e-4)
    without = banksy_agf_features(x, coords, k_geom=k, lam=lam, max_m=0)
    np.testing.assert_allclose(without[:, 2:], np.sqrt(lam) * mean, atol=1e-5)
    with pytest.raises(InputDataError, match="varies"):
        banksy_agf_features(np.ones((64, 3)), coords, k_geom=k, lam=lam, max_m=1)


def test_banksy_agf_embeddings_ignore_each_slides_scale() -> None:
    """Each slide's BANKSY matrix is z-scored on that slide, so a slide that is another one's
    expression times per-gene factors, at the same spots, gets the same features (an offset would
    move pybanksy's uncentred AGF); a gene constant on one slide is left out of all of them, so
    the slides stay comparable."""
    rng = np.random.default_rng(1)
    coords = rng.random((80, 2)) * 1000
    genes = [f"g{i}" for i in range(30)]
    base = rng.gamma(2.0, 1.0, (80, 30)).astype(np.float32)
    other = base * rng.uniform(0.5, 3.0, 30).astype(np.float32)
    other[:, 5] = 1.0  # constant on the second slide only
    out = banksy_agf_embeddings(
        [base, other], [coords, coords], genes, train=[0], n_hvg=30, n_comps=5, seed=0,
        k_geom=6, lam=0.2, max_m=1,
    )  # fmt: skip
    assert [o.shape for o in out] == [(80, 5), (80, 5)]
    np.testing.assert_allclose(out[0].mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(out[1], out[0], atol=1e-3)
    shifted = banksy_agf_embeddings(
        [base, base + 5.0], [coords, coords], genes, train=[0], n_hvg=30, n_comps=5, seed=0,
        k_geom=6, lam=0.2, max_m=1,
    )  # fmt: skip
    assert not np.allclose(shifted[1], shifted[0], atol=1e-3)  # the uncentred AGF moves


def test_every_baseline_is_fitted_on_the_training_slides() -> None:
    rng = np.random.default_rng(0)
    genes = [f"g{i}" for i in range(40)]
    matrices = [rng.normal(size=(n, 40)).astype(np.float32) + 5 for n in (60, 30)]
    neighbours = [build_neighbourhoods(rng.random((n, 2)) * 1000, 14) for n in (60, 30)]
    out = pca_embeddings(matrices, neighbours, genes, train=[0], n_hvg=20, n_comps=5, seed=0)
    assert set(out) == {"pca", "neighbour_pca", "banksy"}
    for name, (train, test) in out.items():
        assert train.shape == (60, 5) and test.shape == (30, 5), name
        np.testing.assert_allclose(train.mean(axis=0), 0.0, atol=1e-4)


def test_slide_centred_pca_removes_a_slide_offset() -> None:
    """A second slide that is the first plus a per-gene offset (a patient or batch effect) gets
    the first slide's PCA coordinates; plain PCA carries the offset."""
    rng = np.random.default_rng(0)
    genes = [f"g{i}" for i in range(40)]
    first = rng.normal(size=(60, 40)).astype(np.float32) + 5
    second = first + rng.uniform(0.5, 2.0, size=40).astype(np.float32)
    kwargs = {"train": [0], "n_hvg": 20, "n_comps": 5, "seed": 0}
    centred = slide_centred_pca([first, second], genes, **kwargs)
    np.testing.assert_allclose(centred[1], centred[0], atol=1e-4)
    neighbours = [build_neighbourhoods(rng.random((60, 2)) * 1000, 14)] * 2
    plain = pca_embeddings([first, second], neighbours, genes, **kwargs)["pca"]
    assert np.abs(plain[1] - plain[0]).max() > 0.5


def test_evaluation_config_round_trips_through_json(tmp_path) -> None:
    config = EvaluationConfig.quick()
    config.save(tmp_path / "config.json")
    again = EvaluationConfig.load(tmp_path / "config.json")
    assert again == config
    assert again.dataset("dlpfc").slides == ("dlpfc_151673", "dlpfc_151674")
    assert again.dataset("her2st").missing_labels == ("undetermined",)
    assert EvaluationConfig().dataset("her2st").slides == ("A1", "B1", "C1", "D1", "E1", "F1")


def test_evaluation_config_refuses_undescribed_datasets() -> None:
    with pytest.raises(ConfigError, match="not described"):
        EvaluationConfig(domain_dataset="mouse")
    dlpfc = EvaluationConfig().dataset("dlpfc")
    with pytest.raises(ConfigError, match="unique"):
        EvaluationConfig(datasets=(dlpfc, dlpfc))


def test_spot_labels_drop_the_missing_values_and_needs_the_column() -> None:
    adata = ad.AnnData(np.zeros((3, 1)))
    adata.obs["label"] = ["tumour", "undetermined", np.nan]
    her2st = EvaluationConfig().dataset("her2st")
    labels = spot_labels(adata, her2st)
    assert labels.iloc[0] == "tumour" and labels.iloc[1:].isna().all()
    with pytest.raises(InputDataError, match="no label column 'layer'"):
        spot_labels(adata, EvaluationConfig().dataset("dlpfc"))


# ------------------------------------------------------------------ the model's embedding
def test_slide_level_tasks_read_a_slide_centring_model_on_the_corpus_centre(tmp_path) -> None:
    """Phenotype tasks compare slides, so they take `embed(slide_centering=False)`; the other
    sections take the model as pretrained."""
    from tests.test_model_inference import _random_model

    from sagefm.config import ModelConfig
    from sagefm.datasets import synthetic_tissue
    from sagefm.evaluation.run import EvaluationRun

    adata = synthetic_tissue(n_slides=1, grid_rows=6, grid_cols=6, n_genes=40)[0]
    genes = list(adata.var_names)
    model = _random_model(adata, ModelConfig(hidden_sizes=(16, 8), slide_centering=True))
    run = EvaluationRun(model, EvaluationConfig(), 0, {}, False, tmp_path)

    slide_level = run.embedding(adata, genes, slide_level=True)
    np.testing.assert_array_equal(slide_level, model.embed(adata.copy(), slide_centering=False))
    own = run.embedding(adata, genes)
    np.testing.assert_array_equal(own, model.embed(adata.copy()))
    assert np.abs(own - slide_level).max() > 1e-2
