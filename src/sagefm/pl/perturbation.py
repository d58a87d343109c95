"""Figures of in-silico perturbation and interpretation. Each function draws one PNG, returns its path.

Built on `matplotlib.figure.Figure` without pyplot (the caller's backend and figures are untouched).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from sagefm.pl.evaluation import save_figure
from sagefm.tl.lr_pairs import pair_label


def effect_distribution(
    table: pd.DataFrame,
    null: pd.DataFrame,
    enrichment: dict[str, float],
    path: Path,
    data_enrichment: dict[str, float] | None = None,
) -> Path:
    """Histograms of the mean effect of L–R pairs vs matched null pairs; with a
    ``data_effect`` column (`sagefm.tl.perturb_statistics.data_effects`), beside them each pair's
    model effect against the data's own linear answer."""
    with_data = "data_effect" in table and "data_effect" in null
    fig = Figure(figsize=(11 if with_data else 6, 4))
    ax = fig.add_subplot(1, 2 if with_data else 1, 1)
    values = np.concatenate([table["mean_effect"], null["mean_effect"]])
    bins = np.linspace(values.min(), values.max(), 41).tolist() if values.size else 10
    for frame, label, colour in ((table, "L–R", "tab:blue"), (null, "null", "tab:orange")):
        ax.hist(
            frame["mean_effect"],
            bins=bins,
            alpha=0.6,
            density=True,
            color=colour,
            label=f"{label} ({len(frame)})",
        )
    ax.axvline(0, color="k", lw=0.8)
    ax.set_title(_auroc_title("model", enrichment), fontsize=9)
    ax.set_xlabel("mean effect: pred(ligand high) − pred(ligand low), log1p")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    if with_data:
        ax = fig.add_subplot(1, 2, 2)
        for frame, label, colour in ((null, "null", "tab:orange"), (table, "L–R", "tab:blue")):
            ax.scatter(
                frame["data_effect"], frame["mean_effect"], s=6, alpha=0.6, c=colour, label=label
            )
        ax.axhline(0, color="k", lw=0.8)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_title(_auroc_title("data", data_enrichment or {}), fontsize=9)
        ax.set_xlabel("data: neighbour-ligand slope × clamp range, log1p")
        ax.set_ylabel("model mean effect, log1p")
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def _auroc_title(what: str, enrichment: dict[str, float]) -> str:
    if "auroc_abs" not in enrichment:
        return f"{what}: no null pairs"
    return (
        f"{what}: |effect| AUROC L–R vs null {enrichment['auroc_abs']:.2f} "
        f"(p = {enrichment['pvalue_abs']:.2g})"
    )


def top_pairs(table: pd.DataFrame, path: Path, *, n: int = 20) -> Path:
    """The ``n`` pairs with the largest |mean effect| as bars with their 95% confidence intervals."""
    top = table.reindex(table["mean_effect"].abs().sort_values(ascending=False).index).head(n)
    top = top.iloc[::-1]
    fig = Figure(figsize=(6, 0.3 * len(top) + 1.2))
    ax = fig.add_subplot()
    y = np.arange(len(top))
    err = np.vstack([top["mean_effect"] - top["ci_low"], top["ci_high"] - top["mean_effect"]])
    colours = np.where(top["mean_effect"] > 0, "tab:red", "tab:blue")
    ax.barh(y, top["mean_effect"], xerr=err, color=colours, capsize=2)
    ax.set_yticks(
        y, [pair_label(a, b) for a, b in zip(top["ligand"], top["receptor"], strict=True)]
    )
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("mean effect on the receptor (log1p), 95% CI over spots")
    return save_figure(fig, path)


def effect_map(coords: np.ndarray, effects: pd.Series, path: Path, *, title: str) -> Path:
    """Per-spot effect of one pair at the spots' positions (``coords`` (n, 2) of those spots)."""
    fig = Figure(figsize=(5.5, 5))
    ax = fig.add_subplot()
    limit = float(np.abs(effects).max()) or 1.0
    points = ax.scatter(
        coords[:, 0], coords[:, 1], c=effects, cmap="coolwarm", vmin=-limit, vmax=limit, s=12
    )
    fig.colorbar(points, ax=ax, label="effect (log1p)")
    ax.invert_yaxis()
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def attribution_bars(table: pd.DataFrame, path: Path, *, n: int = 15) -> Path:
    """Top ``n`` input genes by |attribution|, one panel for the centre and one for the neighbours."""
    fig = Figure(figsize=(9, 0.3 * n + 1.5))
    for i, position in enumerate(("centre", "neighbours")):
        ax = fig.add_subplot(1, 2, i + 1)
        part = table[table["position"] == position].sort_values("rank").head(n).iloc[::-1]
        colours = np.where(part["attribution"] > 0, "tab:red", "tab:blue")
        ax.barh(np.arange(len(part)), part["attribution"], color=colours)
        ax.set_yticks(np.arange(len(part)), part["gene"])
        ax.axvline(0, color="k", lw=0.8)
        ax.set_title(f"{position} inputs", fontsize=9)
        ax.set_xlabel(f"attribution to {table.attrs.get('target', 'target')}")
    return save_figure(fig, path)


def dependency_heatmap(matrix: pd.DataFrame, path: Path) -> Path:
    """Gene × gene dependency matrix (rows inputs, columns outputs), symmetric colour scale."""
    size = 0.35 * max(len(matrix), 4) + 2
    fig = Figure(figsize=(size + 1, size))
    ax = fig.add_subplot()
    limit = float(np.abs(matrix.to_numpy()).max()) or 1.0
    image = ax.imshow(matrix.to_numpy(), cmap="coolwarm", vmin=-limit, vmax=limit)
    ax.set_xticks(np.arange(matrix.shape[1]), matrix.columns, rotation=90)
    ax.set_yticks(np.arange(matrix.shape[0]), matrix.index)
    ax.set_xlabel(str(matrix.columns.name or "output"))
    ax.set_ylabel(str(matrix.index.name or "input"))
    fig.colorbar(image, ax=ax)
    return save_figure(fig, path)
