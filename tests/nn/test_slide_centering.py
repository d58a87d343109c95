"""`ModelConfig.slide_centering`: each slide's own gene means centre its input and return at the head."""

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from sagefm.config import ModelConfig
from sagefm.data.slides import PreparedSlide
from sagefm.errors import ConfigError
from sagefm.nn.gcn import SageGCN
from sagefm.nn.inputs import slide_input_mean
from sagefm.train.datamodule import slide_mean

N_GENES = 12


def _network(slide_centering: bool, **options) -> SageGCN:
    torch.manual_seed(0)
    config = ModelConfig(
        n_genes=N_GENES,
        hidden_sizes=(16, 8),
        slide_centering=slide_centering,
        output_activation="none",
        **{"spatial_skip": False, **options},
    )
    network = SageGCN(config)
    for p in network.parameters():
        torch.nn.init.normal_(p, std=0.3)
    network.set_input_scaling(torch.rand(N_GENES) * 2, torch.rand(N_GENES) + 0.5)
    return network


def _slide(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """30 spots' shown values and visibility (a fifth hidden, gene 3 in no spot), 10 subgraphs of
    5 nodes and their row-normalised adjacency."""
    g = torch.Generator().manual_seed(seed)
    visible = (torch.rand(30, N_GENES, generator=g) > 0.2).float()
    visible[:, 3] = 0.0
    values = torch.rand(30, N_GENES, generator=g) * 2 * visible
    nodes = torch.randint(0, 30, (10, 5), generator=g)
    adj = torch.softmax(torch.randn(10, 5, 5, generator=g), dim=-1)
    return values, visible, nodes, adj


def _embed_and_predict(
    network: SageGCN, values: torch.Tensor, visible: torch.Tensor, nodes, adj
) -> tuple[torch.Tensor, torch.Tensor]:
    mean = slide_input_mean(values, visible.sum(dim=0), network.config)
    projected = network.project(values, visible, slide_mean=mean)[nodes]
    embedding = network.encode(projected, adj)
    return embedding, network.reconstruct(embedding, slide_mean=mean)


def test_slide_input_mean_averages_the_spots_that_show_each_gene() -> None:
    values = torch.tensor([[1.0, 0.0, 0.0], [3.0, 2.0, 0.0], [0.0, 4.0, 0.0]])
    visible = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    mean = slide_input_mean(values, visible.sum(dim=0), ModelConfig(n_genes=3))
    torch.testing.assert_close(mean[:2], torch.tensor([4.0 / 3.0, 3.0]))
    assert torch.isnan(mean[2])  # no spot shows it
    sparse = slide_input_mean(values.to_sparse_csr(), visible.sum(dim=0), ModelConfig(n_genes=3))
    torch.testing.assert_close(sparse, mean, equal_nan=True)


@pytest.mark.parametrize("slide_library_target", [False, True])
def test_hidden_entries_leave_the_slide_mean_where_training_puts_it(
    slide_library_target: bool,
) -> None:
    """Training takes the slide mean over whole slides. 40 spots with c_i counts of each of 10
    observed genes (so every spot reads log1p(T / 10) at its whole library, T the target or the
    slide's median library) and a random 30% of each spot's entries hidden: each spot's library
    is estimated as its shown one over the share of genes it shows, so the mean is the whole
    slide's, not log1p(T / 7)."""
    rng = np.random.default_rng(0)
    n_spots, observed = 40, np.r_[np.ones(10, bool), False]
    counts = np.outer(rng.integers(1, 50, n_spots), observed.astype(float))
    hidden = np.zeros(counts.shape, bool)
    for row in hidden:
        row[rng.permutation(10)[:3]] = True
    config = ModelConfig(
        n_genes=11,
        depth_normalize=True,
        library_target=100.0,
        slide_centering=True,
        slide_library_target=slide_library_target,
    )

    def mean(mask: np.ndarray | None) -> np.ndarray:
        slide = PreparedSlide(
            name="hand",
            values=sp.csr_matrix(np.log1p(counts).astype(np.float32)),
            observed=observed,
            hidden=None if mask is None else sp.csr_matrix(mask),
            neighbours=np.arange(n_spots)[:, None],
            coords_um=np.zeros((n_spots, 2), np.float32),
            bandwidth_um=1.0,
        )
        return slide_mean(slide, config)

    whole = mean(None)
    # a library of T = 100 counts over 10 genes, or of the median spot's 10 c_i
    target = np.median(counts.sum(axis=1)) if slide_library_target else 100.0
    np.testing.assert_allclose(whole[:10], np.log1p(target / 10), rtol=1e-5)
    np.testing.assert_allclose(mean(hidden), whole, rtol=1e-5)  # NaN for the unobserved gene too
    assert np.isnan(whole[10])


def test_a_per_gene_shift_of_a_whole_slide_leaves_the_embedding_unchanged() -> None:
    """Adding c_g to gene g wherever it is shown, in every spot: the slide's mean moves by c_g,
    the z-scores do not, so the embedding is unchanged and the head's output moves by c_g (a gene
    no spot shows keeps the corpus mean and no shift). Without slide centring the shift reaches
    the embedding."""
    values, visible, nodes, adj = _slide()
    shift = torch.linspace(0.2, 1.5, N_GENES)
    shifted = (values + shift) * visible
    network = _network(slide_centering=True)
    embedding, prediction = _embed_and_predict(network, values, visible, nodes, adj)
    embedding_2, prediction_2 = _embed_and_predict(network, shifted, visible, nodes, adj)
    torch.testing.assert_close(embedding_2, embedding, rtol=1e-5, atol=1e-5)
    expected = shift.clone()
    expected[3] = 0.0
    torch.testing.assert_close(
        prediction_2 - prediction, expected.expand_as(prediction), atol=1e-5, rtol=0
    )

    plain = _network(slide_centering=False)
    plain.load_state_dict(network.state_dict())
    before = _embed_and_predict(plain, values, visible, nodes, adj)[0]
    after = _embed_and_predict(plain, shifted, visible, nodes, adj)[0]
    assert (after - before).abs().max() > 0.05


def test_per_node_means_equal_one_slide_mean_folded_into_the_weights() -> None:
    """The training form (one mean row per node, dense z-scores) equals the inference form (the
    slide's mean folded into the first layer's weights)."""
    values, visible, _, _ = _slide()
    network = _network(slide_centering=True)
    mean = slide_input_mean(values, visible.sum(dim=0), network.config)
    folded = network.project(values, visible, slide_mean=mean)
    per_node = network.project(values, visible, slide_mean=mean.expand(30, -1))
    torch.testing.assert_close(per_node, folded, rtol=1e-5, atol=1e-5)


def test_a_centring_network_needs_the_slide_mean_and_standardised_input() -> None:
    values, visible, _, _ = _slide()
    with pytest.raises(ValueError, match="slide_mean"):
        _network(slide_centering=True).project(values, visible)
    with pytest.raises(ConfigError, match="standardize_input"):
        dataclasses.replace(ModelConfig(), standardize_input=False, slide_centering=True)


@pytest.mark.parametrize("skip_centring", [True, False])
def test_a_unit_skip_path_reproduces_the_neighbour_mean_on_any_slide(skip_centring: bool) -> None:
    """Head weights 0, head bias the corpus mean, skip multiples 1: with a centred skip the
    prediction is the neighbour mean wherever a neighbour shows the gene and the slide's mean
    elsewhere, on a slide far from the corpus mean. Uncentred, the slide's departure from the
    corpus mean was added twice and a gene no neighbour shows read as 0."""
    values, visible, nodes, _ = _slide()
    values = (values + 3.0) * visible  # a slide well above the corpus means (0..2)
    network = _network(True, spatial_skip=True, skip_centring=skip_centring)
    config = network.config
    with torch.no_grad():
        network.head.weight.zero_()
        network.head.bias.copy_(network.input_mean)
        network.skip_weight.fill_(1.0)
    mean = slide_input_mean(values, visible.sum(dim=0), config)
    skip = network.neighbour_mean(values, visible, nodes, slide_mean=mean)
    prediction = network.reconstruct(torch.zeros(10, 8), skip, slide_mean=mean)

    seen = visible[nodes[:, 1:]].sum(dim=1)  # (10, V) neighbours showing each gene
    plain = values[nodes[:, 1:]].sum(dim=1) / seen.clamp(min=1)
    fallback = torch.where(torch.isnan(mean), network.input_mean, mean).expand_as(plain)
    expected = torch.where(seen > 0, plain, fallback)
    if skip_centring:
        torch.testing.assert_close(prediction, expected, rtol=1e-5, atol=1e-5)
    else:
        assert (prediction - expected).abs().max() > 1.0
