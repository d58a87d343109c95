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


def test_scaled_baselines_bring_each_spot_to_its_own_depth() -> None:
    # three spots with the same profile (1 : 3 counts) at depths 1, 2 and 4; spot 0 hides gene 0
    counts = np.array([[1.0, 3.0], [2.0, 6.0], [4.0, 12.0]])
    truth = np.log1p(counts)
    mask = np.array([[True, False], [False, False], [False, False]])
    neighbours = np.array([[0, 1, 2], [1, 0, 2], [2, 0, 1]])
    out = baseline_predictions(truth, mask, neighbours)
    # spot 0 shows 3 counts in half its genes: library 6; spots 1 and 2 have 8 and 16; median 8
    library = np.array([6.0, 8.0, 16.0])
    scaled = np.log1p(counts * 8.0 / library[:, None])  # every spot at 8 counts
    gene_mean = np.array([scaled[1:, 0].mean(), scaled[:, 1].mean()])
    expected = np.log1p(np.expm1(gene_mean)[None, :] * library[:, None] / 8.0)
    np.testing.assert_allclose(out["scaled_gene_mean"], expected)
    # spot 0, gene 0 from its neighbours at 8 counts (both show 2 counts there), back at depth 6
    np.testing.assert_allclose(out["scaled_neighbour_mean"][0, 0], np.log1p(2.0 * 6.0 / 8.0))
    # spot 1, gene 1: the mean of spots 0 and 2 at 8 counts, back at spot 1's depth (8)
    np.testing.assert_allclose(out["scaled_neighbour_mean"][1, 1], scaled[[0, 2], 1].mean())
    # spot 2 is deeper: the same kind of mean, restored at 16 counts
    nb = scaled[[0, 1], 1].mean()
    np.testing.assert_allclose(out["scaled_neighbour_mean"][2, 1], np.log1p(np.expm1(nb) * 2.0))
