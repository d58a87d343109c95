"""Masked-gene recovery baselines on hand-built inputs with known answers."""

import numpy as np

from sagefm.evaluation.recovery import baseline_predictions, random_observed_mask


def test_baselines_use_visible_entries_only() -> None:
    truth = np.array([[1.0, 10.0], [3.0, 20.0], [5.0, 30.0]])
    mask = np.array([[True, False], [False, False], [False, True]])
    neighbours = np.array([[0, 1, 2], [1, 0, 2], [2, 0, 1]])
    out = baseline_predictions(truth, mask, neighbours)
    assert (out["zero"] == 0).all()
    np.testing.assert_allclose(out["gene_mean"][0], [4.0, 15.0])  # (3+5)/2, (10+20)/2
    # e.g. spot 1, gene 0: neighbour 0 is hidden, neighbour 2 shows 5 -> 5
    np.testing.assert_allclose(out["neighbour_mean"], [[4.0, 20.0], [5.0, 10.0], [3.0, 15.0]])


def test_random_observed_mask_hides_the_share_of_scored_genes_per_spot() -> None:
    scored = np.array([True] * 10 + [False] * 5)
    mask = random_observed_mask(50, scored, 0.3, np.random.default_rng(0))
    assert (mask.sum(axis=1) == 3).all() and not mask[:, 10:].any()
