"""Label transfer: annotate a slide's spots from annotated reference slides.

A multinomial logistic regression on standardised features (the embedding, or any representation)
is fitted on the reference slides' labelled spots and applied to every spot of the query slide;
with two or more reference slides its regularisation is the one that transfers best between them
(leave one slide out), since a new slide is what it will meet.
With ``refine`` each query spot's class probabilities are then averaged over its subgraph (the spot
and its 14 nearest spots) before the most probable class is taken: a cell type or region is a
property of a neighbourhood, and the average removes isolated misclassified spots, the step that
GraphST's ``refine_label`` takes for domains. `sagefm evaluate` scores both, every representation
alike. Measured (README, Ablations, "Label transfer refined over the subgraph, ..."): refinement
raised the transfer preset's accuracy on DLPFC 151676 from 0.843-0.854 to 0.857-0.872 (three
seeds) and moved neighbour-averaged PCA and the BANKSY-style baseline by -0.009 to +0.010.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, LeaveOneGroupOut
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from sagefm._constants import SUBGRAPH_SIZE, Keys
from sagefm._threads import one_blas_thread
from sagefm.data.neighbourhood import build_neighbourhoods, neighbour_average
from sagefm.data.slides import spot_coordinates_um
from sagefm.errors import InputDataError
from sagefm.tl.domains import spot_representation

logger = logging.getLogger(__name__)


#: The inverse regularisation strengths (sklearn's ``C``) a leave-one-slide-out chooses from.
#: One fixed C treats a 20-dimensional PCA and a 512-dimensional embedding very differently
#: (README, Ablations, "The classifier's regularisation chosen by leave-one-slide-out").
C_GRID = (0.001, 0.01, 0.1, 1.0)


def fit_label_classifier(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> Pipeline:
    """Standardise, then a multinomial logistic regression on (n, d) ``features``, (n,) labels.

    ``groups`` (n,): each spot's slide. With two or more slides, C is chosen from `C_GRID` by
    leave-one-slide-out accuracy (scaler and regression refitted in every fold, the smallest C
    on ties), then refitted on all spots: a new slide is what the classifier will meet. Without,
    or when leaving a slide out leaves a single class to learn, C = 1 (sklearn's default).
    `chosen_c` reads the C used.
    """
    classifier = make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed)
    )
    slides = np.unique(groups) if groups is not None else np.array([])
    # One BLAS thread per fit (`sagefm._threads`); the folds run in parallel instead.
    with one_blas_thread():
        if len(slides) < 2 or any(len(np.unique(labels[groups != g])) < 2 for g in slides):
            return classifier.fit(features, labels)
        search = GridSearchCV(
            classifier,
            {"logisticregression__C": list(C_GRID)},
            scoring="accuracy",
            cv=LeaveOneGroupOut(),
            n_jobs=min(len(C_GRID) * len(slides), os.cpu_count() or 1),  # a process per fit at most
        )
        search.fit(features, labels, groups=groups)
    best = search.best_estimator_
    assert isinstance(best, Pipeline)
    return best


def chosen_c(classifier: Pipeline) -> float:
    """The inverse regularisation C of a `fit_label_classifier` pipeline."""
    return float(classifier.get_params()["logisticregression__C"])


def predict_labels(
    classifier: Pipeline, features: np.ndarray, neighbours: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(n,) predicted classes and their (n, C) probabilities for (n, d) ``features``.

    ``neighbours`` (`build_neighbourhoods` of the same n spots) averages each spot's probabilities
    over its subgraph first, so it needs every spot of the slide, labelled or not.
    """
    probabilities = classifier.predict_proba(features)
    if neighbours is not None:
        probabilities = neighbour_average(probabilities, neighbours)
    return classifier.classes_[probabilities.argmax(axis=1)], probabilities


def transfer_labels(
    adata: ad.AnnData,
    reference: ad.AnnData | Sequence[ad.AnnData],
    label_key: str,
    *,
    use_rep: str = Keys.X_EMB,
    key_added: str = Keys.LABEL,
    refine: bool = True,
    n_neighbours: int = SUBGRAPH_SIZE - 1,
    seed: int = 0,
) -> pd.Series:
    """Labels for ``adata``'s spots learnt from ``reference.obs[label_key]`` (NaN = unlabelled).

    Every slide needs ``obsm[use_rep]`` (``"X"``: ``.X``) of the same width, e.g. `SageFM.embed` of
    each with the same model. Writes ``adata.obs[key_added]`` (categorical), the class probabilities
    to ``adata.obsm[key_added + "_probabilities"]`` (n_spots, C), the classes and parameters to
    ``adata.uns["sagefm"]["transfer"][key_added]``, and returns the labels. With two or more
    reference slides the classifier's regularisation is chosen by leave-one-slide-out on them
    (`fit_label_classifier`; the choice is recorded as ``"C"``).
    """
    references = [reference] if isinstance(reference, ad.AnnData) else list(reference)
    features, labels, slides = _reference_spots(references, label_key, use_rep)
    query = spot_representation(adata, use_rep)
    if query.shape[1] != features.shape[1]:
        raise InputDataError(
            f'"{use_rep}" has {query.shape[1]} columns in the query and {features.shape[1]} in '
            "the reference: embed every slide with the same model"
        )
    classifier = fit_label_classifier(features, labels, seed=seed, groups=slides)
    neighbours = build_neighbourhoods(spot_coordinates_um(adata), n_neighbours) if refine else None
    predicted, probabilities = predict_labels(classifier, query, neighbours)
    classes = [str(c) for c in classifier.classes_]
    result = pd.Series(
        pd.Categorical(predicted.astype(str), categories=classes),
        index=adata.obs_names,
        name=key_added,
    )
    adata.obs[key_added] = result
    adata.obsm[f"{key_added}_probabilities"] = probabilities.astype(np.float32)
    info = dict(adata.uns.get(Keys.UNS, {}))
    info.setdefault(Keys.TRANSFER, {})[key_added] = {
        "classes": classes,
        "label_key": label_key,
        "use_rep": use_rep,
        "n_reference_spots": len(labels),
        "C": chosen_c(classifier),
        "refine": refine,
        "n_neighbours": n_neighbours,
        "seed": seed,
    }
    adata.uns[Keys.UNS] = info
    logger.info(
        "transfer_labels: %d spots, %d classes from %d reference spots -> obs[%r]",
        adata.n_obs,
        len(classes),
        len(labels),
        key_added,
    )
    return result


def _reference_spots(
    references: list[ad.AnnData], label_key: str, use_rep: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The labelled spots of every reference slide: (n, d) features, (n,) str labels and (n,)
    the index of each spot's slide."""
    if not references:
        raise InputDataError("transfer_labels needs at least one reference slide")
    features, labels = [], []
    for ref in references:
        if label_key not in ref.obs:
            raise InputDataError(
                f'a reference slide has no obs["{label_key}"] (it has {list(ref.obs)})'
            )
        known = ref.obs[label_key].notna().to_numpy()
        features.append(spot_representation(ref, use_rep)[known])
        labels.append(ref.obs[label_key][known].astype(str).to_numpy())
    stacked = np.concatenate(labels)
    n_classes = len(np.unique(stacked))
    if n_classes < 2:
        raise InputDataError(
            f'obs["{label_key}"] of the reference slides has {n_classes} labelled '
            "class(es): label transfer needs at least two"
        )
    widths = {f.shape[1] for f in features}
    if len(widths) > 1:
        raise InputDataError(
            f'"{use_rep}" differs in width between reference slides: {sorted(widths)}'
        )
    slides = np.repeat(np.arange(len(features)), [len(f) for f in features])
    return np.vstack(features), stacked, slides
