"""Depth normalisation (`sagefm.nn.depth`, `ModelConfig.depth_normalize`): the embedding does not
see a uniform change of sequencing depth, and hidden genes do not enter the size factor."""

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from sagefm.config import ModelConfig, SageFMConfig
from sagefm.data.vocabulary import GeneVocabulary
from sagefm.datasets import synthetic_tissue
from sagefm.errors import ConfigError
from sagefm.model import SageFM
from sagefm.nn import depth
from sagefm.nn.gcn import SageGCN


def test_visible_library_and_normalisation_by_hand() -> None:
    counts = torch.tensor([[1.0, 3.0, 0.0], [0.0, 0.0, 0.0], [5.0, 0.0, 5.0]])
    values = torch.log1p(counts)
    library = depth.visible_library(values)
    torch.testing.assert_close(library, torch.tensor([4.0, 0.0, 10.0]))
    sparse = depth.visible_library(values.to_sparse_csr())
    torch.testing.assert_close(sparse, library)
    normalised = depth.normalize_depth_rows(values, library)
    target = depth.LIBRARY_TARGET
    per_target = torch.tensor([[1 / 4, 3 / 4, 0.0], [0.0, 0.0, 0.0], [1 / 2, 0.0, 1 / 2]])
    expected = torch.log1p(per_target * target)
    torch.testing.assert_close(normalised, expected)
    torch.testing.assert_close(
        depth.normalize_depth_rows(values.to_sparse_csr(), library).to_dense(), expected
    )
    # restoring at the node's own library gives the input back
    torch.testing.assert_close(depth.restore_depth(normalised, library[:, None]), values)
    # another target: counts per 1,000 visible counts, and back
    per_thousand = depth.normalize_depth_rows(values, library, 1e3)
    torch.testing.assert_close(per_thousand, torch.log1p(per_target * 1e3))
    torch.testing.assert_close(depth.restore_depth(per_thousand, library[:, None], 1e3), values)


def test_a_spot_at_the_library_target_is_read_unchanged() -> None:
    """``ModelConfig.library_target``: a spot whose visible library is the target reaches the
    first layer as it is, and the head's output comes back unscaled."""
    values = torch.log1p(torch.tensor([[2.0, 6.0, 0.0, 2.0]]))  # a visible library of 10
    plain = SageGCN(ModelConfig(n_genes=4, hidden_sizes=(3,), depth_normalize=False))
    at_ten = SageGCN(
        ModelConfig(n_genes=4, hidden_sizes=(3,), depth_normalize=True, library_target=10)
    )
    at_ten.load_state_dict(plain.state_dict())
    visible = torch.ones_like(values)
    library = at_ten.visible_library(values)
    torch.testing.assert_close(
        at_ten.project(values, visible, library=library), plain.project(values, visible)
    )
    out = torch.rand(1, 4)
    torch.testing.assert_close(at_ten._output(out, library[:, None]), plain._output(out, None))
    with pytest.raises(ConfigError, match="library_target"):
        ModelConfig(library_target=0)


def _counts_slide(seed: int = 2):
    """A synthetic slide whose counts are all even, so that halving them is exact."""
    adata = synthetic_tissue(n_slides=1, grid_rows=7, grid_cols=7, n_genes=40, seed=seed)[0]
    adata.X = sp.csr_matrix(np.asarray(adata.X.toarray(), dtype=np.float32) * 2)
    return adata


def random_model(adata, **options) -> SageFM:
    torch.manual_seed(0)
    genes = list(adata.var_names)
    config = SageFMConfig(
        model=ModelConfig(n_genes=len(genes), hidden_sizes=(16, 8, 12), **options)
    )
    network = SageGCN(config.model)
    for p in network.parameters():
        torch.nn.init.normal_(p, std=0.3)
    network.set_input_scaling(torch.rand(len(genes)) * 2, torch.rand(len(genes)) + 0.5)
    return SageFM(network, config, GeneVocabulary.from_genes(genes))


def scaled(adata, factor: float):
    out = adata.copy()
    out.X = sp.csr_matrix(adata.X.toarray() * factor)
    return out


@pytest.mark.parametrize("edge_scheme", ["weighted", "complete"])
def test_embedding_is_invariant_to_a_uniform_change_of_depth(edge_scheme: str) -> None:
    adata = _counts_slide()
    model = random_model(adata, depth_normalize=True, edge_scheme=edge_scheme)
    base = model.embed(adata)
    assert base.std(axis=0).max() > 1e-3  # the embedding is not trivially constant
    for factor in (2.0, 0.5):
        np.testing.assert_allclose(model.embed(scaled(adata, factor)), base, atol=1e-4)
    # predictions follow the depth: log1p(factor * expm1(prediction at depth 1))
    mask = np.random.default_rng(0).random(adata.shape) < 0.2
    pred = model.impute(adata, mask)
    doubled = model.impute(scaled(adata, 2.0), mask)
    np.testing.assert_allclose(doubled, np.log1p(2 * np.expm1(pred)), rtol=1e-4, atol=1e-4)


def test_without_depth_normalisation_the_embedding_follows_depth() -> None:
    adata = _counts_slide()
    model = random_model(adata, depth_normalize=False)
    assert not np.allclose(model.embed(scaled(adata, 2.0)), model.embed(adata), atol=1e-2)


@pytest.mark.parametrize("depth_normalize", [True, False])
def test_hidden_genes_do_not_enter_the_size_factor(depth_normalize: bool) -> None:
    """Changing the counts of hidden entries changes nothing: the library is of visible genes."""
    adata = _counts_slide(seed=5)
    model = random_model(adata, depth_normalize=depth_normalize)
    mask = np.random.default_rng(1).random(adata.shape) < 0.3
    changed = adata.copy()
    dense = adata.X.toarray()
    dense[mask] = dense[mask] * 7 + 13  # only hidden entries change (a lot)
    changed.X = sp.csr_matrix(dense)
    before, after = model.impute(adata, mask), model.impute(changed, mask)
    np.testing.assert_allclose(after, before, atol=1e-5)
    # the same change visible does change the prediction (so the check above can fail)
    assert not np.allclose(model.impute(changed, mask * False), model.impute(adata, mask * False))


def test_network_needs_the_library_where_it_cannot_compute_it() -> None:
    network = SageGCN(ModelConfig(n_genes=5, hidden_sizes=(4, 3), depth_normalize=True))
    values = torch.rand(3, 5)
    with pytest.raises(ValueError, match="library"):
        network.reconstruct(torch.zeros(3, 3), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="library"):
        network.neighbour_mean(values[:, :2], torch.ones(3, 2), torch.tensor([[0, 1, 2]]))
    with pytest.raises(ValueError, match="library"):
        network.input_delta(torch.tensor(1), values[0, 1], torch.tensor(1.0), values[0, 1], 1.0)


def test_depth_setting_is_saved_and_old_configs_load_without_it() -> None:
    config = SageFMConfig(model=ModelConfig(depth_normalize=True))
    assert SageFMConfig.from_dict(config.to_dict()).model.depth_normalize
    old = config.to_dict()
    del old["model"]["depth_normalize"]
    assert not SageFMConfig.from_dict(old).model.depth_normalize
    assert not ModelConfig.reference().depth_normalize
    with pytest.raises(ConfigError, match="output_activation"):
        dataclasses.replace(ModelConfig(), depth_normalize=True, output_activation="none")
