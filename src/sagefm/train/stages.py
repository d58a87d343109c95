"""Runs that continue from a trained network: adaptation to a user's own slides
(`SageFM.adapt`), the panel stage (`SageFM.learn_panels`) and the decoder stage
(`SageFM.learn_decoder`). Each gives the configuration and starting network that `pretrain`
(``start_from``) then trains."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

from sagefm.config import ModelConfig, SageFMConfig, TrainConfig
from sagefm.errors import CheckpointError, ConfigError
from sagefm.nn.gcn import SageGCN
from sagefm.train.precision import AUTO

#: the parameter the panel stage trains alone: the panel term's curve shared by every gene
#: (`SageGCN.panel_skip_shared`, 3 numbers). Training the per-gene weights as well
#: (`panel_skip_weight`) recovered tuning slides cut to a panel no better (README, "A second
#: stage for panels").
PANEL_TERM = "panel_skip_shared"
#: the parameters the panel term adds to a network without one
PANEL_PARAMETERS = frozenset({"panel_skip_weight", PANEL_TERM})


def continued_training(
    config: SageFMConfig, max_epochs: int, learning_rate: float | None, seed: int
) -> TrainConfig:
    """A trained model's training settings for a run that continues from it; ``learning_rate``
    defaults to the model's own. Every parameter is trained again (a model from the panel stage
    saved the stage's `TrainConfig.trainable`)."""
    return dataclasses.replace(
        config.train,
        max_epochs=max_epochs,
        seed=seed,
        trainable=(),
        precision=AUTO,  # this machine's choice, not the one the model was pretrained on
        learning_rate=config.train.learning_rate if learning_rate is None else learning_rate,
    )


def panel_stage(
    config: SageFMConfig, network: SageGCN, train: TrainConfig, panel_fraction: float
) -> tuple[SageFMConfig, SageGCN]:
    """The configuration and starting network of the panel stage: ``network`` with the panel
    term of its skip path added (`ModelConfig.panel_skip` and ``panel_skip_shared``; at 0, or
    as trained where it has them), ``panel_fraction`` of the batches shown a random panel that
    trains no GCN weight, and every parameter but the shared curve (`PANEL_TERM`) frozen
    (`TrainConfig.trainable`)."""
    if not config.model.spatial_skip:
        raise ConfigError("the panel stage needs a model with a skip path (spatial_skip)")
    if not 0.0 < panel_fraction <= 1.0:
        raise ConfigError(f"the panel stage needs panel batches: panel_fraction {panel_fraction}")
    model = dataclasses.replace(config.model, panel_skip=True, panel_skip_shared=True)
    start = _extended(network, model, PANEL_PARAMETERS, "the panel term")
    data = dataclasses.replace(
        config.data, panel_batch_fraction=panel_fraction, panel_batches_train_gcn=False
    )
    train = dataclasses.replace(train, trainable=(PANEL_TERM,))
    return dataclasses.replace(config, model=model, data=data, train=train), start


#: what the decoder stage trains besides the GCN layers past the embedding layer
DECODER_PARTS = ("head", "centre_gate", "skip_weight")


def decoder_stage(
    config: SageFMConfig, network: SageGCN, train: TrainConfig, *, centre_residual: bool = True
) -> tuple[SageFMConfig, SageGCN]:
    """The configuration and starting network of the decoder stage: ``network`` (with
    `ModelConfig.centre_residual` added, its gate at 0, if ``centre_residual``), every parameter
    up to and including the embedding layer frozen, and the GCN layers past it, the head, the
    centre gate and the skip multiples trained on whole panels (`TrainConfig.trainable`)."""
    model = dataclasses.replace(
        config.model, centre_residual=config.model.centre_residual or centre_residual
    )
    start = _extended(network, model, {"centre_gate"}, "the centre residual")
    past = range(model.layer_index(model.embedding_layer) + 1, len(model.hidden_sizes))
    prefixes = (*(f"layers.{i}." for i in past), *DECODER_PARTS)
    names = tuple(n for n, _ in start.named_parameters() if n.startswith(prefixes))
    data = dataclasses.replace(config.data, panel_batch_fraction=0.0)
    train = dataclasses.replace(train, trainable=names)
    return dataclasses.replace(config, model=model, data=data, train=train), start


def _extended(network: SageGCN, model: ModelConfig, added: Collection[str], what: str) -> SageGCN:
    """A network of configuration ``model`` holding ``network``'s weights; the parameters
    ``added`` may be new (at their starting values), any other difference is an error."""
    start = SageGCN(model)
    missing, unexpected = start.load_state_dict(network.state_dict(), strict=False)
    if unexpected or set(missing) - set(added):
        raise CheckpointError(f"cannot add {what}: {missing=}, {unexpected=}")
    return start
