"""`TrainConfig.lr_schedule`: the learning rate of every step under each schedule."""

import dataclasses
import math
from pathlib import Path

import pytest

from sagefm.config import ModelConfig, SageFMConfig, TrainConfig
from sagefm.datasets import synthetic_tissue
from sagefm.errors import ConfigError
from sagefm.train import module
from sagefm.train.pretrain import pretrain

CONFIG = SageFMConfig(
    model=ModelConfig(hidden_sizes=(16, 8, 16)),
    train=TrainConfig(
        max_epochs=2, batch_size=16, accelerator="cpu", learning_rate=0.01, lr_schedule="cosine"
    ),
)


def _rates(tmp_path: Path, config: SageFMConfig, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The learning rate each optimizer step of a short run used."""
    rates: list[float] = []

    def record(self, outputs, batch, batch_idx):  # type: ignore[no-untyped-def]
        rates.append(self.optimizers().param_groups[0]["lr"])

    monkeypatch.setattr(module.PretrainingModule, "on_train_batch_end", record, raising=False)
    slides = synthetic_tissue(n_slides=3, grid_rows=8, grid_cols=8, n_genes=40, seed=0)
    pretrain(slides[:2], val_slides=slides[2:], output=tmp_path, config=config, progress=False)
    return rates


def test_cosine_decays_every_step_from_the_rate_to_zero_over_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rates = _rates(tmp_path, CONFIG, monkeypatch)
    n_steps = len(rates)
    assert n_steps >= 8  # two epochs of several steps
    expected = [0.005 * (1 + math.cos(math.pi * k / n_steps)) for k in range(n_steps)]
    assert rates == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert rates[0] == 0.01 and rates[n_steps // 2] == pytest.approx(0.005)  # half at mid-run
    assert rates[-1] < 0.01 * 0.02  # nearly zero at the last step


def test_plateau_keeps_the_rate_within_an_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plateau = dataclasses.replace(CONFIG.train, lr_schedule="plateau")
    rates = _rates(tmp_path, dataclasses.replace(CONFIG, train=plateau), monkeypatch)
    assert rates == [0.01] * len(rates)  # two epochs: patience 2 cannot lower it yet
    with pytest.raises(ConfigError, match="lr_schedule"):
        dataclasses.replace(plateau, lr_schedule="linear")
