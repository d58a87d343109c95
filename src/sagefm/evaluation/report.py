"""Rendering of the report: markdown tables, verdicts, the header, strict-JSON metrics."""

from __future__ import annotations

import math
import platform
from importlib.metadata import version
from typing import Any

import numpy as np
import pandas as pd

from sagefm.evaluation.baselines import BASELINE_METHODS

#: SAGE-FM's representations: the embedding, and the embedding averaged over each spot's
#: 15-spot subgraph (`sagefm.tl.average_neighbourhood`; the counterpart of neighbour-averaged PCA).
MODEL_METHODS = ("sagefm", "sagefm_neighbourhood")
#: Representations compared in the embedding tables (domains, label transfer, phenotype).
METHODS = (*MODEL_METHODS, *BASELINE_METHODS)
#: Label transfer adds BANKSY itself, a baseline that only transfer across slides calls for
#: (slide-centred PCA), and the floor of any classifier: the training slides' majority class
#: everywhere (on her2st, 0.756 of E1 / F1). Phenotype leaves out the two that z-score or centre
#: each slide alone, which would remove the slide-level signal it scores.
TRANSFER_METHODS = (*METHODS, "banksy_agf", "pca_slide_centred", "majority")
#: The domains section adds BANKSY itself (`baselines.banksy_agf_embeddings`).
DOMAIN_METHODS = (*METHODS, "banksy_agf")
#: Display names, in the order tables list methods.
LABELS = {
    "sagefm": "SAGE-FM",
    "sagefm_neighbourhood": "SAGE-FM neighbour-avg",
    "sagefm_adapted": "SAGE-FM adapted",
    "pca": "PCA (HVG)",
    "mofa": "MOFA+",
    "neighbour_pca": "neighbour-avg PCA",
    "banksy": "BANKSY-style",
    "banksy_agf": "BANKSY (pybanksy, AGF)",
    "pca_slide_centred": "PCA, slide-centred",
    "majority": "majority class",
    "model": "SAGE-FM",
    "model_adapted": "SAGE-FM adapted",
    "zero": "zero",
    "gene_mean": "gene mean",
    "neighbour_mean": "neighbour mean",
    "scaled_gene_mean": "gene mean at the spot's depth",
    "scaled_neighbour_mean": "neighbour mean at the spot's depth",
    "low_rank": "low-rank completion at the spot's depth",
    "annotation": "annotation (one-hot)",
}


def _fmt(value: Any) -> str:
    if isinstance(value, float | np.floating):
        return "–" if not math.isfinite(value) else f"{value:.3f}"
    return str(value)


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-markdown table (floats to 3 decimals); written here to avoid a tabulate dependency."""
    header = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [
        "| " + " | ".join(_fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)
    ]
    return "\n".join(lines)


def verdict(scores: dict[str, float], *, higher_is_better: bool, metric: str) -> str:
    """One sentence: the best method, and where SAGE-FM's best representation stands (it may
    lose, and then it says so)."""
    finite = {k: v for k, v in scores.items() if math.isfinite(v)}
    if not finite:
        return f"No finite {metric}."
    ranked = sorted(finite, key=lambda k: finite[k], reverse=higher_is_better)
    best = ranked[0]
    text = f"**Best {metric}: {LABELS[best]} ({finite[best]:.3f}).**"
    ours = next((k for k in ranked if k.startswith(("model", "sagefm"))), None)
    if ours is None or best == ours:
        return text
    better = [LABELS[k] for k in ranked[: ranked.index(ours)]]
    return (
        f"{text} {LABELS[ours]} ({finite[ours]:.3f}) loses to {', '.join(better)} "
        f"(rank {ranked.index(ours) + 1} of {len(ranked)})."
    )


def split_summary(frame: pd.DataFrame, value: str, column: str = "method") -> str:
    """Means of ``value`` per pretraining split and method, as a markdown table."""
    pivot = frame.pivot_table(index="split", columns=column, values=value, aggfunc="mean")
    order = [m for m in LABELS if m in pivot.columns]
    pivot = pivot[order].rename(columns=LABELS).reset_index()
    return markdown_table(pivot)


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return frame.to_dict(orient="records")


def versions() -> dict[str, str]:
    packages = ("sagefm", "torch", "numpy", "scikit-learn", "scipy", "scanpy", "anndata", "mofapy2")
    return {"python": platform.python_version(), **{p: version(p) for p in packages}}


def json_safe(value: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python, so metrics.json is strict JSON."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def render_report(meta: dict[str, Any], texts: dict[str, str]) -> str:
    """``report.md``: the header (model, seed, command, versions, pretraining splits) and sections."""
    slides = pd.DataFrame.from_records(
        [{"slide": n, **v} for n, v in meta["slides"].items()],
        columns=["slide", "dataset", "n_spots", "split"],
    )
    source = meta["pretraining_record"] or "no run.json found beside the model: splits unknown"
    datasets = [d["description"] for d in meta["config"]["datasets"] if d["description"]]
    header = [
        "# SAGE-FM evaluation report",
        f"Model: `{meta['model']}` ({meta['model_dir'] or 'in-memory object'}); its embedding is "
        f"GCN layer {meta['gcn_layer']} (0: the first). "
        f"Wall time {meta['wall_time_s']:.0f} s ({meta['wall_time_s'] / 60:.1f} min) on this machine; "
        f"seed {meta['seed']} for every random choice (masks, PCA, clustering, MOFA+, classifiers, "
        f"folds){'; QUICK mode: small slices, not the reported numbers' if meta['quick'] else ''}.",
        f"Command: `{' '.join(meta['command'])}`. Versions: "
        + ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
        + ". Settings and datasets: `config.json`.",
        "## 5. Which slides the model saw in pretraining",
        f"From {source}. *in-pretraining*: trained on; *validation*: held out, used only to pick "
        "the checkpoint; *zero-shot*: never seen. Every table below carries this split.",
        markdown_table(slides),
        "Data: " + "; ".join(datasets) + ".",
    ]
    return "\n\n".join(header + list(texts.values())) + "\n"
