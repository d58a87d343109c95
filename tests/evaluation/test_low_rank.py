"""The low-rank completion baseline of masked-gene recovery, on matrices with known answers."""

import numpy as np

from sagefm.evaluation.recovery_baselines import baseline_predictions, low_rank_completion


def _rank_two(rng: np.random.Generator, n_spots: int = 120, n_genes: int = 40) -> np.ndarray:
    """(n_spots, n_genes) gene means plus two spot factors times two gene loadings, all > 0."""
    spots, loadings = rng.random((n_spots, 2)), rng.random((2, n_genes))
    return 1.0 + rng.random(n_genes)[None, :] + spots @ loadings


def test_completion_recovers_hidden_entries_of_a_low_rank_matrix() -> None:
    rng = np.random.default_rng(0)
    values = _rank_two(rng)
    visible = rng.random(values.shape) > 0.3
    fit = low_rank_completion(values, visible, rank=2, rounds=50)
    hidden = ~visible
    error = np.sqrt(np.mean((fit[hidden] - values[hidden]) ** 2))
    mean_error = np.sqrt(np.mean((values.mean(axis=0)[None, :] - values)[hidden] ** 2))
    assert error < 0.01 * mean_error  # the gene mean misses the two factors; the fit does not


def test_completion_never_reads_hidden_entries() -> None:
    rng = np.random.default_rng(1)
    values = _rank_two(rng)
    visible = rng.random(values.shape) > 0.3
    other = np.where(visible, values, 1e3)  # the hidden entries changed beyond recognition
    np.testing.assert_array_equal(
        low_rank_completion(values, visible), low_rank_completion(other, visible)
    )


def test_completion_of_a_tiny_matrix_falls_back_to_gene_means() -> None:
    values = np.array([[1.0, 2.0, 3.0]])  # one spot: no rank is left after the gene means
    visible = np.array([[True, False, True]])
    np.testing.assert_array_equal(low_rank_completion(values, visible), [[1.0, 0.0, 3.0]])


def test_baseline_is_restored_at_each_spots_depth() -> None:
    # one profile, with a spot factor, at depths that vary 4-fold: the completion at the median
    # library, restored at each spot's library, recovers the hidden counts
    rng = np.random.default_rng(2)
    counts = np.expm1(_rank_two(rng, 200, 30)) * rng.choice([1.0, 2.0, 4.0], size=(200, 1))
    truth = np.log1p(counts)
    mask = rng.random(truth.shape) < 0.3
    neighbours = np.tile(np.arange(200)[:, None], (1, 5))  # no spatial signal to borrow
    out = baseline_predictions(truth, mask, neighbours)
    rmse = {k: np.sqrt(np.mean((v[mask] - truth[mask]) ** 2)) for k, v in out.items()}
    assert rmse["low_rank"] < 0.5 * rmse["scaled_gene_mean"]
