"""The slides an evaluation runs on, their labels, and which of them the model saw in pretraining."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from sagefm.data.slides import spot_coordinates_um
from sagefm.errors import InputDataError
from sagefm.evaluation.config import EvaluationConfig, EvaluationDataset


def crop(adata: ad.AnnData, max_spots: int | None) -> ad.AnnData:
    """The ``max_spots`` spots nearest the slide's centroid: a disc, so neighbourhoods stay intact."""
    if max_spots is None or adata.n_obs <= max_spots:
        return adata
    coords = spot_coordinates_um(adata)
    distance = np.linalg.norm(coords - coords.mean(axis=0), axis=1)
    keep = np.sort(np.argsort(distance, kind="stable")[:max_spots])
    return adata[keep].copy()


def read_dataset(
    data_dir: Path, dataset: EvaluationDataset, max_spots: int | None
) -> list[ad.AnnData]:
    """The dataset's slides, each cropped to ``max_spots``; `InputDataError` naming missing files."""
    from sagefm.io import read

    folder = data_dir / dataset.folder
    missing = [f"{s}.h5ad" for s in dataset.slides if not (folder / f"{s}.h5ad").is_file()]
    if missing:
        raise InputDataError(
            f"{folder} lacks {missing}; point --data-dir at the shared data folder "
            "(dlpfc/, her2st/, prostate/) or choose fewer --sections"
        )
    slides = []
    for stem in dataset.slides:
        adata = read(folder / f"{stem}.h5ad")
        assert isinstance(adata, ad.AnnData)
        slides.append(crop(adata, max_spots))
    return slides


def datasets_needed(config: EvaluationConfig, sections: Sequence[str]) -> list[str]:
    """Names of the datasets the chosen report sections use, in the config's order."""
    uses = {
        "recovery": set(config.recovery_datasets),
        "panels": set(config.recovery_datasets),
        "domains": {config.domain_dataset},
        "annotation": set(config.annotation_datasets),
        "phenotype": {t.dataset for t in config.phenotype_tasks},
        "perturbation": set(config.perturbation_datasets),
    }
    needed = set().union(*(uses[s] for s in sections))
    return [d.name for d in config.datasets if d.name in needed]


def load_data(
    data_dir: Path, config: EvaluationConfig, sections: Sequence[str]
) -> dict[str, list[ad.AnnData]]:
    """Dataset name -> slides, only for the datasets the chosen sections use."""
    return {
        name: read_dataset(data_dir, config.dataset(name), config.max_spots)
        for name in datasets_needed(config, sections)
    }


def spot_labels(
    adata: ad.AnnData, dataset: EvaluationDataset, column: str | None = None
) -> pd.Series:
    """(n_spots,) object labels from obs[column] (default: the dataset's annotation column), NaN
    where unlabelled (missing, or one of the dataset's ``missing_labels``)."""
    column = column or dataset.label_column
    if column is None or column not in adata.obs:
        raise InputDataError(
            f"{dataset.name}: obs has no label column {column!r} (it has {list(adata.obs.columns)})"
        )
    labels = adata.obs[column].astype(object)
    return labels.where(~labels.isin(dataset.missing_labels))


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
