"""`ModelConfig.slide_library_target`: depth normalisation brings each spot to its own slide's
median visible library (`PreparedSlide.median_library`) instead of one fixed target; and
`ModelConfig.slide_output_target`: only the head predicts at that library."""

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


def _head_only(config: ModelConfig, input_mean: torch.Tensor, head_bias: torch.Tensor) -> SageGCN:
    """A network whose head reads nothing (zero weights, no skip path): its output is the bias
    plus the slide shift."""
    network = SageGCN(config)
    network.input_mean.copy_(input_mean)
    with torch.no_grad():
        network.head.weight.zero_()
        network.head.bias.copy_(head_bias)
    return network


def test_the_head_predicts_at_the_slides_median_library_by_hand() -> None:
    """Input at T = 100, head at the slide's median M: with the bias at the corpus means the
    head starts at the slide's mean share restored to the spot's library L, as a head at T does;
    what the head adds is then added at M, not at T. A gene the slide shows 1 count of per
    1,000 (mean 0.0953 at T = 100), a slide of median M = 2,000, a spot of L = 20,000."""
    common = dict(
        n_genes=2,
        hidden_sizes=(4, 3),
        depth_normalize=True,
        library_target=100.0,
        slide_centering=True,
        spatial_skip=False,
    )
    at_m = ModelConfig(**common, slide_output_target=True)
    at_t = ModelConfig(**common)
    slide_mean = torch.log1p(torch.tensor([0.1, 5.0]))  # shares 0.1% and 5% at T = 100
    corpus = torch.log1p(torch.tensor([1.0, 5.0]))  # the corpus shows the first gene at 1%
    library, median = torch.tensor([20_000.0]), 2_000.0
    embedding = torch.zeros(1, 3)
    for added in (0.0, 0.5):
        bias = corpus + added
        by_m = _head_only(at_m, corpus, bias).reconstruct(
            embedding, library=library, slide_mean=slide_mean, slide_library=median
        )
        by_t = _head_only(at_t, corpus, bias).reconstruct(
            embedding, library=library, slide_mean=slide_mean
        )
        share = torch.tensor([0.001, 0.05])
        at_median = torch.log1p(share * median) + added  # the head's output at M
        expected_m = torch.log1p(torch.expm1(at_median) * 20_000.0 / median)
        expected_t = torch.log1p(torch.expm1(torch.log1p(share * 100.0) + added) * 200.0)
        torch.testing.assert_close(by_m[0], expected_m)
        torch.testing.assert_close(by_t[0], expected_t)
        if added == 0.0:  # both start at the slide's share: 20 and 1,000 counts
            torch.testing.assert_close(by_m, by_t)
            torch.testing.assert_close(by_m[0], torch.log1p(torch.tensor([20.0, 1000.0])))
    # the same 0.5 added to the rare gene: 39 counts at M (2 at M: e^0.5 x 3 - 1, times 10),
    # 163 at T (0.1 at T: e^0.5 x 1.1 - 1, times 200)
    assert float(torch.expm1(by_m[0, 0])) == pytest.approx(39.46, rel=0.01)
    assert float(torch.expm1(by_t[0, 0])) == pytest.approx(162.7, rel=0.01)
    with pytest.raises(ValueError, match="median library"):
        _head_only(at_m, corpus, corpus).reconstruct(
            embedding, library=library, slide_mean=slide_mean
        )
    with pytest.raises(ConfigError, match="drop slide_output_target"):
        ModelConfig(depth_normalize=True, slide_library_target=True, slide_output_target=True)
