"""Region-level phenotype prediction: pool spot features over square windows, classify the windows.

Neighbouring windows share tissue, so a classifier scored on a window next to one it was trained on
is flattered. Cross-validation therefore splits *spatial blocks* of windows between folds (sklearn's
`StratifiedGroupKFold`, groups = blocks), and in each fold drops from training every window that
touches a test window (a one-window buffer): no two neighbouring windows ever sit on both sides.

Section 4 of the report (`phenotype_section`) runs the config's `PhenotypeTask`s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anndata as ad
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sagefm.data.slides import slide_name, spot_coordinates_um
from sagefm.errors import InputDataError
from sagefm.evaluation.config import PhenotypeTask
from sagefm.evaluation.data import spot_labels
from sagefm.evaluation.report import LABELS, METHODS, markdown_table, verdict

if TYPE_CHECKING:
    from sagefm.evaluation.run import EvaluationRun


def window_cells(coords_um: np.ndarray, window_um: float) -> np.ndarray:
    """(n, 2) int: the (column, row) of the ``window_um``-wide square window holding each spot."""
    origin = coords_um.min(axis=0)
    return np.floor((coords_um - origin) / window_um).astype(np.int64)


@dataclass(frozen=True)
class Windows:
    """Windows of one or more slides. ``table`` has one row per window: slide, cell_x, cell_y,
    n_spots, label; ``spots[i]`` are the spot indices (within its slide) pooled into window i."""

    table: pd.DataFrame
    spots: list[np.ndarray]

    def pool(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """(n_windows, d): the mean feature vector of each window; ``features`` maps slide -> (n, d)."""
        slides = self.table["slide"].to_numpy()
        return np.stack(
            [features[s][idx].mean(axis=0) for s, idx in zip(slides, self.spots, strict=True)]
        )


def make_windows(
    slides: dict[str, tuple[np.ndarray, np.ndarray]], *, window_um: float, min_spots: int
) -> Windows:
    """Windows over each slide; ``slides`` maps name -> (coords_um (n, 2), spot labels (n,) object).

    A window's label is the majority label of its labelled spots (None/NaN = unlabelled); windows
    with fewer than ``min_spots`` labelled spots are dropped.
    """
    rows, spots = [], []
    for name, (coords, labels) in slides.items():
        cells = window_cells(coords, window_um)
        labelled = pd.notna(labels)
        frame = pd.DataFrame({"x": cells[:, 0], "y": cells[:, 1], "label": labels})
        for (x, y), group in frame[labelled].groupby(["x", "y"]):
            if len(group) < min_spots:
                continue
            rows.append(
                {
                    "slide": name,
                    "cell_x": int(x),
                    "cell_y": int(y),
                    "n_spots": len(group),
                    "label": group["label"].value_counts().index[0],
                }
            )
            spots.append(group.index.to_numpy())
    if not rows:
        raise InputDataError(f"no window of {window_um} µm holds {min_spots} labelled spots")
    return Windows(pd.DataFrame.from_records(rows), spots)


def blocked_folds(
    table: pd.DataFrame, y: np.ndarray, *, block_windows: int, n_splits: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) window indices: blocks of ``block_windows``² windows go whole to one fold, and
    training windows touching a test window of the same slide (8-neighbourhood) are dropped."""
    blocks = (
        table["slide"].astype(str)
        + ":"
        + (table["cell_x"] // block_windows).astype(str)
        + ":"
        + (table["cell_y"] // block_windows).astype(str)
    ).to_numpy()
    n_splits = min(n_splits, np.unique(blocks).size)
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    slide = table["slide"].to_numpy()
    cells = table[["cell_x", "cell_y"]].to_numpy()
    folds = []
    for train, test in splitter.split(np.zeros(len(y)), y, groups=blocks):
        touching = np.zeros(len(y), dtype=bool)
        for s in np.unique(slide[test]):
            test_cells = cells[test][slide[test] == s]
            on_slide = np.flatnonzero(slide == s)
            gap = np.abs(cells[on_slide, None, :] - test_cells[None, :, :]).max(axis=2).min(axis=1)
            touching[on_slide[gap <= 1]] = True
        folds.append((train[~touching[train]], test))
    return folds


def blocked_auroc(
    features: np.ndarray, y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]], *, seed: int
) -> dict[str, float]:
    """Mean and SD over folds of the AUROC of a logistic regression on standardised ``features``.

    ``y`` is (n_windows,) bool. Folds whose training or test part lacks a class are skipped.
    """
    aurocs = []
    for train, test in folds:
        if np.unique(y[train]).size < 2 or np.unique(y[test]).size < 2:
            continue
        classifier = make_pipeline(
            StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed)
        )
        classifier.fit(features[train], y[train])
        aurocs.append(roc_auc_score(y[test], classifier.decision_function(features[test])))
    if not aurocs:
        return {"auroc": float("nan"), "auroc_sd": float("nan"), "n_folds": 0}
    return {
        "auroc": float(np.mean(aurocs)),
        "auroc_sd": float(np.std(aurocs)),
        "n_folds": len(aurocs),
    }


# ------------------------------------------------------------------------- report section
def _task_labels(adata: ad.AnnData, run: EvaluationRun, task: PhenotypeTask) -> np.ndarray:
    """(n_spots,) object: True / False per labelled spot, NaN where unlabelled."""
    labels = spot_labels(adata, run.config.dataset(task.dataset), column=task.column)
    return labels.map(lambda v: v if pd.isna(v) else str(v) in task.positive).to_numpy(object)


def phenotype_task(
    run: EvaluationRun, task: PhenotypeTask, slides: list[ad.AnnData]
) -> dict[str, Any]:
    """Blocked-CV AUROC of every method on one task's windows."""
    c = run.config
    names = [slide_name(a, str(i)) for i, a in enumerate(slides)]
    windows = make_windows(
        {
            n: (spot_coordinates_um(a), _task_labels(a, run, task))
            for n, a in zip(names, slides, strict=True)
        },
        window_um=c.window_um,
        min_spots=c.min_window_spots,
    )
    y = windows.table["label"].to_numpy(dtype=bool)
    folds = blocked_folds(
        windows.table, y, block_windows=c.block_windows, n_splits=c.n_folds, seed=run.seed
    )
    reps = run.representations(
        task.dataset, slides, train=list(range(len(slides))), slide_level=True
    )
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


def phenotype_section(run: EvaluationRun, data: dict[str, list[ad.AnnData]]) -> tuple[dict, str]:
    """Section 4: window-level phenotype tasks with spatially blocked cross-validation."""
    c = run.config
    results, rows = {}, []
    for task in c.phenotype_tasks:
        result = phenotype_task(run, task, data[task.dataset])
        results[task.name] = result
        for method, s in result["scores"].items():
            rows.append(
                {
                    "task": task.name,
                    "method": LABELS[method],
                    **s,
                    "windows (positive)": f"{result['n_windows']} ({result['n_positive']})",
                    "slides": ", ".join(f"{n}: {sp}" for n, sp in result["slides"].items()),
                }
            )
    parts = [
        "## 4. Region-level phenotype",
        f"Spot features averaged over {c.window_um:.0f} µm square windows (at least "
        f"{c.min_window_spots} labelled spots; label = majority). {c.n_folds}-fold cross-validation "
        f"over spatial blocks of {c.block_windows}×{c.block_windows} windows (StratifiedGroupKFold), "
        "and training windows touching a test window are dropped, so neighbouring windows never "
        "sit on both sides. Logistic regression on standardised pooled features; AUROC mean ± SD "
        "over folds. Baselines fitted on all spots of the task without labels. A label constant "
        "per slide (prostate: NP normal, CP cancer) also rewards telling the slides apart.",
        *(
            [
                "SAGE-FM was pretrained with slide centring; for these tasks every slide is centred "
                "on the corpus means (`embed(slide_centering=False)`), which keeps slides apart."
            ]
            if run.model.config.model.slide_centering
            else []
        ),
        markdown_table(pd.DataFrame.from_records(rows)),
    ]
    for name, result in results.items():
        auroc = {m: s["auroc"] for m, s in result["scores"].items()}
        parts.append(f"{name}: " + verdict(auroc, higher_is_better=True, metric="AUROC"))
    return {"tasks": results}, "\n\n".join(parts)
