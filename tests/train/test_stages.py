"""The panel stage (`SageFM.learn_panels`) and frozen parameters (`TrainConfig.trainable`) on
small synthetic tissue: only the panel term moves, so the embedding stays the model's."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

import sagefm
from sagefm.config import (
    DECODER_STAGE_LEARNING_RATE,
    PANEL_STAGE_LEARNING_RATE,
    ModelConfig,
    SageFMConfig,
    TrainConfig,
)
from sagefm.datasets import synthetic_tissue
from sagefm.errors import CheckpointError, ConfigError
from sagefm.nn.gcn import SageGCN
from sagefm.train.module import freeze_except
from sagefm.train.stages import (
    PANEL_PARAMETERS,
    PANEL_TERM,
    continued_training,
    decoder_stage,
    panel_stage,
)

SMALL = ModelConfig(hidden_sizes=(32, 16, 16, 16, 32), n_genes=120)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[sagefm.SageFM, list]:
    slides = synthetic_tissue(n_slides=3, grid_rows=12, grid_cols=12, n_genes=120, seed=1)
    config = SageFMConfig(
        model=ModelConfig(hidden_sizes=SMALL.hidden_sizes),
        train=TrainConfig(max_epochs=1, batch_size=32, seed=1),
    )
    model, _ = sagefm.SageFM.pretrain(
        slides[:2],
        val_slides=slides[2:],
        output=tmp_path_factory.mktemp("run"),
        config=config,
        progress=False,
    )
    return model, slides


def _trained_at(model: sagefm.SageFM, learning_rate: float) -> sagefm.SageFM:
    """``model`` as if it had been trained at ``learning_rate`` (a stage's output saves its own)."""
    train = dataclasses.replace(model.config.train, learning_rate=learning_rate)
    return sagefm.SageFM(
        model.network, dataclasses.replace(model.config, train=train), model.vocabulary
    )


def test_the_panel_stage_trains_the_panel_term_alone(trained, tmp_path: Path) -> None:
    model, slides = trained
    model = _trained_at(model, 3e-4)  # the stage trains at its own rate, not the model's
    before = {k: v.clone() for k, v in model.network.state_dict().items()}
    embedding = model.embed(slides[2].copy())
    panel = slides[2][:, : slides[2].n_vars // 10].copy()  # a tenth of the genes: a panel
    prediction = model.impute(panel.copy(), layer_added=None)

    staged, result = model.learn_panels(
        slides[:2],
        val_slides=slides[2:],
        output=tmp_path,
        max_epochs=1,
        panel_fraction=0.5,
        progress=False,
    )
    assert result.epochs_run == 1 and (tmp_path / "best" / "config.json").is_file()
    assert staged.config.model.panel_skip and staged.config.model.panel_skip_shared
    assert not model.config.model.panel_skip
    assert staged.config.train.trainable == ("panel_skip_shared",)
    assert staged.config.train.learning_rate == PANEL_STAGE_LEARNING_RATE != 3e-4
    assert staged.config.data.panel_batch_fraction == 0.5
    assert not staged.config.data.panel_batches_train_gcn
    after = staged.network.state_dict()
    assert set(after) == set(before) | PANEL_PARAMETERS
    for key, value in before.items():  # every weight and buffer as the model had it
        torch.testing.assert_close(after[key], value, rtol=0, atol=0)
    assert not after["panel_skip_weight"].any()  # the per-gene part stays at 0 ...
    assert after[PANEL_TERM].abs().max() > 0  # ... the shared curve started at 0, trained
    np.testing.assert_array_equal(staged.embed(slides[2].copy()), embedding)
    assert not np.allclose(staged.impute(panel.copy(), layer_added=None), prediction)
    # adapting the staged model trains every parameter again, not the stage's one
    adapted, _ = staged.adapt(slides[2], output=tmp_path / "adapted", max_epochs=1, progress=False)
    assert adapted.config.train.trainable == ()
    assert not torch.equal(adapted.network.state_dict()["head.weight"], after["head.weight"])


def test_the_panel_stage_continues_a_model_that_has_the_term(trained) -> None:
    """A model with a panel term keeps its trained values as the stage's start."""
    model, _ = trained
    config, network = panel_stage(model.config, model.network, model.config.train, 0.25)
    with torch.no_grad():
        network.panel_skip_weight.fill_(0.5)
        network.panel_skip_shared.fill_(0.25)
    _, again = panel_stage(config, network, config.train, 0.25)
    torch.testing.assert_close(again.state_dict(), network.state_dict())


def test_the_panel_stage_needs_a_skip_path_and_panel_batches() -> None:
    config = SageFMConfig(model=ModelConfig(hidden_sizes=(8, 8), n_genes=5, spatial_skip=False))
    with pytest.raises(ConfigError, match="skip path"):
        panel_stage(config, SageGCN(config.model), config.train, 0.25)
    trained = SageFMConfig(model=dataclasses.replace(config.model, spatial_skip=True))
    with pytest.raises(ConfigError, match="panel batches"):
        panel_stage(trained, SageGCN(trained.model), trained.train, 0.0)


def test_a_stage_refuses_weights_of_another_architecture(trained) -> None:
    """The starting weights must fit the model's configuration, but for what a stage adds."""
    model, _ = trained
    gated = SageGCN(dataclasses.replace(model.config.model, centre_residual=True))
    with pytest.raises(CheckpointError, match="cannot add the panel term"):
        panel_stage(model.config, gated, model.config.train, 0.25)
    paneled = SageGCN(dataclasses.replace(model.config.model, panel_skip=True))
    with pytest.raises(CheckpointError, match="cannot add the centre residual"):
        decoder_stage(model.config, paneled, model.config.train)


def test_continued_training_keeps_the_models_rate_unless_given(trained) -> None:
    model, _ = trained
    train = continued_training(model.config, 3, None, 7)
    assert (train.max_epochs, train.seed) == (3, 7)
    assert train.learning_rate == model.config.train.learning_rate
    assert continued_training(model.config, 3, 1e-4, 7).learning_rate == 1e-4


def test_freezing_leaves_only_the_named_parameters_trainable() -> None:
    network = SageGCN(SMALL)
    freeze_except(network, ["skip_weight", "head.bias"])
    trained = sorted(n for n, p in network.named_parameters() if p.requires_grad)
    assert trained == ["head.bias", "skip_weight"]
    with pytest.raises(ConfigError, match="no parameter"):
        freeze_except(network, ["skip_weight", "layers.9.weight"])


def test_trainable_parameters_round_trip_through_the_saved_configuration(tmp_path: Path) -> None:
    config = SageFMConfig(train=TrainConfig(trainable=(PANEL_TERM, "head.bias")))
    config.save(tmp_path / "config.json")
    assert SageFMConfig.load(tmp_path / "config.json") == config
    with pytest.raises(ConfigError):
        TrainConfig(trainable=("",))


def test_the_decoder_stage_trains_only_what_lies_past_the_embedding(trained, tmp_path) -> None:
    """Layers up to the embedding layer (0 here), the input scaling and the embedding stay;
    the centre residual is added and trained with the later layers, head and skip path."""
    model, slides = trained
    model = _trained_at(model, 3e-4)
    before = {k: v.clone() for k, v in model.network.state_dict().items()}
    embedding = model.embed(slides[2].copy())
    assert model.embedding_layer() == 0
    decoded, _ = model.learn_decoder(
        slides[:2], val_slides=slides[2:], output=tmp_path, max_epochs=1, progress=False
    )
    assert decoded.config.train.learning_rate == DECODER_STAGE_LEARNING_RATE != 3e-4
    assert decoded.config.model.centre_residual and decoded.config.data.panel_batch_fraction == 0
    after = decoded.network.state_dict()
    assert set(after) == set(before) | {"centre_gate"}
    frozen = [k for k in before if not k.startswith(("layers.1.", "layers.2.", "layers.3."))]
    frozen = [k for k in frozen if not k.startswith(("layers.4.", "head.", "skip_weight"))]
    assert "layers.0.linear.weight" in frozen and "input_mean" in frozen
    for key in frozen:
        torch.testing.assert_close(after[key], before[key], rtol=0, atol=0)
    for key in ("layers.4.linear.weight", "head.weight", "skip_weight", "centre_gate"):
        assert not torch.equal(after[key], before.get(key, torch.zeros_like(after[key]))), key
    np.testing.assert_array_equal(decoded.embed(slides[2].copy()), embedding)
    config, _ = decoder_stage(
        model.config, model.network, model.config.train, centre_residual=False
    )
    assert not config.model.centre_residual and "centre_gate" not in config.train.trainable
