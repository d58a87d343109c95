"""Spot annotation by label transfer: train a classifier on some slides, predict a held-out one.

Section 3 of the report (`annotation_section`): leave one slide out on each annotation dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anndata as ad
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

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

if TYPE_CHECKING:
    from sagefm.evaluation.run import EvaluationRun


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


def transfer_labels(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    *,
    seed: int,
) -> TransferResult:
    """Standardise, fit a multinomial logistic regression on the training spots, score the test spots.

    Macro-F1 averages over the classes present in either the truth or the predictions of the
    test slide (sklearn's convention), so a class the model invents counts against it.
    """
    classifier = make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed)
    )
    classifier.fit(train_features, train_labels)
    predicted = classifier.predict(test_features)
    return TransferResult(
        accuracy=float(accuracy_score(test_labels, predicted)),
        balanced_accuracy=float(balanced_accuracy_score(test_labels, predicted)),
        macro_f1=float(f1_score(test_labels, predicted, average="macro", zero_division=0)),
        truth=np.asarray(test_labels, dtype=str),
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
) -> dict[str, TransferResult]:
    """Each method's transfer onto slide ``held`` from the others' labelled spots."""
    known = [lab.notna().to_numpy() for lab in labels]
    values = [lab.astype(str).to_numpy() for lab in labels]
    train = [i for i in range(len(slides)) if i != held]
    reps = run.representations(key, slides, train=train)
    reps["pca_slide_centred"] = run.expression(key, slides).slide_centred(
        run.config, train, run.seed
    )
    return {
        method: transfer_labels(
            np.vstack([reps[method][i][known[i]] for i in train]),
            np.concatenate([values[i][known[i]] for i in train]),
            reps[method][held][known[held]],
            values[held][known[held]],
            seed=run.seed,
        )
        for method in TRANSFER_METHODS
    }


def leave_one_out(
    run: EvaluationRun, dataset: EvaluationDataset, slides: list[ad.AnnData]
) -> tuple[dict, str]:
    """Hold out each slide in turn; train on the others' labelled spots (labels NaN = unlabelled)."""
    labels = [spot_labels(a, dataset) for a in slides]
    rows: list[dict[str, Any]] = []
    results: dict[str, list[TransferResult]] = {m: [] for m in TRANSFER_METHODS}
    for held in range(len(slides)):
        for method, result in _held_out_results(run, dataset.name, slides, labels, held).items():
            results[method].append(result)
            rows.append(
                {
                    "held_out": slide_name(slides[held], "?"),
                    "split": run.split(slides[held]),
                    "method": method,
                    "n_spots": int(labels[held].notna().sum()),
                    **result.scores(),
                }
            )
    classes = sorted({str(v) for lab in labels for v in lab.dropna()})
    matrices = {LABELS[m]: pooled_confusion(results[m], classes) for m in TRANSFER_METHODS}
    figure = f"annotation_{dataset.name}.png"
    figures.confusion_matrices(matrices, classes, run.figures / figure)
    table = pd.DataFrame.from_records(rows)
    metrics = {
        "per_slide": records(table),
        "mean": table.groupby("method")[["accuracy", "balanced_accuracy", "macro_f1"]]
        .mean()
        .to_dict(orient="index"),
        "classes": classes,
        "confusion": {m: matrices[LABELS[m]].tolist() for m in TRANSFER_METHODS},
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
        + split_summary(table, "accuracy"),
        f"![confusion matrices]({'figures/' + figure})\n\nConfusion matrices pooled over held-out "
        "slides (rows: true, colour: share of the row).",
    ]
    return "\n\n".join(lines)


def annotation_section(run: EvaluationRun, data: dict[str, list[ad.AnnData]]) -> tuple[dict, str]:
    """Section 3: leave-one-slide-out label transfer on every annotation dataset."""
    parts = [
        "## 3. Spot annotation by label transfer",
        "Standardised features, multinomial logistic regression (sklearn, seed "
        f"{run.seed}) trained on the other slides' labelled spots. Every method sees the genes "
        "shared by all slides: SAGE-FM is shown those genes only (the others as unobserved), and "
        "the PCA and BANKSY-style baselines fit HVGs, z-scores and PCA on the training slides and "
        "project the held-out one. *PCA, slide-centred* subtracts each slide's own gene "
        "means first (no labels), which removes patient and batch offsets. MOFA+ cannot project "
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
