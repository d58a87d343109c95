"""Is a representation a depth gauge? |Pearson r| between its top principal components and log
library size, per section (issue 13, bar 5: at most 0.3 for every one of the top 5 PCs).

PCA of log-normalised expression scores near 0 by construction of the normalisation; an embedding
whose first component tracks sequencing depth spends its leading variance on a technical factor.
"""

from __future__ import annotations

from collections.abc import Mapping

import anndata as ad
import numpy as np
import pandas as pd
from sklearn.decomposition import PCA

from sagefm.evaluation.report import LABELS, markdown_table

#: principal components checked, and the bar each must stay under
N_DEPTH_PCS = 5
DEPTH_BAR = 0.3


def log_library_size(adata: ad.AnnData) -> np.ndarray:
    """(n_spots,) natural log of each spot's total counts in ``X`` (a spot with none reads 0)."""
    total = np.asarray(adata.X.sum(axis=1), dtype=np.float64).ravel()
    return np.log(np.maximum(total, 1.0))


def depth_correlations(
    features: np.ndarray,
    log_library: np.ndarray,
    *,
    n_pcs: int = N_DEPTH_PCS,
    seed: int = 0,
    domains: np.ndarray | None = None,
) -> np.ndarray:
    """(n_pcs,) |r| between each of the top ``n_pcs`` PCs of ``features`` (n, d) and
    ``log_library`` (n,); 0 for a constant component.

    With ``domains`` (n,) int codes (-1: unlabelled, left out), both are centred on each
    domain's mean first: the correlation of depth's variation *within* the domains, which the
    tissue's own depth differences between domains do not explain."""
    return _pc_correlations(_top_pcs(features, n_pcs, seed), log_library, domains)


def _top_pcs(features: np.ndarray, n_pcs: int, seed: int) -> np.ndarray:
    """(n, min(n_pcs, n, d)) the top principal components of ``features`` (n, d)."""
    n_pcs = min(n_pcs, *features.shape)
    return PCA(n_components=n_pcs, random_state=seed).fit_transform(features.astype(np.float64))


def _pc_correlations(
    pcs: np.ndarray, log_library: np.ndarray, domains: np.ndarray | None = None
) -> np.ndarray:
    """`depth_correlations` from the PCs (n, k) already taken."""
    if domains is None:
        centred = pcs - pcs.mean(axis=0)
        depth = log_library - log_library.mean()
    else:
        known = domains >= 0
        centred = _centred_within(pcs[known], domains[known])
        depth = _centred_within(log_library[known, None], domains[known])[:, 0]
    norms = np.linalg.norm(centred, axis=0) * np.linalg.norm(depth)
    covariance = np.abs(centred.T @ depth)
    return np.divide(covariance, norms, out=np.zeros(pcs.shape[1]), where=norms > 0)


def _centred_within(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """(n, k) ``values`` minus the mean of each row's group (n,)."""
    frame = pd.DataFrame(values)
    return (frame - frame.groupby(groups).transform("mean")).to_numpy()


def annotation_features(truth: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(n_labelled, n_labels) one-hot of the manual annotation, and the labelled spots (n,) bool:
    the representation a perfect domain caller would have."""
    known = truth.notna().to_numpy()
    onehot = pd.get_dummies(truth[known].astype(str)).to_numpy(dtype=np.float64)
    return onehot, known


def depth_rows(
    section: str,
    split: str,
    adata: ad.AnnData,
    features: Mapping[str, np.ndarray],
    seed: int,
    truth: pd.Series | None = None,
) -> list[dict[str, object]]:
    """One row per representation of a section: |r| of each top PC and their maximum.

    With ``truth`` (the manual annotation, NaN where unlabelled) an ``annotation`` row scores its
    one-hot on the labelled spots: where tissue domains differ in depth (DLPFC: layer 1 and white
    matter have fewer counts) even the true labels correlate with depth, which bounds how far a
    representation that finds the domains can go below it. Each representation's row then also
    has ``max_within_domains``: the same maximum with PCs and depth centred on each domain
    (labelled spots), the part of depth the domains do not explain.
    """
    log_library = log_library_size(adata)
    scored = [(m, rep, log_library) for m, rep in features.items()]
    if truth is not None:
        onehot, known = annotation_features(truth)
        scored.append(("annotation", onehot, log_library[known]))
    rows: list[dict[str, object]] = []
    codes = None if truth is None else pd.Categorical(truth).codes
    for method, rep, depth in scored:
        pcs = _top_pcs(rep, N_DEPTH_PCS, seed)  # once for both correlations
        r = _pc_correlations(pcs, depth)
        row: dict[str, object] = {"section": section, "split": split, "method": method}
        row |= {f"pc{i + 1}": float(v) for i, v in enumerate(r)}
        row["max"] = float(r.max())
        if codes is not None and method != "annotation":  # the labels are constant within
            within = _pc_correlations(pcs, depth, codes)
            row["max_within_domains"] = float(within.max())
        rows.append(row)
    return rows


def depth_text(table: pd.DataFrame) -> str:
    """The report's paragraph: max |r| per section and representation, and the bar's verdict."""
    wide, worst = _per_section(table, "max", "max abs r")
    passed = "meets" if worst.get("sagefm", np.inf) <= DEPTH_BAR else "does not meet"
    return "\n\n".join(
        [
            "### Depth",
            f"|Pearson r| between each of the top {N_DEPTH_PCS} PCs of a representation and log "
            f"library size (total counts), per section; the largest of the {N_DEPTH_PCS} is shown. "
            f"SAGE-FM {passed} the bar (at most {DEPTH_BAR} on every section): worst "
            f"{worst.get('sagefm', float('nan')):.3f}."
            + (
                " *annotation*: the one-hot manual labels on the labelled spots, the depth "
                "correlation of a representation that is exactly the domains (worst "
                f"{worst['annotation']:.3f})."
                if "annotation" in worst
                else ""
            ),
            markdown_table(wide.reset_index()),
            *_within_text(table),
        ]
    )


def _within_text(table: pd.DataFrame) -> list[str]:
    """The within-domain paragraph and table, where the rows have them."""
    if "max_within_domains" not in table or table["max_within_domains"].isna().all():
        return []
    wide, worst = _per_section(table, "max_within_domains", "within domains")
    return [
        "Within the annotated domains (each PC and log library centred on its domain's mean, "
        "labelled spots): depth's variation that the tissue's domains do not explain. SAGE-FM "
        f"worst {worst.get('sagefm', float('nan')):.3f}.",
        markdown_table(wide.reset_index()),
    ]


def _per_section(table: pd.DataFrame, column: str, prefix: str) -> tuple[pd.DataFrame, pd.Series]:
    """``column`` per section (rows) and representation (columns headed ``prefix`` and its
    label; representations without it are left out), and each representation's worst."""
    wide = table.pivot_table(
        index=["section", "split"], columns="method", values=column, sort=False
    )
    wide.columns = [f"{prefix} {LABELS[m]}" for m in wide.columns]
    return wide, table.groupby("method", sort=False)[column].max()
