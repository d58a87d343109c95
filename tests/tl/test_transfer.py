"""`sagefm.tl.transfer_labels` on hand-built tissue whose regions are known."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

from sagefm.errors import InputDataError
from sagefm.tl import transfer_labels
from sagefm.tl.transfer import C_GRID, chosen_c, fit_label_classifier, predict_labels


def _slide(n_side: int, signal: float, seed: int) -> ad.AnnData:
    """A square lattice (100 µm spacing): the left half "tumour", the right half "stroma"; the
    (n, 8) embedding puts the two ``signal`` apart on every dimension, with unit noise."""
    coords = np.array([(x, y) for y in range(n_side) for x in range(n_side)], dtype=float) * 100.0
    tumour = coords[:, 0] < n_side * 50.0
    rng = np.random.default_rng(seed)
    adata = ad.AnnData(X=np.zeros((len(coords), 3), dtype=np.float32))
    adata.obs_names = [f"s{seed}_{i}" for i in range(adata.n_obs)]
    adata.obs["region"] = np.where(tumour, "tumour", "stroma")
    adata.obsm["spatial"] = coords
    adata.obsm["X_sagefm"] = signal * tumour[:, None] + rng.normal(size=(len(coords), 8))
    adata.uns["sagefm"] = {"um_per_unit": 1.0}
    return adata


def _accuracy(adata: ad.AnnData, key: str) -> float:
    return float((adata.obs[key].astype(str) == adata.obs["region"]).mean())


def test_labels_come_from_the_reference_and_are_recorded() -> None:
    references = [_slide(10, 6.0, seed) for seed in (1, 2)]
    references[0].obs.loc[references[0].obs_names[:20], "region"] = np.nan  # unlabelled spots
    query = _slide(10, 6.0, 3)
    truth = query.obs.pop("region")
    labels = transfer_labels(query, references, "region", refine=False)
    assert (labels.astype(str) == truth).mean() > 0.99
    assert list(query.obs["sagefm_label"].cat.categories) == ["stroma", "tumour"]
    probabilities = query.obsm["sagefm_label_probabilities"]
    assert probabilities.shape == (100, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    params = query.uns["sagefm"]["transfer"]["sagefm_label"]
    assert params["classes"] == ["stroma", "tumour"] and params["n_reference_spots"] == 180
    assert query.uns["sagefm"]["um_per_unit"] == 1.0  # the slide's scale is kept


def test_refinement_over_the_subgraph_corrects_noisy_spots() -> None:
    """With weak features single spots are often wrong; their neighbours mostly are not."""
    reference, query = _slide(16, 0.5, 1), _slide(16, 0.5, 2)
    transfer_labels(query, reference, "region", refine=False, key_added="raw")
    transfer_labels(query, reference, "region", refine=True, key_added="refined")
    raw, refined = _accuracy(query, "raw"), _accuracy(query, "refined")
    assert raw < 0.8 and refined > raw + 0.1


def test_an_isolated_spot_takes_its_neighbourhood_class() -> None:
    features = np.array([[0.0], [1.0], [2.0], [3.0]])
    classifier = fit_label_classifier(features, np.array(["a", "a", "b", "b"]))
    neighbours = np.array([[0, 1, 2], [1, 0, 2], [2, 0, 1], [3, 2, 1]])  # spot 2 sits among a's
    raw, _ = predict_labels(classifier, features)
    refined, probabilities = predict_labels(classifier, features, neighbours)
    assert list(raw) == ["a", "a", "b", "b"] and list(refined) == ["a", "a", "a", "b"]
    np.testing.assert_allclose(
        probabilities[2], classifier.predict_proba(features[[2, 0, 1]]).mean(axis=0), rtol=1e-6
    )


def _offset_slide(seed: int, n_spots: int = 40, width: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Two classes that only dimension 0 separates (by 2 sd); the other dimensions are noise
    plus an offset of the slide's own (sd 2): what a slide or patient effect does to features."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n_spots)
    x = rng.normal(size=(n_spots, width))
    x[:, 0] += 2.0 * y
    x[:, 1:] += rng.normal(size=width - 1) * 2.0
    return x, np.array(["a", "b"])[y]


def test_leave_one_slide_out_chooses_the_regularisation_that_transfers() -> None:
    """Unregularised, the classifier separates three training slides by their offsets and does
    poorly on a fourth; leave-one-slide-out sees that and regularises."""
    slides = [_offset_slide(seed) for seed in (0, 1, 2)]
    features = np.vstack([x for x, _ in slides])
    labels = np.concatenate([y for _, y in slides])
    query, truth = _offset_slide(10, n_spots=400)
    plain = fit_label_classifier(features, labels)
    chosen = fit_label_classifier(features, labels, groups=np.repeat([0, 1, 2], 40))
    assert chosen_c(plain) == 1.0 and chosen_c(chosen) < 1.0
    accuracy = [float((predict_labels(c, query)[0] == truth).mean()) for c in (plain, chosen)]
    assert accuracy[1] > accuracy[0] + 0.05


def test_the_chosen_regularisation_is_recorded() -> None:
    query = _slide(8, 6.0, 3)
    transfer_labels(query, _slide(8, 6.0, 1), "region", key_added="one")
    transfer_labels(query, [_slide(8, 6.0, s) for s in (1, 2)], "region", key_added="two")
    records = query.uns["sagefm"]["transfer"]
    assert records["one"]["C"] == 1.0  # one reference slide: nothing to hold out
    assert records["two"]["C"] in C_GRID
    # a slide of one class each: leaving one out leaves nothing to tell apart, so C stays 1
    tumour, stroma = _slide(8, 6.0, 1), _slide(8, 6.0, 2)
    tumour.obs["region"], stroma.obs["region"] = "tumour", "stroma"
    transfer_labels(query, [tumour, stroma], "region", key_added="split")
    assert query.uns["sagefm"]["transfer"]["split"]["C"] == 1.0


def test_bad_references_are_refused_with_a_reason() -> None:
    query = _slide(6, 6.0, 3)
    with pytest.raises(InputDataError, match='no obs\\["cell_type"\\]'):
        transfer_labels(query, _slide(6, 6.0, 1), "cell_type")
    one_class = _slide(6, 6.0, 1)
    one_class.obs["region"] = "tumour"
    with pytest.raises(InputDataError, match="at least two"):
        transfer_labels(query, one_class, "region")
    narrow = _slide(6, 6.0, 1)
    narrow.obsm["X_sagefm"] = narrow.obsm["X_sagefm"][:, :4]
    with pytest.raises(InputDataError, match="same model"):
        transfer_labels(query, narrow, "region")
    with pytest.raises(InputDataError, match="at least one"):
        transfer_labels(query, [], "region")


def test_a_constant_feature_predicts_the_majority_class_everywhere() -> None:
    """`evaluate`'s majority-class floor: with nothing to read, the classifier learns the class
    frequencies (5 : 3 : 2 here) and predicts the most frequent class on every spot; every C
    scores alike in leave-one-slide-out, so the most regularised is kept."""
    labels = np.tile(np.array(["a"] * 5 + ["b"] * 3 + ["c"] * 2), 6)
    classifier = fit_label_classifier(np.zeros((60, 1)), labels, groups=np.repeat([0, 1, 2], 20))
    predicted, probabilities = predict_labels(classifier, np.zeros((7, 1)))
    assert set(predicted) == {"a"}
    np.testing.assert_allclose(probabilities[0], [0.5, 0.3, 0.2], atol=0.01)
    assert chosen_c(classifier) == C_GRID[0]
