"""ModelConfig.panel_skip: the skip path's multiple of a gene varies with the share of the
vocabulary the centre shows, through a piecewise-linear basis in -log(share)."""

import dataclasses
import math

import pytest
import torch

from sagefm.config import ModelConfig
from sagefm.errors import ConfigError
from sagefm.nn.gcn import SageGCN
from sagefm.nn.layers import PANEL_KNOTS, panel_basis, shown_share


def test_panel_basis_is_piecewise_linear_in_minus_log_share() -> None:
    shares = torch.tensor([1.0, math.exp(-0.5), math.exp(-1.5), math.exp(-3.0)])
    expected = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [1.5, 0.5, 0.0], [3.0, 2.0, 1.0]])
    assert len(PANEL_KNOTS) == 3
    torch.testing.assert_close(panel_basis(shares), expected)
    # a spot showing nothing is read at the floor, not at infinity
    assert torch.isfinite(panel_basis(torch.zeros(1))).all()


def test_shown_share_counts_the_visible_genes() -> None:
    visible = torch.tensor([[1.0, 1.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0]])
    torch.testing.assert_close(shown_share(visible), torch.tensor([0.75, 0.25]))


def _network(skip_centring: bool = True) -> SageGCN:
    config = ModelConfig(
        n_genes=3,
        hidden_sizes=(4,),
        output_activation="none",
        skip_centring=skip_centring,
        panel_skip=True,
    )
    network = SageGCN(config)
    with torch.no_grad():
        network.head.weight.zero_()
        network.head.bias.copy_(torch.tensor([1.0, 2.0, 3.0]))
        network.skip_weight.copy_(torch.tensor([0.1, 0.0, -0.2]))
        network.panel_skip_weight.copy_(
            torch.tensor([[0.2, 0.0, 0.1], [0.0, 0.5, 0.0], [0.0, 0.0, 1.0]])
        )
    return network


def test_the_skip_multiple_follows_the_centres_panel_by_hand() -> None:
    network = _network()
    embedding = torch.randn(2, 4)
    neighbour_mean = torch.tensor([[1.0, 1.0, 1.0], [2.0, -1.0, 0.5]])
    shown = torch.tensor([1.0, math.exp(-2.5)])  # every gene; a small panel (u = 2.5)
    got = network.reconstruct(embedding, neighbour_mean, shown=shown)
    # u = 0: the plain multiples; u = 2.5: basis (2.5, 1.5, 0.5) adds 0.5, 0.75, 0.25 + 0.5
    multiple = torch.tensor([[0.1, 0.0, -0.2], [0.6, 0.75, 0.55]])
    expected = torch.tensor([1.0, 2.0, 3.0]) + multiple * neighbour_mean
    torch.testing.assert_close(got, expected)
    # the chosen-genes path gives the same, with shown broadcasting against the genes' index
    genes = torch.tensor([2, 0])
    chosen = network.reconstruct(
        embedding[:, None], neighbour_mean[:, genes], genes=genes, shown=shown[:, None]
    )
    torch.testing.assert_close(chosen, expected[:, genes])


def test_an_uncentred_skip_path_adds_a_centred_panel_term() -> None:
    """Without skip_centring the plain multiple reads the neighbour mean as given and the panel
    term reads ``panel_mean``, the departure from the slide's level."""
    network = _network(skip_centring=False)
    assert network.separate_panel_mean
    embedding = torch.randn(2, 4)
    neighbour_mean = torch.tensor([[1.0, 1.0, 1.0], [2.0, -1.0, 0.5]])
    panel_mean = torch.tensor([[0.5, -0.5, 0.0], [1.0, 0.0, 0.25]])
    shown = torch.tensor([1.0, math.exp(-2.5)])
    got = network.reconstruct(embedding, neighbour_mean, shown=shown, panel_mean=panel_mean)
    plain = torch.tensor([0.1, 0.0, -0.2]) * neighbour_mean
    panel = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.75, 0.75]]) * panel_mean
    torch.testing.assert_close(got, torch.tensor([1.0, 2.0, 3.0]) + plain + panel)
    with pytest.raises(ValueError, match="pass panel_mean"):
        network.reconstruct(embedding, neighbour_mean, shown=shown)


def test_a_panel_skip_needs_the_share_and_a_skip_path() -> None:
    network = _network()
    with pytest.raises(ValueError, match="pass shown"):
        network.reconstruct(torch.randn(2, 4), torch.zeros(2, 3))
    assert ModelConfig(panel_skip=True).panel_skip  # with an uncentred skip path too
    with pytest.raises(ConfigError, match="panel_skip"):
        ModelConfig(panel_skip=True, spatial_skip=False)


def test_a_new_panel_skip_starts_as_the_plain_skip() -> None:
    config = ModelConfig(n_genes=5, hidden_sizes=(4,), panel_skip=True)
    network = SageGCN(config)
    assert network.panel_skip_weight is not None
    assert network.panel_skip_weight.shape == (len(PANEL_KNOTS), 5)
    assert not network.panel_skip_weight.any()
    assert SageGCN(ModelConfig(n_genes=5, hidden_sizes=(4,))).panel_skip_weight is None


def test_a_shared_part_adds_one_curve_to_every_genes_multiple_by_hand() -> None:
    """With panel_skip_shared the (K,) shared weights add to every gene's (K,) own ones."""
    config = dataclasses.replace(_network().config, panel_skip_shared=True)
    network = SageGCN(config)
    network.load_state_dict(_network().state_dict(), strict=False)
    assert network.panel_skip_shared is not None and not network.panel_skip_shared.any()
    with torch.no_grad():
        network.panel_skip_shared.copy_(torch.tensor([0.1, -0.2, 0.4]))
    embedding = torch.randn(2, 4)
    neighbour_mean = torch.tensor([[1.0, 1.0, 1.0], [2.0, -1.0, 0.5]])
    shown = torch.tensor([1.0, math.exp(-2.5)])
    got = network.reconstruct(embedding, neighbour_mean, shown=shown)
    # u = 2.5: basis (2.5, 1.5, 0.5); shared 0.25 - 0.3 + 0.2 = 0.15 on top of each gene's own
    multiple = torch.tensor([[0.1, 0.0, -0.2], [0.75, 0.9, 0.7]])
    torch.testing.assert_close(got, torch.tensor([1.0, 2.0, 3.0]) + multiple * neighbour_mean)
    genes = torch.tensor([1, 1, 0])
    chosen = network.reconstruct(
        embedding[:, None], neighbour_mean[:, genes], genes=genes, shown=shown[:, None]
    )
    torch.testing.assert_close(
        chosen, (torch.tensor([1.0, 2.0, 3.0]) + multiple * neighbour_mean)[:, genes]
    )
    with pytest.raises(ConfigError, match="panel_skip_shared"):
        ModelConfig(panel_skip_shared=True)
