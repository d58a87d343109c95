"""The figure of ``sagefm demo``: domains found beside the true ones, and masked-gene recovery.

Built on `matplotlib.figure.Figure` without pyplot, as every figure of `sagefm.pl`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from scipy.optimize import linear_sum_assignment
from sklearn.metrics.cluster import contingency_matrix

from sagefm.pl.evaluation import label_panel, save_figure


def match_labels(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(n,) str: ``found`` renamed to the ``truth`` label each overlaps most (one-to-one).

    Cluster numbers are arbitrary; renaming them by the assignment of largest total overlap
    (Hungarian algorithm on the contingency table) gives a found domain the colour of the true
    domain it recovers. Clusters left without a partner (more clusters than true labels) keep
    their own name, prefixed with ``"found "``.
    """
    found, truth = np.asarray(found).astype(str), np.asarray(truth).astype(str)
    found_names, found_codes = np.unique(found, return_inverse=True)
    truth_names, truth_codes = np.unique(truth, return_inverse=True)
    overlap = contingency_matrix(found_codes, truth_codes)  # (n found, n true)
    rows, cols = linear_sum_assignment(overlap, maximize=True)
    names = np.array([f"found {name}" for name in found_names], dtype=object)
    names[rows] = truth_names[cols]
    return names[found_codes].astype(str)


def demo_figure(
    coords: np.ndarray,
    domains: Mapping[str, np.ndarray],
    rmse: Mapping[str, float],
    path: Path,
    *,
    title: str = "",
) -> Path:
    """One row: a map per entry of ``domains``, then bars of masked-gene RMSE per method.

    ``coords`` (n, 2) spot positions; ``domains`` {panel title: labels (n,)}, the first entry the
    true domains: the others are recoloured to match it (`match_labels`). ``rmse`` {method: RMSE
    over the hidden entries}, drawn in the given order, the lowest bar highlighted.
    """
    (truth_title, truth), *found = domains.items()
    truth = np.asarray(truth).astype(str)
    categories = sorted(set(truth))
    fig = Figure(figsize=(3.2 * (len(domains) + 1), 3.2), layout="constrained")
    axes = fig.subplots(1, len(domains) + 1)
    label_panel(axes[0], coords, truth, truth_title, categories=categories)
    for ax, (name, labels) in zip(axes[1:], found, strict=False):
        label_panel(ax, coords, match_labels(labels, truth), name, categories=categories)
    _rmse_bars(axes[-1], rmse)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def _rmse_bars(ax: Axes, rmse: Mapping[str, float]) -> None:
    names, values = list(rmse), np.array(list(rmse.values()))
    best = int(np.argmin(values))
    colours = ["tab:orange" if i == best else "tab:grey" for i in range(len(names))]
    bars = ax.barh(range(len(names)), values, color=colours)
    ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.2 * float(values.max()))
    ax.set_xlabel("RMSE on hidden genes (log1p)", fontsize=8)
    ax.set_title("masked-gene recovery", fontsize=9)
