"""Masking hides exactly the requested share of observed genes and never an unobserved one."""

import numpy as np

from sagefm.data.masking import mask_observed_genes


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
