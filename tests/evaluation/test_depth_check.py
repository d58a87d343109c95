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
