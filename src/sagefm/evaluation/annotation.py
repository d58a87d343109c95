"""Spot annotation by label transfer: train a classifier on some slides, predict a held-out one.

Section 3 of the report (`annotation_section`): leave one slide out on each annotation dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anndata as ad
import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score

from sagefm.data.slides import slide_name
from sagefm.evaluation.config import EvaluationDataset
from sagefm.evaluation.data import spot_labels
from sagefm.evaluation.report import (
    LABELS,
    TRANSFER_METHODS,
    markdown_table,
    records,
    split_summary,
    verdict,
)
from sagefm.pl import evaluation as figures
from sagefm.tl.transfer import C_GRID, chosen_c, fit_label_classifier, predict_labels

if TYPE_CHECKING:
    from sagefm.evaluation.run import EvaluationRun

#: How held-out predictions are read: as the classifier gives them, or refined over the subgraph.
REFINEMENTS = ("raw", "refined")


@dataclass(frozen=True)
class TransferResult:
    """Predictions for one held-out slide and their scores."""

    accuracy: float
    balanced_accuracy: float
    macro_f1: float
    truth: np.ndarray  #: (n,) str, the held-out slide's labels
    predicted: np.ndarray  #: (n,) str

    def scores(self) -> dict[str, float]:
        return {
            "accuracy": self.accuracy,
            "balanced_accuracy": self.balanced_accuracy,
            "macro_f1": self.macro_f1,
        }


def score_transfer(truth: np.ndarray, predicted: np.ndarray) -> TransferResult:
    """Scores of (n,) ``predicted`` labels against the (n,) ``truth`` of one held-out slide.

    Macro-F1 averages over the classes present in either the truth or the predictions of the
    test slide (sklearn's convention), so a class the model invents counts against it.
    """
    return TransferResult(
        accuracy=float(accuracy_score(truth, predicted)),
        balanced_accuracy=float(balanced_accuracy_score(truth, predicted)),
        macro_f1=float(f1_score(truth, predicted, average="macro", zero_division=0)),
        truth=np.asarray(truth, dtype=str),
        predicted=np.asarray(predicted, dtype=str),
    )


def pooled_confusion(results: list[TransferResult], classes: list[str]) -> np.ndarray:
    """(C, C) counts, rows = true class, columns = predicted, summed over held-out slides."""
    truth = np.concatenate([r.truth for r in results])
    predicted = np.concatenate([r.predicted for r in results])
    return confusion_matrix(truth, predicted, labels=classes)


# ------------------------------------------------------------------------- report section
def _held_out_results(
    run: EvaluationRun, key: str, slides: list[ad.AnnData], labels: list[pd.Series], held: int
) -> tuple[dict[str, dict[str, TransferResult]], dict[str, float]]:
    """Each method's transfer onto slide ``held`` from the others' labelled spots, by refinement:
    ``"raw"`` as the classifier predicts, ``"refined"`` with each spot's class probabilities
    averaged over its 15-spot subgraph first (`sagefm.tl.transfer.predict_labels`); and each
    method's C, chosen by leave-one-slide-out on the training slides (`fit_label_classifier`)."""
    known = [lab.notna().to_numpy() for lab in labels]
    values = [lab.astype(str).to_numpy() for lab in labels]
    train = [i for i in range(len(slides)) if i != held]
    groups = np.concatenate([np.full(int(known[i].sum()), i) for i in train])
    inputs = run.expression(key, slides)
    reps = run.representations(key, slides, train=train)
    reps["pca_slide_centred"] = inputs.slide_centred(run.config, train, run.seed)
    reps["banksy_agf"] = inputs.banksy_agf(run.config, train, run.seed)
    # one constant feature: the classifier can learn only the classes' frequencies
    reps["majority"] = [np.zeros((a.n_obs, 1)) for a in slides]
    out: dict[str, dict[str, TransferResult]] = {kind: {} for kind in REFINEMENTS}
    chosen: dict[str, float] = {}
    for method in TRANSFER_METHODS:
        classifier = fit_label_classifier(
            np.vstack([reps[method][i][known[i]] for i in train]),
            np.concatenate([values[i][known[i]] for i in train]),
            seed=run.seed,
            groups=groups,
        )
        chosen[method] = chosen_c(classifier)
        for kind, neighbours in zip(REFINEMENTS, (None, inputs.neighbours[held]), strict=True):
            predicted, _ = predict_labels(classifier, reps[method][held], neighbours)
            out[kind][method] = score_transfer(values[held][known[held]], predicted[known[held]])
    return out, chosen


def leave_one_out(
    run: EvaluationRun, dataset: EvaluationDataset, slides: list[ad.AnnData]
) -> tuple[dict, str]:
    """Hold out each slide in turn; train on the others' labelled spots (labels NaN = unlabelled).

    Metrics: the classifier's own predictions at the top level (``per_slide``, ``mean``,
    ``confusion``), the same refined over each spot's subgraph under ``"refined"``.
    """
    labels = [spot_labels(a, dataset) for a in slides]
    rows: dict[str, list[dict[str, Any]]] = {kind: [] for kind in REFINEMENTS}
    results: dict[str, list[TransferResult]] = {m: [] for m in TRANSFER_METHODS}
    for held in range(len(slides)):
        by_kind, chosen = _held_out_results(run, dataset.name, slides, labels, held)
        for method in TRANSFER_METHODS:
            results[method].append(by_kind["raw"][method])
        for kind, method_results in by_kind.items():
            rows[kind] += [
                {
                    "held_out": slide_name(slides[held], "?"),
                    "split": run.split(slides[held]),
                    "method": method,
                    "n_spots": int(labels[held].notna().sum()),
                    "C": chosen[method],
                    **result.scores(),
                }
                for method, result in method_results.items()
            ]
    classes = sorted({str(v) for lab in labels for v in lab.dropna()})
    matrices = {LABELS[m]: pooled_confusion(results[m], classes) for m in TRANSFER_METHODS}
    figure = f"annotation_{dataset.name}.png"
    figures.confusion_matrices(matrices, classes, run.figures / figure)
    tables = {kind: pd.DataFrame.from_records(rows[kind]) for kind in REFINEMENTS}
    metrics = {
        **_transfer_metrics(tables["raw"]),
        "classes": classes,
        "confusion": {m: matrices[LABELS[m]].tolist() for m in TRANSFER_METHODS},
        "refined": _transfer_metrics(tables["refined"]),
    }
    return metrics, _transfer_text(tables["raw"], figure) + "\n\n" + _refined_text(
        tables["refined"]
    )


def _transfer_metrics(table: pd.DataFrame) -> dict[str, Any]:
    means = table.groupby("method")[["accuracy", "balanced_accuracy", "macro_f1"]].mean()
    return {"per_slide": records(table), "mean": means.to_dict(orient="index")}


def _per_slide_table(table: pd.DataFrame, metrics: list[str]) -> str:
    """One row per held-out slide, a column per metric and method."""
    wide = table.pivot_table(
        index=["held_out", "split"], columns="method", values=metrics, sort=False
    )
    wide.columns = [f"{metric} {LABELS[m]}" for metric, m in wide.columns]
    return markdown_table(wide.reset_index())


def _transfer_text(table: pd.DataFrame, figure: str) -> str:
    lines = [
        _per_slide_table(table, ["accuracy", "macro_f1"]),
        _mean_text(table),
        "Each method's C, chosen by leave-one-slide-out on the training slides:\n\n"
        + _per_slide_table(table, ["C"]),
        f"![confusion matrices]({'figures/' + figure})\n\nConfusion matrices pooled over held-out "
        "slides (rows: true, colour: share of the row).",
    ]
    return "\n\n".join(lines)


def _refined_text(table: pd.DataFrame) -> str:
    return "\n\n".join(
        [
            "#### Refined over the subgraph",
            "Every method alike: each spot's class probabilities averaged over the spot and its "
            "14 nearest spots, then the most probable class "
            "(`sagefm.tl.transfer_labels(..., refine=True)`).",
            _per_slide_table(table, ["accuracy"]),
            _mean_text(table),
        ]
    )


def _mean_text(table: pd.DataFrame) -> str:
    """Means over held-out slides, the verdicts, and the means by pretraining split."""
    mean = table.groupby("method", sort=False)[["accuracy", "balanced_accuracy", "macro_f1"]].mean()
    return "\n\n".join(
        [
            "Mean over held-out slides:",
            markdown_table(mean.reset_index().replace({"method": LABELS})),
            verdict(mean["accuracy"].to_dict(), higher_is_better=True, metric="mean accuracy"),
            verdict(mean["macro_f1"].to_dict(), higher_is_better=True, metric="mean macro-F1"),
            "Mean accuracy by pretraining split of the held-out slide:\n\n"
            + split_summary(table, "accuracy"),
        ]
    )


def annotation_section(run: EvaluationRun, data: dict[str, list[ad.AnnData]]) -> tuple[dict, str]:
    """Section 3: leave-one-slide-out label transfer on every annotation dataset."""
    parts = [
        "## 3. Spot annotation by label transfer",
        "Standardised features, multinomial logistic regression (sklearn, seed "
        f"{run.seed}) trained on the other slides' labelled spots, its inverse regularisation C "
        f"chosen for each method from {list(C_GRID)} by leave-one-slide-out accuracy on those "
        "slides (most regularised on ties). Every method sees the genes "
        "shared by all slides: SAGE-FM is shown those genes only (the others as unobserved), and "
        "the PCA and BANKSY-style baselines fit HVGs, z-scores and PCA on the training slides and "
        "project the held-out one. *PCA, slide-centred* subtracts each slide's own gene "
        "means first (no labels), which removes patient and batch offsets. *BANKSY (pybanksy, "
        "AGF)* z-scores each slide's BANKSY matrix on that slide alone (the HVGs and the PCA are "
        "the training slides'), which removes them but in its uncentred AGF. *Majority class* "
        "predicts the training slides' most frequent label everywhere (one constant feature), the "
        "floor any classifier must clear. MOFA+ cannot project "
        "new samples: its factors "
        "are fitted once, without labels, on all slides together (the held-out one included), "
        "which if anything favours it.",
    ]
    metrics = {}
    for name in run.config.annotation_datasets:
        dataset = run.config.dataset(name)
        metrics[name], text = leave_one_out(run, dataset, data[name])
        unlabelled = f", {list(dataset.missing_labels)} dropped" if dataset.missing_labels else ""
        parts += [
            f"### {dataset.description or name}: leave one {dataset.unit} out (train on "
            f"{len(data[name]) - 1}{unlabelled})",
            text,
        ]
    return metrics, "\n\n".join(parts)
