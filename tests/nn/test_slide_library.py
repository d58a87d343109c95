"""`ModelConfig.slide_library_target`: depth normalisation brings each spot to its own slide's
median visible library (`PreparedSlide.median_library`) instead of one fixed target."""

import dataclasses
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from tests.nn.test_depth import random_model, scaled

import sagefm
from sagefm.config import ModelConfig, SageFMConfig, TrainConfig
from sagefm.data.slides import PreparedSlide, prepare_slide
from sagefm.datasets import synthetic_tissue
from sagefm.errors import ConfigError
from sagefm.model import SageFM
from sagefm.nn.gcn import SageGCN
from sagefm.nn.inputs import depth_library, network_scale


def _hand_slide(counts: list[list[float]], hidden: list[list[bool]] | None = None) -> PreparedSlide:
    """A slide of len(counts) spots over 4 vocabulary genes, the last not measured."""
    n = len(counts)
    return PreparedSlide(
        name="hand",
        values=sp.csr_matrix(np.log1p(np.asarray(counts, dtype=np.float32))),
        observed=np.array([True, True, True, False]),
        hidden=None if hidden is None else sp.csr_matrix(np.asarray(hidden)),
        neighbours=np.arange(n)[:, None],
        coords_um=np.zeros((n, 2), np.float32),
        bandwidth_um=1.0,
    )


def test_median_library_by_hand() -> None:
    """The median of the spots' libraries; a spot with hidden genes counts its shown library
    divided by the share of the slide's 3 observed genes it shows, whatever the hidden values."""
    counts = [[2.0, 2.0, 2.0, 0.0], [1.0, 3.0, 0.0, 0.0]]  # libraries 6 and 4
    assert _hand_slide(counts).median_library() == pytest.approx(5.0)
    # A hides a gene as expressed as the others: 4 shown / (2/3) = 6 again
    hide_a = [[True, False, False, False], [False, False, False, False]]
    assert _hand_slide(counts, hide_a).median_library() == pytest.approx(5.0)
    # B hides its 3 counts: 1 shown / (2/3) = 1.5, median (6 + 1.5) / 2
    hide_b = [[False, False, False, False], [False, True, False, False]]
    assert _hand_slide(counts, hide_b).median_library() == pytest.approx(3.75)
    big = [[2.0, 2.0, 2.0, 0.0], [1.0, 3e6, 0.0, 0.0]]
    assert _hand_slide(big, hide_b).median_library() == pytest.approx(3.75)  # nothing leaks
    assert _hand_slide([[0.0, 0.0, 0.0, 0.0]]).median_library() == 1.0  # no counts at all


def test_a_spot_at_its_slides_median_is_read_unchanged() -> None:
    """On the network's scale a row is its log1p counts times M / L: unchanged at L = M, and its
    `depth_library` is L · T / M in units of the fixed target T."""
    config = ModelConfig(n_genes=3, depth_normalize=True, slide_library_target=True)
    values = torch.log1p(torch.tensor([[2.0, 6.0, 2.0], [1.0, 0.0, 1.0]]))  # L = 10 and 2
    torch.testing.assert_close(network_scale(values, config, 10.0)[0], values[0])
    at_ten = torch.log1p(torch.tensor([5.0, 0.0, 5.0]))  # the second row at 10 counts
    torch.testing.assert_close(network_scale(values, config, 10.0)[1], at_ten)
    per_row = torch.tensor([10.0, 2.0])  # each row's own median: both unchanged
    torch.testing.assert_close(
        network_scale(values.to_sparse_csr(), config, per_row).to_dense(), values
    )
    target = config.library_target
    torch.testing.assert_close(
        depth_library(values, config, 10.0), torch.tensor([target, target / 5])
    )
    with pytest.raises(ValueError, match="median library"):
        network_scale(values, config)
    with pytest.raises(ConfigError, match="needs depth_normalize"):
        ModelConfig(slide_library_target=True)


def _at_fixed_target(model: SageFM, target: float) -> SageFM:
    """``model``'s weights with one fixed library target instead of each slide's median."""
    config = dataclasses.replace(model.config.model, slide_library_target=False)
    config = dataclasses.replace(config, library_target=target)
    fixed = SageFM(
        SageGCN(config), dataclasses.replace(model.config, model=config), model.vocabulary
    )
    fixed.network.load_state_dict(model.network.state_dict())
    return fixed


def test_each_slide_is_read_as_a_fixed_target_at_its_median() -> None:
    """The same weights give, on a slide of median library M, what a fixed target of M gives:
    for the slide and for the same slide at ten times its depth (10 M). Imputation
    reads M from the shown genes (`PreparedSlide.median_library` with the hidden ones)."""
    adata = synthetic_tissue(n_slides=1, grid_rows=7, grid_cols=7, n_genes=40, seed=3)[0]
    by_slide = random_model(adata, depth_normalize=True, slide_library_target=True)
    mask = np.random.default_rng(0).random(adata.shape) < 0.2
    vocabulary, data_config = by_slide.vocabulary, by_slide.config.data
    for factor in (1.0, 10.0):
        slide = scaled(adata, factor)
        median = prepare_slide(slide, vocabulary, data_config)[0].median_library()
        fixed = _at_fixed_target(by_slide, median)
        np.testing.assert_allclose(by_slide.embed(slide), fixed.embed(slide), atol=1e-5)
        shown = prepare_slide(slide, vocabulary, data_config, hidden=mask)[0].median_library()
        assert shown == pytest.approx(median, rel=0.1)  # about the full slide's
        imputed = by_slide.impute(slide, mask)
        np.testing.assert_allclose(
            imputed, _at_fixed_target(by_slide, shown).impute(slide, mask), atol=1e-5
        )
    # a uniform change of a whole slide's depth is then seen (each slide is read at its own)
    assert not np.allclose(by_slide.embed(scaled(adata, 10)), by_slide.embed(adata), atol=1e-3)


def test_pretraining_with_each_slides_median_library(tmp_path) -> None:
    slides = synthetic_tissue(n_slides=2, grid_rows=7, grid_cols=7, n_genes=40, seed=4)
    slides[0] = scaled(slides[0], 20)  # a deep slide beside a shallow one
    config = SageFMConfig(
        model=ModelConfig(hidden_sizes=(16, 8), depth_normalize=True, slide_library_target=True),
        train=TrainConfig(max_epochs=1, batch_size=16, accelerator="cpu"),
    )
    result = sagefm.pretrain(
        slides[:1], val_slides=slides[1:], output=tmp_path / "run", config=config, progress=False
    )
    assert math.isfinite(result.best_val_loss)
    model = sagefm.load(result.best_dir)
    assert model.config.model.slide_library_target
    assert np.isfinite(model.embed(slides[1])).all()
