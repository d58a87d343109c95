"""The GraphST-style contrast (`sagefm.nn.contrast`) and its place in the training loss."""

import dataclasses

import pytest
import torch
from tests.train.test_module import _gradients, _plain_loss, _plan, _slides

from sagefm.config import DataConfig, ModelConfig
from sagefm.data.batches import SubgraphCollator
from sagefm.errors import ConfigError
from sagefm.nn import gcn
from sagefm.nn.contrast import Discriminator, contrast_loss, shuffle_within, summary
from sagefm.train.datamodule import slide_means_for


def test_shuffle_within_permutes_inside_each_group_only() -> None:
    torch.manual_seed(0)
    groups = torch.tensor([2, 0, 2, 1, 0, 2, 2, 0, 1, 2])
    moved = 0
    for _ in range(50):
        permutation = shuffle_within(groups)
        assert sorted(permutation.tolist()) == list(range(10))  # a bijection
        assert torch.equal(groups[permutation], groups)  # every row stays in its group
        moved += int((permutation != torch.arange(10)).sum())
    assert moved > 50 * 10 / 2  # not the identity: most rows move
    counts = torch.zeros(10, 10)
    for _ in range(2000):
        counts[torch.arange(10), shuffle_within(groups)] += 1
    # group 2 has 5 rows: each goes to each of them with probability 1/5
    share = counts[0, [0, 2, 5, 6, 9]] / 2000
    assert (share - 0.2).abs().max() < 0.04


def test_summary_and_discriminator_known_answers() -> None:
    nodes = torch.tensor([[[3.0, 0.0], [1.0, 0.0]], [[0.0, 2.0], [0.0, -4.0]]])
    torch.testing.assert_close(summary(nodes), torch.tensor([[2.0, 0.0], [0.0, -1.0]]))
    torch.manual_seed(0)
    disc = Discriminator(2)
    with torch.no_grad():
        disc.weight.weight.copy_(torch.tensor([[1.0, 2.0], [0.0, 1.0]]))
        disc.bias.fill_(0.5)
    real, fake, context = (
        torch.tensor([[1.0, 1.0]]),
        torch.tensor([[2.0, 0.0]]),
        torch.tensor([[1.0, 1.0]]),
    )
    # e^T W s + b with W s = (3, 1): real 3 + 1 + 0.5, corrupted 6 + 0.5
    torch.testing.assert_close(disc(real, fake, context), torch.tensor([[4.5, 6.5]]))
    bilinear = torch.nn.Bilinear(2, 2, 1)
    with torch.no_grad():
        bilinear.weight.copy_(disc.weight.weight.unsqueeze(0))
        bilinear.bias.fill_(0.5)
    torch.testing.assert_close(disc(real, fake, context)[:, :1], bilinear(real, context))
    torch.testing.assert_close(contrast_loss(torch.zeros(4, 2)), torch.log(torch.tensor(2.0)))
    assert contrast_loss(torch.tensor([[20.0, -20.0]])) < 1e-8


@pytest.mark.parametrize(
    "model",
    [
        ModelConfig(contrastive_loss_weight=0.5),
        ModelConfig(
            contrastive_loss_weight=0.5,
            embedding_loss_weight=1.0,
            depth_normalize=True,
            slide_centering=True,
            library_target=100.0,
        ),
    ],
    ids=["default", "transfer"],
)
def test_contrast_term_is_dgi_on_the_embedding_layer(model: ModelConfig, monkeypatch) -> None:
    """The training loss adds ``contrastive_loss_weight`` × the BCE of the discriminator on the
    centre's first-layer embedding and on that of the subgraph whose node rows were permuted
    (here by a known permutation), both against the real subgraph's summary."""
    slides, n_genes = _slides()
    plan = _plan(model, n_genes)
    net = plan.network
    collate = SubgraphCollator(
        slides,
        net.config,
        **DataConfig().masking(),
        seed=3,
        slide_means=slide_means_for(net.config),
    )
    batch = collate([(s, p, 0) for s in range(3) for p in range(0, 40, 5)])
    n_rows = batch.node_values.shape[0]
    permutation = torch.roll(torch.arange(n_rows), 7)
    monkeypatch.setattr(gcn, "shuffle_within", lambda groups: permutation)
    rows = net.project(batch.node_values, batch.node_visible, slide_mean=batch.row_slide_mean)
    first = net.gcn_layers[0]

    def layer0(node_rows: torch.Tensor) -> torch.Tensor:
        return net.act(first.propagate(batch.adj, rows[node_rows]))

    real, fake = layer0(batch.node_rows), layer0(permutation[batch.node_rows])
    logits = net.discriminator(real[:, 0], fake[:, 0], summary(real))
    terms = plan.loss_terms(batch)
    torch.testing.assert_close(terms["contrast"], contrast_loss(logits), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms["masked_mse"], _plain_loss(plan, batch), rtol=1e-5, atol=1e-6)
    expected = terms["masked_mse"] + 0.5 * terms["contrast"] + terms.get("embedding", 0.0)
    torch.testing.assert_close(plan.loss(batch), expected)
    assert "contrast" not in plan.loss_terms(batch, auxiliary=False)
    grads = _gradients(plan, 0.5 * plan.loss_terms(batch)["contrast"])
    assert grads["network.layers.0.linear.weight"].abs().max() > 1e-6
    assert grads["network.discriminator.weight.weight"].abs().max() > 1e-6
    assert "network.layers.1.linear.weight" not in grads  # after the embedding layer


def test_contrast_needs_weighted_edges_and_an_early_embedding_layer() -> None:
    with pytest.raises(ConfigError, match="contrastive_loss_weight"):
        ModelConfig(contrastive_loss_weight=-1.0)
    with pytest.raises(ConfigError, match="weighted edges"):
        dataclasses.replace(ModelConfig.reference(), contrastive_loss_weight=0.1)
    with pytest.raises(ConfigError, match="before the last"):
        ModelConfig(contrastive_loss_weight=0.1, embedding_layer=-1)
    assert gcn.SageGCN(ModelConfig(n_genes=4, hidden_sizes=(8, 4))).discriminator is None
    net = gcn.SageGCN(ModelConfig(n_genes=4, hidden_sizes=(8, 4), contrastive_loss_weight=0.1))
    assert net.discriminator is not None


def test_pretraining_with_the_contrast_logs_it_and_saves_a_loadable_model(tmp_path) -> None:
    """Through the Trainer under bf16 autocast: the contrast's epoch means are logged and finite,
    and the saved model (with its discriminator) loads and embeds."""
    import numpy as np
    import pandas as pd

    from sagefm.config import SageFMConfig, TrainConfig
    from sagefm.datasets import synthetic_tissue
    from sagefm.model import SageFM
    from sagefm.train.pretrain import pretrain

    slides = synthetic_tissue(n_slides=2, grid_rows=6, grid_cols=6, n_genes=40, seed=3)
    config = SageFMConfig(
        model=ModelConfig(hidden_sizes=(16, 8, 8), contrastive_loss_weight=1.0),
        train=TrainConfig(max_epochs=2, batch_size=16, accelerator="cpu", precision="bf16-mixed"),
    )
    pretrain(slides[:1], val_slides=slides[1:], output=tmp_path, config=config, progress=False)
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    per_epoch = metrics["train_contrast_epoch"].dropna().to_numpy()
    assert per_epoch.size == 2 and np.isfinite(per_epoch).all() and (per_epoch > 0).all()
    model = SageFM.load(tmp_path / "best")
    assert model.network.discriminator is not None
    embedding = model.embed(slides[1])
    assert embedding.shape == (slides[1].n_obs, 16) and np.isfinite(embedding).all()


def test_without_row_groups_the_contrast_permutes_the_real_rows_only(monkeypatch) -> None:
    """Under bf16 autocast the first layer's rows are padded with zero rows; a batch without row
    groups must still be corrupted with real rows only (one group of the R rows)."""
    slides, n_genes = _slides()
    plan = _plan(ModelConfig(contrastive_loss_weight=1.0), n_genes)
    collate = SubgraphCollator(slides, plan.network.config, **DataConfig().masking(), seed=3)
    batch = collate([(s, p, 0) for s in range(3) for p in range(0, 40, 5)])
    seen: list[torch.Tensor] = []

    def recorded(groups: torch.Tensor) -> torch.Tensor:
        seen.append(groups)
        return shuffle_within(groups)

    monkeypatch.setattr(gcn, "shuffle_within", recorded)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = plan.network.predict_rows(
            batch.node_values, batch.node_visible, batch.node_rows, batch.adj
        )
    n_rows = batch.node_values.shape[0]
    assert n_rows % 64 != 0  # so that padding happens
    assert len(seen) == 1 and seen[0].shape == (n_rows,) and not seen[0].any()
    assert out.contrast is not None and torch.isfinite(out.contrast).all()
