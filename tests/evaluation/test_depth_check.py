"""The evaluation's depth check (`sagefm.evaluation.depth`) on hand-built representations."""

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from sagefm.evaluation.depth import DEPTH_BAR, depth_correlations, depth_rows, depth_text


def _slide(rng: np.random.Generator, n: int = 400) -> ad.AnnData:
    counts = rng.poisson(rng.uniform(1, 20, size=(n, 1)), size=(n, 30)).astype(np.float32)
    return ad.AnnData(X=sp.csr_matrix(counts))


def test_a_depth_axis_is_found_and_an_unrelated_one_is_not() -> None:
    rng = np.random.default_rng(0)
    adata = _slide(rng)
    log_library = np.log(np.asarray(adata.X.sum(axis=1)).ravel())
    noise = rng.normal(size=(adata.n_obs, 6))
    gauge = noise.copy()
    gauge[:, 0] = 10 * (log_library - log_library.mean())  # the leading PC is depth itself
    assert depth_correlations(gauge, log_library)[0] > 0.99
    assert depth_correlations(noise, log_library).max() < 0.2
    rows = depth_rows("s1", "zero-shot", adata, {"sagefm": gauge, "pca": noise}, seed=0)
    table = pd.DataFrame.from_records(rows)
    assert table.set_index("method").loc["sagefm", "max"] > DEPTH_BAR
    assert table.set_index("method").loc["pca", "max"] < DEPTH_BAR
    assert {f"pc{i}" for i in range(1, 6)} <= set(table.columns)
    assert "does not meet" in depth_text(table)
    assert " meets" in depth_text(table[table["method"] == "pca"].replace({"pca": "sagefm"}))


def test_the_annotation_row_scores_the_true_labels_on_labelled_spots() -> None:
    """Two domains, one at a quarter of the other's depth, plus unlabelled spots: the one-hot
    labels are a depth gauge there (|r| near 1), and a label that ignores depth is not."""
    rng = np.random.default_rng(1)
    n = 400
    shallow = np.arange(n) < n // 2
    scale = np.where(shallow, 2.0, 8.0)[:, None]
    adata = ad.AnnData(X=sp.csr_matrix(rng.poisson(scale, size=(n, 50)).astype(np.float32)))
    truth = pd.Series(np.where(shallow, "a", "b"), dtype=object)
    truth[::10] = np.nan  # unlabelled spots are left out of the annotation row
    noise = {"sagefm": rng.normal(size=(n, 6))}
    rows = pd.DataFrame.from_records(depth_rows("s1", "zero-shot", adata, noise, 0, truth))
    by_method = rows.set_index("method")
    assert by_method.loc["annotation", "max"] > 0.9
    assert by_method.loc["sagefm", "max"] < 0.2
    assert "annotation" in depth_text(rows)
    unrelated = pd.Series(np.where(np.arange(n) % 2 == 0, "a", "b"), dtype=object)
    rows = pd.DataFrame.from_records(depth_rows("s1", "zero-shot", adata, noise, 0, unrelated))
    assert rows.set_index("method").loc["annotation", "max"] < 0.2


def test_within_domains_depth_is_what_the_domains_do_not_explain() -> None:
    """Two domains at different depths. A representation that is the domain (plus noise) follows
    depth across domains but not within them; one that follows each spot's own depth does both.
    By hand: with depth centred per domain, a PC equal to that centred depth has |r| 1."""
    rng = np.random.default_rng(2)
    n = 400
    shallow = np.arange(n) < n // 2
    scale = np.where(shallow, 2.0, 8.0)[:, None] * rng.uniform(0.5, 1.5, size=(n, 1))
    adata = ad.AnnData(X=sp.csr_matrix(rng.poisson(scale, size=(n, 50)).astype(np.float32)))
    log_library = np.log(np.asarray(adata.X.sum(axis=1)).ravel())
    truth = pd.Series(np.where(shallow, "a", "b"), dtype=object)
    truth[::10] = np.nan
    domain = np.c_[np.where(shallow, 0.0, 5.0), rng.normal(scale=0.1, size=(n, 3))]
    gauge = np.c_[10 * log_library, rng.normal(scale=0.1, size=(n, 3))]
    features = {"sagefm": domain, "pca": gauge}
    rows = pd.DataFrame.from_records(depth_rows("s1", "zero-shot", adata, features, 0, truth))
    by_method = rows.set_index("method")
    assert by_method.loc["sagefm", "max"] > 0.8  # across domains, the domain is depth
    assert by_method.loc["sagefm", "max_within_domains"] < 0.2
    assert by_method.loc["pca", "max_within_domains"] > 0.99
    assert np.isnan(by_method.loc["annotation", "max_within_domains"])
    text = depth_text(rows)
    assert "Within the annotated domains" in text and "within domains" in text
    codes = pd.Categorical(truth).codes
    centred = log_library - pd.Series(log_library).groupby(codes).transform("mean").to_numpy()
    exact = np.c_[centred, rng.normal(scale=1e-3, size=(n, 2))]
    exact[codes < 0, 0] = 0.0
    assert depth_correlations(exact, log_library, domains=codes)[0] > 0.999
    assert "Within the annotated domains" not in depth_text(rows.drop(columns="max_within_domains"))
