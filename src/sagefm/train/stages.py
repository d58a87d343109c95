"""Runs that continue from a trained network: adaptation to a user's own slides
(`SageFM.adapt`) and the panel stage (`SageFM.learn_panels`). Each gives the configuration and
starting network that `pretrain` (``start_from``) then trains."""

from __future__ import annotations

import dataclasses

from sagefm.config import SageFMConfig, TrainConfig
from sagefm.errors import CheckpointError, ConfigError
from sagefm.nn.gcn import SageGCN
from sagefm.train.precision import AUTO

#: the parameter the panel stage adds and trains alone (`SageGCN.panel_skip_weight`)
PANEL_TERM = "panel_skip_weight"


def continued_training(
    config: SageFMConfig, max_epochs: int, learning_rate: float | None, seed: int
) -> TrainConfig:
    """A trained model's training settings for a run that continues from it; ``learning_rate``
    defaults to the model's own."""
    return dataclasses.replace(
        config.train,
        max_epochs=max_epochs,
        seed=seed,
        precision=AUTO,  # this machine's choice, not the one the model was pretrained on
        learning_rate=config.train.learning_rate if learning_rate is None else learning_rate,
    )


def panel_stage(
    config: SageFMConfig, network: SageGCN, train: TrainConfig, panel_fraction: float
) -> tuple[SageFMConfig, SageGCN]:
    """The configuration and starting network of the panel stage: ``network`` with the panel
    term of its skip path added (`ModelConfig.panel_skip`; at 0, or as trained if it has one),
    ``panel_fraction`` of the batches shown a random panel that trains no GCN weight, and every
    parameter but the panel term frozen (`TrainConfig.trainable`)."""
    if not config.model.spatial_skip:
        raise ConfigError("the panel stage needs a model with a skip path (spatial_skip)")
    model = dataclasses.replace(config.model, panel_skip=True)
    start = SageGCN(model)
    missing, unexpected = start.load_state_dict(network.state_dict(), strict=False)
    if unexpected or set(missing) - {PANEL_TERM}:
        raise CheckpointError(f"cannot add the panel term: {missing=}, {unexpected=}")
    data = dataclasses.replace(
        config.data, panel_batch_fraction=panel_fraction, panel_batches_train_gcn=False
    )
    train = dataclasses.replace(train, trainable=(PANEL_TERM,))
    return dataclasses.replace(config, model=model, data=data, train=train), start
