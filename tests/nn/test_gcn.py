"""The dense GCN equals PyG's GCNConv, and the complete-graph shortcut equals the full computation."""

import dataclasses

import numpy as np
import pytest
import torch

from sagefm.config import ModelConfig
from sagefm.data.neighbourhood import subgraph_adjacency
from sagefm.errors import ConfigError
from sagefm.nn.gcn import DenseGCNLayer, SageGCN

torch_geometric = pytest.importorskip("torch_geometric")
from torch_geometric.nn import GCNConv  # noqa: E402


def _subgraph_coords(seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.tensor(rng.uniform(0, 400, size=(15, 2)), dtype=torch.float32)


@pytest.mark.parametrize("scheme", ["weighted", "complete"])
def test_dense_layer_equals_gcnconv(scheme: str) -> None:
    torch.manual_seed(0)
    coords = _subgraph_coords()
    x = torch.randn(15, 8)
    layer = DenseGCNLayer(8, 5)
    torch.nn.init.normal_(layer.bias)
    adj = subgraph_adjacency(coords[None], scheme=scheme, bandwidth_um=100.0)  # type: ignore[arg-type]

    # PyG: every ordered pair of distinct nodes is an edge; GCNConv adds unit self-loops itself.
    src, dst = torch.meshgrid(torch.arange(15), torch.arange(15), indexing="ij")
    off = src != dst
    edge_index = torch.stack([src[off], dst[off]])
    if scheme == "weighted":
        d2 = (coords[edge_index[0]] - coords[edge_index[1]]).square().sum(-1)
        weight = torch.exp(-d2 / (2 * 100.0**2))
    else:
        weight = torch.ones(edge_index.shape[1])
    conv = GCNConv(8, 5, add_self_loops=True, normalize=True)
    with torch.no_grad():
        conv.lin.weight.copy_(layer.linear.weight)
        conv.bias.copy_(layer.bias)
    expected = conv(x, edge_index, weight)
    got = layer(x[None], adj)[0]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_complete_graph_shortcut_matches_explicit_adjacency() -> None:
    torch.manual_seed(1)
    config = ModelConfig(n_genes=12, hidden_sizes=(16, 8, 8), edge_scheme="complete")
    net = SageGCN(config)
    projected = torch.randn(4, 15, 16)
    explicit = subgraph_adjacency(torch.zeros(4, 15, 2), scheme="complete", bandwidth_um=1.0)
    torch.testing.assert_close(
        net.encode(projected, None), net.encode(projected, explicit), atol=1e-5, rtol=1e-5
    )


def test_reference_preset_has_no_indicator_and_complete_edges() -> None:
    ref = ModelConfig.reference(n_genes=10)
    assert ref.edge_scheme == "complete" and not ref.mask_indicator
    assert ref.hidden_sizes == (1024, 512, 512, 512, 1024)
    net = SageGCN(ref)
    assert net.layers[0].linear.in_features == 10
    assert SageGCN(dataclasses.replace(ref, mask_indicator=True)).layers[0].linear.in_features == 20


def test_hidden_values_do_not_reach_the_prediction() -> None:
    """Changing the true value of a hidden gene must not change anything the model outputs."""
    torch.manual_seed(2)
    net = SageGCN(ModelConfig(n_genes=6, hidden_sizes=(8, 8)))
    values = torch.rand(15, 6)
    visible = torch.ones(15, 6)
    node_index = torch.arange(15)[None]
    centre_visible = torch.tensor([[1.0, 0.0, 1.0, 0.0, 1.0, 1.0]])
    adj = subgraph_adjacency(_subgraph_coords()[None], scheme="weighted", bandwidth_um=100.0)
    out1, _ = net(values, visible, node_index, values[:1] * centre_visible, centre_visible, adj)
    changed = values[:1].clone()
    changed[0, 1] += 5.0
    out2, _ = net(values, visible, node_index, changed * centre_visible, centre_visible, adj)
    torch.testing.assert_close(out1, out2)
    # ... while a visible gene does change it
    changed[0, 0] += 5.0
    out3, _ = net(values, visible, node_index, changed * centre_visible, centre_visible, adj)
    assert not torch.allclose(out1, out3)


def test_complete_forward_shortcut_equals_full_propagation() -> None:
    """forward(adj=None) projects the mean input; it must equal propagating every node explicitly."""
    torch.manual_seed(3)
    net = SageGCN(ModelConfig(n_genes=6, hidden_sizes=(8, 8, 4), edge_scheme="complete"))
    values, visible = torch.rand(20, 6), (torch.rand(20, 6) > 0.2).float()
    node_index = torch.stack([torch.randperm(20)[:15] for _ in range(3)])
    centre_visible = visible[node_index[:, 0]] * (torch.rand(3, 6) > 0.3).float()
    centre_values = values[node_index[:, 0]] * centre_visible
    explicit = subgraph_adjacency(torch.zeros(3, 15, 2), scheme="complete", bandwidth_um=1.0)
    fast, emb_fast = net(values * visible, visible, node_index, centre_values, centre_visible, None)
    slow, emb_slow = net(
        values * visible, visible, node_index, centre_values, centre_visible, explicit
    )
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(emb_fast, emb_slow, atol=1e-5, rtol=1e-5)


def test_neighbour_mean_skip_averages_visible_neighbours_only() -> None:
    values = torch.tensor([[9.0, 9.0], [1.0, 2.0], [3.0, 0.0], [5.0, 4.0]])
    visible = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    node_index = torch.tensor([[0, 1, 2, 3]])  # node 0 (the centre) is never part of the mean
    network = SageGCN(ModelConfig(n_genes=2, hidden_sizes=(4,)))
    got = network.neighbour_mean(values * visible, visible, node_index)
    torch.testing.assert_close(got, torch.tensor([[3.0, 3.0]]))


def test_centred_skip_reads_the_departure_from_the_input_mean_and_0_without_neighbours() -> None:
    """Gene 1 is shown at the centre only: uncentred it read as expression 0 (below any mean),
    centred it reads 0 departure, as a gene no neighbour shows should."""
    values = torch.tensor([[9.0, 9.0], [1.0, 2.0], [3.0, 6.0], [5.0, 4.0]])
    visible = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    node_index = torch.tensor([[0, 1, 2, 3]])
    config = ModelConfig(n_genes=2, hidden_sizes=(4,), skip_centring=True)
    network = SageGCN(config)
    network.set_input_scaling(torch.tensor([2.0, 5.0]), torch.ones(2))
    got = network.neighbour_mean(values * visible, visible, node_index)
    torch.testing.assert_close(got, torch.tensor([[3.0 - 2.0, 0.0]]))
    one_gene = network.neighbour_mean(
        (values * visible)[:, 1:], visible[:, 1:], node_index, genes=torch.tensor([1])
    )
    torch.testing.assert_close(one_gene, got[:, 1:])
    uncentred = SageGCN(dataclasses.replace(config, skip_centring=False))
    uncentred.set_input_scaling(torch.tensor([2.0, 5.0]), torch.ones(2))
    got = uncentred.neighbour_mean(values * visible, visible, node_index)
    torch.testing.assert_close(got, torch.tensor([[3.0, 0.0]]))


def test_skip_path_starts_at_zero_and_reference_has_none() -> None:
    net = SageGCN(ModelConfig(n_genes=4, hidden_sizes=(8, 8)))
    assert net.skip_weight is not None and not net.skip_weight.any()
    assert SageGCN(ModelConfig.reference(n_genes=4)).skip_weight is None
    with pytest.raises(ValueError, match="neighbour_mean"):
        net.reconstruct(torch.zeros(1, 8))


@pytest.mark.parametrize("indicator", [True, False])
def test_standardised_input_is_folded_into_the_first_layer(indicator: bool) -> None:
    """project() on raw values equals the first layer applied to explicit z-scores."""
    torch.manual_seed(0)
    config = ModelConfig(n_genes=6, hidden_sizes=(5, 3), mask_indicator=indicator)
    network = SageGCN(config)
    mean, scale = torch.rand(6) * 3, torch.rand(6) + 0.5
    network.set_input_scaling(mean, scale)
    values = torch.rand(4, 6) * 4
    visible = (torch.rand(4, 6) > 0.3).float()
    z = (values - mean) / scale * visible  # hidden genes read as the mean: z = 0
    explicit = network.gcn_layers[0].linear(torch.cat([z, visible], 1) if indicator else z)
    torch.testing.assert_close(network.project(values * visible, visible), explicit)
    sparse = torch.tensor((values * visible).numpy()).to_sparse_csr()
    hidden = torch.tensor((1 - visible).numpy()).to_sparse_csr()
    torch.testing.assert_close(
        network.project(sparse, observed=torch.ones(6), hidden=hidden),
        explicit,
        rtol=1e-5,
        atol=1e-5,
    )
    with pytest.raises(ValueError, match="positive"):
        network.set_input_scaling(mean, torch.zeros(6))
    # the state (saved with the weights) carries the scaling; the reference preset has none
    assert torch.equal(network.state_dict()["input_scale"], scale)
    assert "input_scale" not in SageGCN(ModelConfig.reference(n_genes=6)).state_dict()


@pytest.mark.parametrize("indicator", [True, False])
def test_input_delta_equals_projecting_the_changed_input(indicator: bool) -> None:
    torch.manual_seed(4)
    network = SageGCN(ModelConfig(n_genes=6, hidden_sizes=(5, 3), mask_indicator=indicator))
    network.set_input_scaling(torch.rand(6) * 3, torch.rand(6) + 0.5)
    visible = (torch.rand(4, 6) > 0.3).float()
    values = torch.rand(4, 6) * visible
    genes = torch.tensor([2, 2, 5, 0])  # one changed gene per node
    new_values, new_visible = torch.tensor([1.5, 0.0, 3.0, 0.0]), torch.tensor([1.0, 0, 1, 0])
    changed_values, changed_visible = values.clone(), visible.clone()
    rows = torch.arange(4)
    changed_values[rows, genes], changed_visible[rows, genes] = new_values, new_visible
    delta = network.input_delta(
        genes, values[rows, genes], visible[rows, genes], new_values, new_visible
    )
    expected = network.project(changed_values, changed_visible) - network.project(values, visible)
    torch.testing.assert_close(delta, expected, atol=1e-5, rtol=1e-5)


def test_reconstruct_for_chosen_genes_equals_the_full_head() -> None:
    torch.manual_seed(5)
    network = SageGCN(ModelConfig(n_genes=6, hidden_sizes=(5, 3)))
    for p in network.parameters():
        torch.nn.init.normal_(p)
    embedding, mean = torch.randn(4, 3), torch.rand(4, 6)
    full = network.reconstruct(embedding, mean)  # (4, 6)
    genes = torch.tensor([5, 0, 3])
    chosen = network.reconstruct(embedding[:, None], mean[:, genes], genes=genes)  # (4, 3)
    torch.testing.assert_close(chosen, full[:, genes])
    one_per_row = network.reconstruct(embedding, mean[:, 2], genes=torch.tensor(2))  # (4,)
    torch.testing.assert_close(one_per_row, full[:, 2])


@pytest.mark.parametrize("scheme", ["weighted", "complete"])
def test_encode_reads_any_layer_as_full_propagation_would(scheme: str) -> None:
    """encode(layer=k) stops after layer k and returns its centre row; it must equal propagating
    every node through layers 0..k (the activation after each) and reading row 0."""
    torch.manual_seed(4)
    net = SageGCN(ModelConfig(n_genes=6, hidden_sizes=(8, 5, 7), edge_scheme=scheme)).eval()
    adj = subgraph_adjacency(torch.rand(3, 15, 2) * 300, scheme=scheme, bandwidth_um=100.0)
    projected = torch.randn(3, 15, 8)
    h, expected = projected, []
    for i, layer in enumerate(net.gcn_layers):
        h = net.act(layer.propagate(adj, layer.linear(h) if i > 0 else h))
        expected.append(h[:, 0, :])
    for k in range(3):
        for index in (k, k - 3):
            got = net.encode(projected, adj, layer=index)
            assert got.shape == (3, net.config.hidden_sizes[k])
            torch.testing.assert_close(got, expected[k], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(net.encode(projected, adj), expected[-1], atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="GCN layer must be in"):
        net.encode(projected, adj, layer=3)


def test_dropout_acts_between_layers_in_training_only() -> None:
    """ModelConfig.dropout drops units of a layer's output on their way into the next layer, in
    training mode only: the layer read as the embedding is returned whole, the layers after it see
    the dropped units, and in eval mode (every `SageFM` use) nothing is dropped."""
    torch.manual_seed(5)
    config = ModelConfig(n_genes=6, hidden_sizes=(8, 8, 4), dropout=0.5)
    net = SageGCN(config)
    adj = subgraph_adjacency(torch.rand(3, 15, 2) * 300, scheme="weighted", bandwidth_um=100.0)
    projected = torch.randn(3, 15, 8)
    net.eval()
    first, last = net.encode(projected, adj, layer=0), net.encode(projected, adj)
    torch.testing.assert_close(net.encode(projected, adj), last)
    net.train()
    torch.testing.assert_close(net.encode(projected, adj, layer=0), first)
    dropped = [net.encode(projected, adj) for _ in range(2)]
    assert not torch.allclose(dropped[0], last) and not torch.allclose(dropped[0], dropped[1])
    without = SageGCN(dataclasses.replace(config, dropout=0.0))
    without.load_state_dict(net.state_dict())
    torch.testing.assert_close(without.train().encode(projected, adj), last)


def test_centre_residual_adds_the_gated_own_first_layer_activation() -> None:
    """The last layer gains gate * act(centre's projection + first bias), and nothing else moves."""
    torch.manual_seed(5)
    config = ModelConfig(n_genes=6, hidden_sizes=(8, 4, 8), centre_residual=True)
    net = SageGCN(config).eval()
    assert net.centre_gate is not None and (net.centre_gate == 0).all()  # starts as the plain GCN
    projected = torch.randn(3, 15, 8)
    adj = subgraph_adjacency(
        _subgraph_coords().expand(3, 15, 2), scheme="weighted", bandwidth_um=100.0
    )
    plain = net.encode(projected, adj)
    first_layer = net.encode(projected, adj, layer=0)
    with torch.no_grad():
        net.centre_gate.normal_()
    own = torch.nn.functional.leaky_relu(projected[:, 0] + net.gcn_layers[0].bias, 0.01)
    torch.testing.assert_close(net.encode(projected, adj), plain + net.centre_gate * own)
    torch.testing.assert_close(net.encode(projected, adj, layer=0), first_layer)  # earlier layers
    with pytest.raises(ConfigError, match="centre_residual"):
        ModelConfig(hidden_sizes=(8, 4, 6), centre_residual=True)
    with pytest.raises(ConfigError, match="centre_residual"):
        ModelConfig(edge_scheme="complete", centre_residual=True)
