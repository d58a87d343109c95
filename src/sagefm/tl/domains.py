"""Spatial domains: cluster spot representations and score them against a manual annotation."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import (
    adjusted_rand_score,
    davies_bouldin_score,
    normalized_mutual_info_score,
    silhouette_score,
)
from sklearn.mixture import GaussianMixture

Clusterer = Literal["kmeans", "gmm"]
CLUSTERERS: tuple[Clusterer, ...] = ("kmeans", "gmm")
#: Metrics where larger is better (Davies–Bouldin is the exception: smaller is better).
HIGHER_IS_BETTER = {"ari": True, "nmi": True, "silhouette": True, "davies_bouldin": False}


def clustering_features(features: np.ndarray, *, n_comps: int, seed: int) -> np.ndarray:
    """(n, min(d, n_comps)): PCA of the representation when it is wider than ``n_comps``.

    Every method is clustered in at most ``n_comps`` dimensions so that a Gaussian mixture with full
    covariances is well posed (a 1024-d SAGE-FM embedding would need 7 covariances of 1024²).
    """
    if features.shape[1] <= n_comps:
        return np.asarray(features, dtype=np.float64)
    return PCA(n_components=n_comps, random_state=seed).fit_transform(features)


def cluster(features: np.ndarray, k: int, method: Clusterer, *, seed: int) -> np.ndarray:
    """(n,) int cluster labels from k-means (10 starts) or a full-covariance Gaussian mixture."""
    if method == "kmeans":
        return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(features)
    gmm = GaussianMixture(n_components=k, covariance_type="full", reg_covar=1e-4, random_state=seed)
    return gmm.fit_predict(features)


def domain_scores(features: np.ndarray, labels: np.ndarray, truth: pd.Series) -> dict[str, float]:
    """ARI and NMI against ``truth`` on annotated spots; silhouette, Davies–Bouldin on all spots.

    ``truth`` is the manual annotation per spot (NaN where unlabelled); ``labels`` the clusters of
    ``features``. Silhouette and Davies–Bouldin are NaN with a single cluster.
    """
    known = truth.notna().to_numpy()
    reference = truth.astype(str).to_numpy()[known]
    several = np.unique(labels).size > 1
    return {
        "ari": float(adjusted_rand_score(reference, labels[known])),
        "nmi": float(normalized_mutual_info_score(reference, labels[known])),
        "silhouette": float(silhouette_score(features, labels)) if several else float("nan"),
        "davies_bouldin": float(davies_bouldin_score(features, labels))
        if several
        else float("nan"),
    }
