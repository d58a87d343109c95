"""The evaluation report: SAGE-FM against baselines fitted in the same run, on the same spots.

Sections (each optional, see `SECTIONS`):

1. ``recovery``: masked-gene recovery on every slide (`sagefm.tl.masked_gene_recovery`).
2. ``domains``: k-means / Gaussian-mixture spatial domains on the DLPFC sections vs. the layers.
3. ``annotation``: leave-one-patient-out label transfer on her2st, leave-one-section-out on DLPFC.
4. ``phenotype``: window-level tumour / cancer prediction with spatially blocked cross-validation.
5. Zero-shot vs. in-sample: every per-slide row says whether the slide was in pretraining (from
   the ``run.json`` beside the model directory), and each section summarises the two apart.

`evaluate` writes ``report.md``, ``metrics.json`` and ``figures/*.png`` into a folder that appears
only when complete (`sagefm.io.write.staged_directory`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from sagefm.data.slides import slide_name, spot_coordinates_um
from sagefm.errors import ConfigError, InputDataError
from sagefm.io.write import staged_directory
from sagefm.model import SageFM
from sagefm.pl import evaluation as figures
from sagefm.tl.annotation import TransferResult, pooled_confusion, transfer_labels
from sagefm.tl.baselines import (
    BASELINE_METHODS,
    log_normalize,
    mofa_factors,
    neighbour_average,
    pca_embeddings,
    shared_genes,
)
from sagefm.tl.domains import (
    CLUSTERERS,
    HIGHER_IS_BETTER,
    cluster,
    clustering_features,
    domain_scores,
)
from sagefm.tl.imputation import BASELINES, masked_gene_recovery
from sagefm.tl.phenotype import blocked_auroc, blocked_folds, make_windows

logger = logging.getLogger(__name__)

SECTIONS = ("recovery", "domains", "annotation", "phenotype")
METHODS = ("sagefm", *BASELINE_METHODS)
LABELS = {
    "sagefm": "SAGE-FM",
    "pca": "PCA (HVG)",
    "mofa": "MOFA+",
    "neighbour_pca": "neighbour-avg PCA",
    "model": "SAGE-FM",
    "zero": "zero",
    "gene_mean": "gene mean",
    "neighbour_mean": "neighbour mean",
}
#: her2st regions counted as tumour in the region-level task
TUMOUR_LABELS = ("invasive cancer", "cancer in situ")
#: genes drawn in the true-vs-predicted maps when the slide has them (DLPFC layers, breast, prostate)
MARKER_GENES = ("MOBP", "PCP4", "SNAP25", "ERBB2", "KRT19", "KLK3")


@dataclass(frozen=True)
class EvaluationConfig:
    """Every setting of an evaluation run; saved in ``metrics.json``."""

    rounds: int = 3  #: masking rounds; each gene is hidden in ~fraction of spots per round
    mask_fraction: float = 0.3
    n_domains: int = 7  #: k for clustering (annotated DLPFC layers)
    n_hvg: int = 2000
    n_comps: int = 30  #: PCA components, and dimensions each representation is clustered in
    mofa_genes: int = 500
    mofa_factors: int = 15
    mofa_iterations: int = 500  #: upper bound; MOFA+ stops earlier on convergence
    window_um: float = 500.0  #: side of the square windows of the region-level task
    block_windows: int = 3  #: spatial CV blocks are block_windows × block_windows windows
    min_window_spots: int = 3
    n_folds: int = 5
    max_spots: int | None = None  #: crop each slide to this many spots around its centre
    dlpfc_sections: tuple[str, ...] = ("151673", "151674", "151675", "151676")
    her2st_patients: tuple[str, ...] = ("A", "B", "C", "D", "E", "F")
    n_marker_genes: int = 3

    @classmethod
    def quick(cls) -> EvaluationConfig:
        """Every section on small slices: 2 cropped DLPFC sections, 3 her2st patients, 1 round."""
        return cls(
            rounds=1,
            n_hvg=500,
            mofa_genes=200,
            mofa_factors=10,
            mofa_iterations=100,
            n_folds=3,
            max_spots=700,
            dlpfc_sections=("151673", "151674"),
            her2st_patients=("A", "B", "C"),
            n_marker_genes=2,
        )


# ------------------------------------------------------------------------- data and splits
def _crop(adata: ad.AnnData, max_spots: int | None) -> ad.AnnData:
    """The ``max_spots`` spots nearest the slide's centroid: a disc, so neighbourhoods stay intact."""
    if max_spots is None or adata.n_obs <= max_spots:
        return adata
    coords = spot_coordinates_um(adata)
    distance = np.linalg.norm(coords - coords.mean(axis=0), axis=1)
    keep = np.sort(np.argsort(distance, kind="stable")[:max_spots])
    return adata[keep].copy()


def _read_folder(folder: Path, stems: Sequence[str], max_spots: int | None) -> list[ad.AnnData]:
    from sagefm.io import read

    missing = [f"{s}.h5ad" for s in stems if not (folder / f"{s}.h5ad").is_file()]
    if missing:
        raise InputDataError(
            f"{folder} lacks {missing}; point --data-dir at the shared data folder "
            "(dlpfc/, her2st/, prostate/) or choose fewer --sections"
        )
    slides = []
    for stem in stems:
        adata = read(folder / f"{stem}.h5ad")
        assert isinstance(adata, ad.AnnData)
        slides.append(_crop(adata, max_spots))
    return slides


def _load_data(data_dir: Path, config: EvaluationConfig, sections: Sequence[str]) -> dict:
    """{"dlpfc", "her2st", "prostate"} -> slides, only the datasets the chosen sections use."""
    needs = {
        "dlpfc": {"recovery", "domains", "annotation"},
        "her2st": {"recovery", "annotation", "phenotype"},
        "prostate": {"recovery", "phenotype"},
    }
    stems = {
        "dlpfc": [f"dlpfc_{s}" for s in config.dlpfc_sections],
        "her2st": [f"{p}1" for p in config.her2st_patients],
        "prostate": ["NP", "CP"],
    }
    return {
        name: _read_folder(data_dir / name, stems[name], config.max_spots)
        for name in needs
        if needs[name] & set(sections)
    }


def pretraining_splits(model_dir: Path | None) -> tuple[dict[str, str], str | None]:
    """Slide name -> "in-pretraining" / "validation" from the ``run.json`` of the pretraining run.

    Looked for in the model directory and its parent (``<run>/best/`` -> ``<run>/run.json``).
    Returns the mapping and the file used (None when there is none).
    """
    if model_dir is None:
        return {}, None
    for folder in (model_dir, model_dir.parent):
        path = folder / "run.json"
        if path.is_file():
            record = json.loads(path.read_text())
            splits = {str(s): "validation" for s in record.get("val_slides", [])}
            splits.update({str(s): "in-pretraining" for s in record.get("train_slides", [])})
            return splits, str(path)
    return {}, None


# ------------------------------------------------------------------------- the run
class _Run:
    """State shared by the sections: model, settings, caches of embeddings and baselines."""

    def __init__(
        self,
        model: SageFM,
        config: EvaluationConfig,
        seed: int,
        splits: dict[str, str],
        known_splits: bool,
        folder: Path,
        progress: bool,
    ) -> None:
        self.model = model
        self.config = config
        self.seed = seed
        self.splits = splits
        self.known_splits = known_splits
        self.figures = folder / "figures"
        self.figures.mkdir()
        self.progress = progress
        self._embeddings: dict[str, np.ndarray] = {}
        self._expression: dict[str, tuple[list[str], list[np.ndarray], list[np.ndarray]]] = {}
        self._mofa: dict[str, list[np.ndarray]] = {}

    def split(self, adata: ad.AnnData) -> str:
        if not self.known_splits:
            return "unknown"
        return self.splits.get(slide_name(adata, ""), "zero-shot")

    def embedding(self, adata: ad.AnnData) -> np.ndarray:
        name = slide_name(adata, str(id(adata)))
        if name not in self._embeddings:
            self._embeddings[name] = self.model.embed(adata, progress=self.progress)
        return self._embeddings[name]

    def expression(
        self, key: str, slides: Sequence[ad.AnnData]
    ) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
        """(shared genes, log-normalised matrices, neighbour-averaged matrices), cached by ``key``."""
        if key not in self._expression:
            genes = shared_genes(slides)
            expression = [log_normalize(a, genes) for a in slides]
            smoothed = [neighbour_average(x, a) for x, a in zip(expression, slides, strict=True)]
            self._expression[key] = (genes, expression, smoothed)
        return self._expression[key]

    def mofa(self, key: str, slides: Sequence[ad.AnnData]) -> list[np.ndarray]:
        if key not in self._mofa:
            genes, expression, _ = self.expression(key, slides)
            c = self.config
            self._mofa[key] = mofa_factors(
                expression,
                genes,
                n_genes=c.mofa_genes,
                n_factors=c.mofa_factors,
                iterations=c.mofa_iterations,
                seed=self.seed,
            )
        return self._mofa[key]

    def representations(
        self, key: str, slides: Sequence[ad.AnnData], train: Sequence[int]
    ) -> dict[str, list[np.ndarray]]:
        """Every method's spot features per slide; PCAs fitted on the ``train`` slides."""
        genes, expression, smoothed = self.expression(key, slides)
        out = pca_embeddings(
            expression,
            smoothed,
            genes,
            train=train,
            n_hvg=self.config.n_hvg,
            n_comps=self.config.n_comps,
            seed=self.seed,
        )
        out["mofa"] = self.mofa(key, slides)
        out["sagefm"] = [self.embedding(a) for a in slides]
        return out


# ------------------------------------------------------------------------- report formatting
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
    """One sentence: the best method, and where SAGE-FM stands (it may lose, and then it says so)."""
    finite = {k: v for k, v in scores.items() if math.isfinite(v)}
    if not finite:
        return f"No finite {metric}."
    ranked = sorted(finite, key=lambda k: finite[k], reverse=higher_is_better)
    best = ranked[0]
    text = f"**Best {metric}: {LABELS[best]} ({finite[best]:.3f}).**"
    ours = "sagefm" if "sagefm" in finite else "model"
    if ours not in finite or best == ours:
        return text
    better = [LABELS[k] for k in ranked[: ranked.index(ours)]]
    return (
        f"{text} SAGE-FM ({finite[ours]:.3f}) loses to {', '.join(better)} "
        f"(rank {ranked.index(ours) + 1} of {len(ranked)})."
    )


def _split_summary(frame: pd.DataFrame, value: str, column: str = "method") -> str:
    """Means of ``value`` per pretraining split and method (section 5 of the issue)."""
    pivot = frame.pivot_table(index="split", columns=column, values=value, aggfunc="mean")
    order = [m for m in (*METHODS, "model", *BASELINES) if m in pivot.columns]
    pivot = pivot[order].rename(columns=LABELS).reset_index()
    return markdown_table(pivot)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return frame.to_dict(orient="records")


# ------------------------------------------------------------------------- 1. recovery
def _section_recovery(run: _Run, data: dict[str, list[ad.AnnData]]) -> tuple[dict, str]:
    c = run.config
    rows, r_values = [], {}
    for dataset, slides in data.items():
        rs = []
        for adata in slides:
            result = masked_gene_recovery(
                run.model, adata, fraction=c.mask_fraction, rounds=c.rounds, seed=run.seed
            )
            summary = result.summary()
            rows.append(
                {
                    "slide": slide_name(adata, "?"),
                    "dataset": dataset,
                    "split": run.split(adata),
                    **{f"rmse_{k}": v for k, v in result.rmse.items()},
                    "best": LABELS[min(result.rmse, key=lambda k: result.rmse[k])],
                    "frac_significant": result.frac_significant,
                    "n_genes": summary["n_genes"],
                    "n_hidden": result.n_hidden,
                }
            )
            rs.append(result.per_gene["r"].to_numpy())
            if dataset == next(iter(data)) and adata is slides[0]:
                maps_slide, maps_table = adata, result.per_gene
        r_values[dataset] = np.concatenate(rs)
    table = pd.DataFrame.from_records(rows)
    figures.gene_r_histogram(r_values, run.figures / "recovery_gene_r.png")
    genes = _marker_genes(maps_table, c.n_marker_genes)
    _gene_maps(run, maps_slide, genes)

    means = {k: float(table[f"rmse_{k}"].mean()) for k in ("model", *BASELINES)}
    shown = table[["slide", "dataset", "split"]].copy()
    for k in ("model", *BASELINES):
        shown[f"RMSE {LABELS[k]}"] = table[f"rmse_{k}"]
    shown["best"] = table["best"]
    shown["% genes FDR<5%"] = 100 * table["frac_significant"]
    long = table.melt(
        id_vars=["split"],
        value_vars=[f"rmse_{k}" for k in ("model", *BASELINES)],
        var_name="method",
    )
    long["method"] = long["method"].str.removeprefix("rmse_")
    n_wins = int((table["best"] == "SAGE-FM").sum())
    text = "\n\n".join(
        [
            "## 1. Masked-gene recovery",
            f"{c.mask_fraction:.0%} of each spot's vocabulary genes hidden (from the model and from the "
            f"baselines), {c.rounds} round(s) with seed {run.seed}; RMSE on log1p counts over all hidden "
            "entries. Per-gene Pearson r pools each gene's hidden entries; p-values BH-corrected "
            "(FDR 5%).",
            markdown_table(shown),
            verdict(means, higher_is_better=False, metric="mean RMSE")
            + f" SAGE-FM is best on {n_wins} of {len(table)} slides.",
            "Mean RMSE by pretraining split:\n\n" + _split_summary(long, "value"),
            "![per-gene r](figures/recovery_gene_r.png)",
            f"![true vs predicted](figures/recovery_gene_maps.png)\n\nMaps on {slide_name(maps_slide, '?')}: "
            f"each gene hidden at every spot and predicted from the rest ({', '.join(genes)}).",
        ]
    )
    metrics = {"per_slide": _records(table), "mean_rmse": means, "n_slides_model_best": n_wins}
    return metrics, text


def _marker_genes(per_gene: pd.DataFrame, n: int) -> list[str]:
    """Known markers the slide has, topped up with the genes the model recovers best."""
    present = set(per_gene["gene"])
    genes = [g for g in MARKER_GENES if g in present][:n]
    ranked = per_gene.sort_values("r", ascending=False)["gene"]
    genes += [g for g in ranked if g not in genes][: n - len(genes)]
    return genes


def _gene_maps(run: _Run, adata: ad.AnnData, genes: list[str]) -> None:
    columns = adata.var_names.get_indexer(genes)
    mask = np.zeros(adata.shape, dtype=bool)
    mask[:, columns] = True
    predicted = run.model.impute(adata, mask, progress=run.progress)[:, columns]
    truth = run.model.normalize(adata)[:, columns]
    figures.gene_maps(
        np.asarray(adata.obsm["spatial"])[:, :2],
        genes,
        truth,
        predicted,
        run.figures / "recovery_gene_maps.png",
        title=slide_name(adata, ""),
    )


# ------------------------------------------------------------------------- 2. domains
def _section_domains(run: _Run, slides: list[ad.AnnData]) -> tuple[dict, str]:
    c = run.config
    rows, maps = [], {}
    for adata in slides:
        name = slide_name(adata, "?")
        truth = adata.obs["layer"]
        reps = run.representations(f"domains:{name}", [adata], train=[0])
        panels: dict[str, np.ndarray] = {"annotation": truth.to_numpy(dtype=object)}
        for method in METHODS:
            features = clustering_features(reps[method][0], n_comps=c.n_comps, seed=run.seed)
            for clusterer in CLUSTERERS:
                labels = cluster(features, c.n_domains, clusterer, seed=run.seed)
                scores = domain_scores(features, labels, truth)
                rows.append(
                    {
                        "section": name,
                        "split": run.split(adata),
                        "method": method,
                        "clusterer": clusterer,
                        **scores,
                    }
                )
                if clusterer == "kmeans":
                    panels[f"{LABELS[method]} k-means"] = labels
        maps[name] = (np.asarray(adata.obsm["spatial"])[:, :2], panels)
    figures.domain_maps(maps, run.figures / "domains_maps.png")
    table = pd.DataFrame.from_records(rows)
    mean = table.groupby(["method", "clusterer"], sort=False)[list(HIGHER_IS_BETTER)].mean()
    parts = [
        "## 2. Spatial domains (DLPFC)",
        f"k = {c.n_domains}; each representation reduced to at most {c.n_comps} PCA dimensions, then "
        f"k-means (10 starts) and a full-covariance Gaussian mixture, seed {run.seed}. ARI and NMI "
        "against the manual layers on labelled spots; silhouette and Davies–Bouldin (lower is "
        "better) of the clustered features. Baselines are fitted on each section alone.",
        "Mean over sections:",
        markdown_table(mean.reset_index().replace({"method": LABELS})),
    ]
    summary: dict[str, Any] = {}
    for clusterer in CLUSTERERS:
        ari = {m: float(mean.loc[(m, clusterer), "ari"]) for m in METHODS}
        summary[clusterer] = {m: mean.loc[(m, clusterer)].to_dict() for m in METHODS}
        parts.append(f"{clusterer}: " + verdict(ari, higher_is_better=True, metric="mean ARI"))
    per_section = table.pivot_table(
        index=["section", "split"], columns=["method", "clusterer"], values="ari", sort=False
    )
    per_section.columns = [f"ARI {LABELS[m]} {k}" for m, k in per_section.columns]
    parts += [
        "ARI per section:",
        markdown_table(per_section.reset_index()),
        "Mean k-means ARI by pretraining split:\n\n"
        + _split_summary(table[table["clusterer"] == "kmeans"], "ari"),
        "![domain maps](figures/domains_maps.png)",
    ]
    return {"per_section": _records(table), "mean": summary}, "\n\n".join(parts)


# ------------------------------------------------------------------------- 3. annotation
def _leave_one_out(
    run: _Run,
    key: str,
    slides: list[ad.AnnData],
    labels: list[pd.Series],
    figure: str,
) -> tuple[dict, str]:
    """Hold out each slide in turn; train on the others' labelled spots (labels NaN = unlabelled)."""
    known = [lab.notna().to_numpy() for lab in labels]
    values = [lab.astype(str).to_numpy() for lab in labels]
    rows: list[dict[str, Any]] = []
    results: dict[str, list[TransferResult]] = {m: [] for m in METHODS}
    for held in range(len(slides)):
        train = [i for i in range(len(slides)) if i != held]
        reps = run.representations(key, slides, train=train)
        for method in METHODS:
            feats = reps[method]
            result = transfer_labels(
                np.vstack([feats[i][known[i]] for i in train]),
                np.concatenate([values[i][known[i]] for i in train]),
                feats[held][known[held]],
                values[held][known[held]],
                seed=run.seed,
            )
            results[method].append(result)
            rows.append(
                {
                    "held_out": slide_name(slides[held], "?"),
                    "split": run.split(slides[held]),
                    "method": method,
                    "n_spots": int(known[held].sum()),
                    **result.scores(),
                }
            )
    classes = sorted(set(np.concatenate([v[k] for v, k in zip(values, known, strict=True)])))
    matrices = {LABELS[m]: pooled_confusion(results[m], classes) for m in METHODS}
    figures.confusion_matrices(matrices, classes, run.figures / figure)
    table = pd.DataFrame.from_records(rows)
    metrics = {
        "per_slide": _records(table),
        "mean": table.groupby("method")[["accuracy", "balanced_accuracy", "macro_f1"]]
        .mean()
        .to_dict(orient="index"),
        "classes": classes,
        "confusion": {m: matrices[LABELS[m]].tolist() for m in METHODS},
    }
    return metrics, _transfer_text(table, figure)


def _transfer_text(table: pd.DataFrame, figure: str) -> str:
    wide = table.pivot_table(
        index=["held_out", "split"], columns="method", values=["accuracy", "macro_f1"], sort=False
    )
    wide.columns = [f"{metric} {LABELS[m]}" for metric, m in wide.columns]
    mean = table.groupby("method", sort=False)[["accuracy", "balanced_accuracy", "macro_f1"]].mean()
    lines = [
        markdown_table(wide.reset_index()),
        "Mean over held-out slides:",
        markdown_table(mean.reset_index().replace({"method": LABELS})),
        verdict(mean["accuracy"].to_dict(), higher_is_better=True, metric="mean accuracy"),
        verdict(mean["macro_f1"].to_dict(), higher_is_better=True, metric="mean macro-F1"),
        "Mean accuracy by pretraining split of the held-out slide:\n\n"
        + _split_summary(table, "accuracy"),
        f"![confusion matrices]({'figures/' + figure})\n\nConfusion matrices pooled over held-out "
        "slides (rows: true, colour: share of the row).",
    ]
    return "\n\n".join(lines)


def _section_annotation(run: _Run, data: dict[str, list[ad.AnnData]]) -> tuple[dict, str]:
    parts = [
        "## 3. Spot annotation by label transfer",
        "Standardised features, multinomial logistic regression (sklearn, seed "
        f"{run.seed}) trained on the other slides' labelled spots. PCA baselines use genes shared "
        "by all slides, with HVGs and PCA fitted on the training slides and projected onto the "
        "held-out one. MOFA+ cannot project new samples: its factors are fitted once, without "
        "labels, on all slides together (the held-out one included), which if anything favours it.",
    ]
    metrics = {}
    her2st = data["her2st"]
    labels = [a.obs["label"].astype(object).where(a.obs["label"] != "undetermined") for a in her2st]
    metrics["her2st"], text = _leave_one_out(run, "her2st", her2st, labels, "annotation_her2st.png")
    parts += [
        "### her2st, leave one patient out (pathologist regions, 'undetermined' dropped)",
        text,
    ]
    dlpfc = data["dlpfc"]
    layers = [a.obs["layer"].astype(object) for a in dlpfc]
    metrics["dlpfc"], text = _leave_one_out(run, "dlpfc", dlpfc, layers, "annotation_dlpfc.png")
    parts += [f"### DLPFC layers, leave one section out (train on {len(dlpfc) - 1})", text]
    return metrics, "\n\n".join(parts)


# ------------------------------------------------------------------------- 4. phenotype
def _phenotype_task(
    run: _Run, key: str, slides: list[ad.AnnData], spot_labels: Callable[[ad.AnnData], np.ndarray]
) -> dict[str, Any]:
    c = run.config
    names = [slide_name(a, str(i)) for i, a in enumerate(slides)]
    windows = make_windows(
        {n: (spot_coordinates_um(a), spot_labels(a)) for n, a in zip(names, slides, strict=True)},
        window_um=c.window_um,
        min_spots=c.min_window_spots,
    )
    y = windows.table["label"].to_numpy(dtype=bool)
    folds = blocked_folds(
        windows.table, y, block_windows=c.block_windows, n_splits=c.n_folds, seed=run.seed
    )
    reps = run.representations(key, slides, train=list(range(len(slides))))
    scores = {}
    for method in METHODS:
        pooled = windows.pool(dict(zip(names, reps[method], strict=True)))
        scores[method] = blocked_auroc(pooled, y, folds, seed=run.seed)
    return {
        "n_windows": len(y),
        "n_positive": int(y.sum()),
        "slides": {n: run.split(a) for n, a in zip(names, slides, strict=True)},
        "scores": scores,
    }


def _section_phenotype(run: _Run, data: dict[str, list[ad.AnnData]]) -> tuple[dict, str]:
    c = run.config
    tasks = {
        "prostate cancer vs normal": (
            "prostate",
            lambda a: (a.obs["condition"].astype(str) == "cancer").to_numpy(dtype=object),
        ),
        "her2st tumour vs non-tumour": (
            "her2st",
            lambda a: (
                a.obs["label"]
                .astype(object)
                .where(a.obs["label"] != "undetermined")
                .map(lambda v: v if pd.isna(v) else v in TUMOUR_LABELS)
                .to_numpy(dtype=object)
            ),
        ),
    }
    results, rows = {}, []
    for task, (dataset, labels) in tasks.items():
        result = _phenotype_task(run, dataset, data[dataset], labels)
        results[task] = result
        for method, s in result["scores"].items():
            rows.append(
                {
                    "task": task,
                    "method": LABELS[method],
                    **s,
                    "windows (positive)": f"{result['n_windows']} ({result['n_positive']})",
                    "slides": ", ".join(f"{n}: {sp}" for n, sp in result["slides"].items()),
                }
            )
    table = pd.DataFrame.from_records(rows)
    parts = [
        "## 4. Region-level phenotype",
        f"Spot features averaged over {c.window_um:.0f} µm square windows (at least "
        f"{c.min_window_spots} labelled spots; label = majority). {c.n_folds}-fold cross-validation "
        f"over spatial blocks of {c.block_windows}×{c.block_windows} windows (StratifiedGroupKFold), "
        "and training windows touching a test window are dropped, so neighbouring windows never "
        "sit on both sides. Logistic regression on standardised pooled features; AUROC mean ± SD "
        "over folds. Baselines fitted on all spots of the task without labels. The prostate label "
        "is constant per slide (NP normal, CP cancer), so that task also rewards telling the two "
        "slides apart.",
        markdown_table(table),
    ]
    for task, result in results.items():
        auroc = {m: s["auroc"] for m, s in result["scores"].items()}
        parts.append(f"{task}: " + verdict(auroc, higher_is_better=True, metric="AUROC"))
    return {"tasks": results}, "\n\n".join(parts)


# ------------------------------------------------------------------------- entry point
def _versions() -> dict[str, str]:
    packages = ("sagefm", "torch", "numpy", "scikit-learn", "scipy", "scanpy", "anndata", "mofapy2")
    return {"python": platform.python_version(), **{p: version(p) for p in packages}}


def _json_safe(value: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python, so metrics.json is strict JSON."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def evaluate(
    model: SageFM | str | Path,
    *,
    data_dir: str | Path,
    output: str | Path,
    quick: bool = False,
    seed: int = 0,
    sections: Sequence[str] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run the evaluation sections and write the report folder ``output`` (replaced atomically).

    ``model`` is a `SageFM` or a model / pretraining directory (then its ``run.json`` tells which
    slides were in pretraining; with a `SageFM` object they are reported as "unknown").
    ``data_dir`` holds ``dlpfc/``, ``her2st/`` and ``prostate/`` as in the shared data.
    ``quick`` runs every section on small slices (`EvaluationConfig.quick`). Returns the metrics
    written to ``metrics.json``.
    """
    started = time.perf_counter()
    chosen = list(sections) if sections else list(SECTIONS)
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"unknown sections {unknown}; choose from {list(SECTIONS)}")
    model_dir = None if isinstance(model, SageFM) else Path(model)
    if not isinstance(model, SageFM):
        model = SageFM.load(model)
    splits, run_json = pretraining_splits(model_dir)
    config = EvaluationConfig.quick() if quick else EvaluationConfig()
    data = _load_data(Path(data_dir), config, chosen)
    metrics: dict[str, Any] = {}
    texts: dict[str, str] = {}
    output = Path(output)
    with staged_directory(output) as folder:
        run = _Run(model, config, seed, splits, run_json is not None, folder, progress)
        steps: dict[str, Callable[[], tuple[dict, str]]] = {
            "recovery": lambda: _section_recovery(run, data),
            "domains": lambda: _section_domains(run, data["dlpfc"]),
            "annotation": lambda: _section_annotation(run, data),
            "phenotype": lambda: _section_phenotype(run, data),
        }
        for name in SECTIONS:
            if name in chosen:
                tick = time.perf_counter()
                logger.info("evaluation: %s", name)
                metrics[name], texts[name] = steps[name]()
                metrics[name]["wall_time_s"] = time.perf_counter() - tick
        slides = {
            slide_name(a, "?"): {"dataset": d, "n_spots": a.n_obs, "split": run.split(a)}
            for d, group in data.items()
            for a in group
        }
        metrics["meta"] = {
            "wall_time_s": time.perf_counter() - started,
            "seed": seed,
            "quick": quick,
            "sections": chosen,
            "config": dataclasses.asdict(config),
            "model": repr(model),
            "model_dir": str(model_dir) if model_dir else None,
            "pretraining_record": run_json,
            "data_dir": str(data_dir),
            "slides": slides,
            "command": sys.argv,
            "versions": _versions(),
        }
        metrics = _json_safe(metrics)
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False))
        (folder / "report.md").write_text(_report(metrics["meta"], texts))
    logger.info("evaluation written to %s in %.0f s", output, metrics["meta"]["wall_time_s"])
    return metrics


def _report(meta: dict[str, Any], texts: dict[str, str]) -> str:
    slides = pd.DataFrame.from_records(
        [{"slide": n, **v} for n, v in meta["slides"].items()],
        columns=["slide", "dataset", "n_spots", "split"],
    )
    source = meta["pretraining_record"] or "no run.json found beside the model: splits unknown"
    header = [
        "# SAGE-FM evaluation report",
        f"Model: `{meta['model']}` ({meta['model_dir'] or 'in-memory object'}). "
        f"Wall time {meta['wall_time_s']:.0f} s ({meta['wall_time_s'] / 60:.1f} min) on this machine; "
        f"seed {meta['seed']} for every random choice (masks, PCA, clustering, MOFA+, classifiers, "
        f"folds){'; QUICK mode: small slices, not the reported numbers' if meta['quick'] else ''}.",
        f"Command: `{' '.join(meta['command'])}`. Versions: "
        + ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
        + ".",
        "## 5. Which slides the model saw in pretraining",
        f"From {source}. *in-pretraining*: trained on; *validation*: held out, used only to pick "
        "the checkpoint; *zero-shot*: never seen. Every table below carries this split.",
        markdown_table(slides),
        "Data: DLPFC (Maynard et al., Nat. Neurosci. 2021), her2st (Andersson et al., Nat. "
        "Commun. 2021), 10x Visium prostate (via GiottoData).",
    ]
    return "\n\n".join(header + list(texts.values())) + "\n"
