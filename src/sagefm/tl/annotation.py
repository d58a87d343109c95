"""Spot annotation by label transfer: train a classifier on some slides, predict a held-out one."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


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
