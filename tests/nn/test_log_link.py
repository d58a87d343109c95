"""``output_activation="softplus"``: the head predicts a log rate, so depth and slide shifts
multiply the predicted counts (`sagefm.nn.layers.inverse_output_activation`)."""

import dataclasses
import math

import torch

from sagefm.config import ModelConfig
from sagefm.nn.gcn import SageGCN
from sagefm.nn.layers import inverse_output_activation


def _zero_head(n_genes: int, **options) -> SageGCN:
    """A network whose head ignores the embedding: it predicts its bias (plus any slide shift)."""
    config = ModelConfig(
        n_genes=n_genes,
        hidden_sizes=(8, 4),
        output_activation="softplus",
        spatial_skip=False,
        **options,
    )
    network = SageGCN(config)
    with torch.no_grad():
        network.head.weight.zero_()
    return network


def test_the_inverse_of_softplus_by_hand() -> None:
    config = ModelConfig(output_activation="softplus")
    value = torch.tensor([0.0, 1e-6, 0.5, 3.0])
    expected = torch.tensor(
        [
            math.log(math.expm1(1e-4)),
            math.log(math.expm1(1e-4)),
            math.log(math.expm1(0.5)),
            math.log(math.expm1(3.0)),
        ]
    )
    torch.testing.assert_close(inverse_output_activation(config, value), expected)
    torch.testing.assert_close(torch.nn.functional.softplus(expected[2:]), value[2:])
    relu = ModelConfig(output_activation="relu")
    torch.testing.assert_close(inverse_output_activation(relu, value), value)


def test_an_untrained_softplus_head_predicts_the_gene_means() -> None:
    mean = torch.tensor([0.2, 1.0, 2.5])
    network = _zero_head(3)
    network.start_at_gene_means(mean)
    prediction = network.reconstruct(torch.randn(5, 4))
    torch.testing.assert_close(prediction, mean.expand(5, 3))


def test_depth_multiplies_the_predicted_rate() -> None:
    """With depth normalisation the head's log rate z gives expm1(prediction) = exp(z) · L / T:
    a spot ten times deeper is predicted ten times the counts of every gene, however small."""
    network = _zero_head(3, depth_normalize=True, library_target=100.0)
    bias = torch.tensor([-6.0, 0.0, 2.0])
    with torch.no_grad():
        network.head.bias.copy_(bias)
    library = torch.tensor([100.0, 1000.0])
    prediction = network.reconstruct(torch.randn(2, 4), library=library)
    counts = torch.expm1(prediction)
    torch.testing.assert_close(counts[0], torch.exp(bias), rtol=1e-5, atol=0)
    torch.testing.assert_close(counts[1], 10 * torch.exp(bias), rtol=1e-5, atol=0)


def test_a_slides_shift_multiplies_the_rate_and_starts_at_its_means() -> None:
    """With slide centring a zero-weight head at the corpus means predicts each slide's own
    means (the shift is a log ratio of rates), genes the slide does not show at the corpus's."""
    corpus = torch.tensor([0.5, 1.0, 2.0])
    slide = torch.tensor([0.05, 1.5, float("nan")])
    network = _zero_head(3, slide_centering=True, standardize_input=True)
    network.set_input_scaling(corpus, torch.ones(3))
    network.start_at_gene_means(corpus)
    prediction = network.reconstruct(torch.randn(4, 4), slide_mean=slide)
    torch.testing.assert_close(prediction, torch.tensor([0.05, 1.5, 2.0]).expand(4, 3))
    shift = network.output_shift(slide)
    rate_ratio = torch.expm1(torch.tensor([0.05, 1.5])) / torch.expm1(corpus[:2])
    torch.testing.assert_close(shift[:2], torch.log(rate_ratio))
    relu = dataclasses.replace(network.config, output_activation="relu")
    relu_network = SageGCN(relu)
    relu_network.set_input_scaling(corpus, torch.ones(3))
    torch.testing.assert_close(relu_network.output_shift(slide), torch.tensor([-0.45, 0.5, 0.0]))
