"""Lightning itself advances the training sampler's epoch (so every epoch draws a new order/masks)."""

from pathlib import Path

import pytest

import sagefm
from sagefm.config import ModelConfig, SageFMConfig, TrainConfig
from sagefm.data import sampling
from sagefm.datasets import synthetic_tissue


def test_trainer_sets_the_sampler_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    original = sampling.CentreSampler.set_epoch

    def record(self: sampling.CentreSampler, epoch: int) -> None:
        seen.append(epoch)
        original(self, epoch)

    monkeypatch.setattr(sampling.CentreSampler, "set_epoch", record)
    slides = synthetic_tissue(n_slides=3, grid_rows=12, grid_cols=12, n_genes=120)
    config = SageFMConfig(model=ModelConfig(hidden_sizes=(16, 8)), train=TrainConfig(max_epochs=3))
    sagefm.pretrain(
        slides[:2], val_slides=slides[2:], output=tmp_path, config=config, progress=False
    )
    assert seen == [0, 1, 2]
