"""Figures of the evaluation report. Each function draws one PNG and returns its path.

Figures are built on `matplotlib.figure.Figure` and saved with the Agg renderer, without pyplot:
nothing global (backend, open figures) changes in the caller's session.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

_DPI = 110


def save_figure(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` (the resolution of every figure of `sagefm.pl`)."""
    fig.savefig(path, dpi=_DPI, bbox_inches="tight")
    return path


def _flip_y(ax: Axes) -> None:
    """Image convention: y grows downwards, equal aspect, no ticks."""
    ax.invert_yaxis()
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def gene_r_histogram(r: Mapping[str, np.ndarray], path: Path) -> Path:
    """Histogram of per-gene Pearson r (true vs. predicted hidden values), one series per slide group."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    bins = np.linspace(-1, 1, 41).tolist()
    for name, values in r.items():
        values = values[np.isfinite(values)]
        ax.hist(values, bins=bins, alpha=0.6, label=f"{name} ({values.size} genes)")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("per-gene Pearson r, true vs. predicted (hidden entries)")
    ax.set_ylabel("genes")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def gene_maps(
    coords: np.ndarray,
    genes: Sequence[str],
    truth: np.ndarray,
    predicted: np.ndarray,
    path: Path,
    *,
    title: str,
) -> Path:
    """Rows = genes, columns = measured / predicted with the gene hidden; shared colour scale per row.

    ``coords`` (n, 2); ``truth`` and ``predicted`` (n, len(genes)) on the model's scale.
    """
    fig = Figure(figsize=(7, 3.2 * len(genes)))
    axes = fig.subplots(len(genes), 2, squeeze=False)
    for row, gene in enumerate(genes):
        high = float(max(np.nanmax(truth[:, row]), np.nanmax(predicted[:, row]), 1e-6))
        for col, (values, kind) in enumerate(
            ((truth[:, row], "measured"), (predicted[:, row], "predicted (hidden)"))
        ):
            ax = axes[row, col]
            points = ax.scatter(coords[:, 0], coords[:, 1], c=values, s=4, vmin=0, vmax=high)
            ax.set_title(f"{gene}: {kind}", fontsize=9)
            _flip_y(ax)
        fig.colorbar(points, ax=axes[row].tolist(), shrink=0.8, label="log1p counts")
    fig.suptitle(title)
    return save_figure(fig, path)


def domain_maps(
    sections: Mapping[str, tuple[np.ndarray, Mapping[str, np.ndarray]]], path: Path
) -> Path:
    """One row per section: ``sections[name] = (coords (n, 2), {panel title: labels (n,)})``.

    The first panel is meant to be the manual annotation; missing labels (NaN/None) are grey.
    """
    n_cols = max(len(panels) for _, panels in sections.values())
    fig = Figure(figsize=(2.6 * n_cols, 2.8 * len(sections)))
    axes = fig.subplots(len(sections), n_cols, squeeze=False)
    for row, (name, (coords, panels)) in enumerate(sections.items()):
        for col, (title, labels) in enumerate(panels.items()):
            label_panel(axes[row, col], coords, labels, f"{name}: {title}")
        for col in range(len(panels), n_cols):
            axes[row, col].set_axis_off()
    return save_figure(fig, path)


def label_panel(
    ax: Axes,
    coords: np.ndarray,
    labels: np.ndarray,
    title: str,
    *,
    categories: Sequence[str] | None = None,
) -> None:
    """Spots at ``coords`` (n, 2) coloured by ``labels`` (n,); missing labels (NaN/None) grey.

    Colours follow the order of ``categories`` (labels outside it come after, sorted), so panels
    given the same ``categories`` colour the same label alike; by default the sorted labels.
    """
    labels = np.asarray(labels, dtype=object)
    known = np.array([v is not None and v == v for v in labels])  # v != v for NaN
    shown = labels[known].astype(str)
    order = [] if categories is None else list(categories)
    order += sorted(set(shown) - set(order))
    code = {name: i for i, name in enumerate(order)}
    codes = np.array([code[name] for name in shown], dtype=np.int64)
    ax.scatter(coords[~known, 0], coords[~known, 1], s=2, c="lightgrey")
    ax.scatter(coords[known, 0], coords[known, 1], s=2, c=codes, cmap="tab10", vmin=0, vmax=9)
    ax.set_title(title, fontsize=8)
    _flip_y(ax)


def confusion_matrices(
    matrices: Mapping[str, np.ndarray], classes: Sequence[str], path: Path
) -> Path:
    """Row-normalised confusion matrices (true class rows, predicted columns), one panel per method."""
    fig = Figure(figsize=(4.2 * len(matrices), 4.4))
    axes = fig.subplots(1, len(matrices), squeeze=False)[0]
    for ax, (method, counts) in zip(axes, matrices.items(), strict=True):
        totals = counts.sum(axis=1, keepdims=True)
        share = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
        ax.imshow(share, vmin=0, vmax=1, cmap="Blues")
        for (i, j), value in np.ndenumerate(counts):
            dark = share[i, j] > 0.6
            ax.text(
                j, i, str(value), ha="center", va="center", fontsize=6, color="w" if dark else "k"
            )
        ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(classes)), classes if ax is axes[0] else [], fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_title(method, fontsize=9)
    axes[0].set_ylabel("true")
    return save_figure(fig, path)


def perturbation_aurocs(table: pd.DataFrame, path: Path, *, bar: float, alpha: float) -> Path:
    """Per slide, the |effect| AUROC of L–R pairs vs the null for SAGE-FM and for the data's own
    slope (columns ``auroc_model``, ``auroc_data``, ``pvalue_*``, ``slide``, ``split``), the bar
    dashed; an asterisk marks p < ``alpha``."""
    fig = Figure(figsize=(max(5.0, 0.7 * len(table) + 2), 4))
    ax = fig.add_subplot()
    x = np.arange(len(table))
    for offset, source, label, colour in (
        (-0.2, "model", "SAGE-FM", "tab:blue"),
        (0.2, "data", "data's own slope", "tab:grey"),
    ):
        heights = table[f"auroc_{source}"].to_numpy(dtype=np.float64)
        ax.bar(x + offset, heights, width=0.4, color=colour, label=label)
        for xi, h, p in zip(x, heights, table[f"pvalue_{source}"], strict=True):
            if p < alpha:
                ax.text(xi + offset, h + 0.005, "*", ha="center", fontsize=9)
    ax.axhline(bar, color="k", ls="--", lw=0.8, label=f"bar {bar}")
    ax.axhline(0.5, color="k", lw=0.5)
    names = [f"{s}\n{split}" for s, split in zip(table["slide"], table["split"], strict=True)]
    ax.set_xticks(x, names, fontsize=7, rotation=45, ha="right")
    lowest = np.nanmin(table[["auroc_model", "auroc_data"]].to_numpy(dtype=np.float64), initial=1.0)
    ax.set_ylim(min(0.3, lowest - 0.05), 1.0)
    ax.set_ylabel("|effect| AUROC, L–R pairs vs null")
    ax.set_title(f"* p < {alpha} (Mann–Whitney, L–R vs null)", fontsize=8)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
