"""Masking hides exactly the requested share of observed genes and never an unobserved one."""

import numpy as np

from sagefm.data.masking import mask_centres, mask_observed_genes


def test_mask_fraction_and_support() -> None:
    rng = np.random.default_rng(0)
    observed = np.zeros(100, dtype=bool)
    observed[::2] = True  # 50 observed
    for _ in range(20):
        hidden = mask_observed_genes(observed, 0.3, rng)
        assert hidden.sum() == 15
        assert not (hidden & ~observed).any()


def test_mask_is_uniform_over_observed_genes() -> None:
    rng = np.random.default_rng(1)
    observed = np.ones(10, dtype=bool)
    counts = sum(mask_observed_genes(observed, 0.3, rng).astype(int) for _ in range(3000))
    assert np.allclose(counts / 3000, 0.3, atol=0.04)


def test_nothing_observed_hides_nothing() -> None:
    assert not mask_observed_genes(np.zeros(5, dtype=bool), 0.3, np.random.default_rng(0)).any()


def test_centre_masks_are_each_centres_own_draw() -> None:
    """Row b of `mask_centres` is `mask_observed_genes` with the generator of seeds[b]: resumed
    runs depend on (seed, epoch, slide, spot) giving the same mask however the batch is made."""
    rng = np.random.default_rng(2)
    observed = rng.random((6, 40)) < 0.6
    observed[3] = False  # a centre observing nothing hides nothing
    seeds = [(7, 1, int(s), int(p)) for s, p in rng.integers(0, 50, (6, 2))]
    hidden = mask_centres(observed, 0.3, seeds)
    for b, seed in enumerate(seeds):
        expected = mask_observed_genes(observed[b], 0.3, np.random.default_rng(seed))
        np.testing.assert_array_equal(hidden[b], expected)
    assert not hidden[3].any() and hidden.sum() > 0
    assert mask_centres(observed[:0], 0.3, []).shape == (0, 40)
