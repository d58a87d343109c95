"""A run stopped mid-epoch resumes from its last checkpoint and ends exactly as an uninterrupted one."""

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from sagefm.config import ModelConfig, SageFMConfig, TrainConfig
from sagefm.data.sampling import CentreSampler
from sagefm.datasets import synthetic_tissue
from sagefm.train import module
from sagefm.train.pretrain import pretrain

CONFIG = SageFMConfig(
    model=ModelConfig(hidden_sizes=(32, 16, 16, 16, 32)),
    train=TrainConfig(
        max_epochs=2, batch_size=16, accelerator="cpu", seed=5, checkpoint_every_n_steps=1
    ),
)


class Killed(RuntimeError):
    pass


def _slides() -> list:
    return synthetic_tissue(n_slides=4, grid_rows=8, grid_cols=8, n_genes=40, seed=0)


def _run(output: Path, schedule: str, *, resume: bool = False) -> dict[str, np.ndarray]:
    slides = _slides()
    pretrain(
        slides[:3],
        val_slides=slides[3:],
        output=output,
        config=dataclasses.replace(
            CONFIG, train=dataclasses.replace(CONFIG.train, lr_schedule=schedule)
        ),
        progress=False,
        resume=resume,
    )
    return load_file(str(output / "last" / "model.safetensors"))


@pytest.mark.parametrize("schedule", ["cosine", "plateau"])
def test_killed_mid_epoch_run_resumes_to_the_same_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, schedule: str
) -> None:
    expected = _run(tmp_path / "straight", schedule)
    steps_per_epoch = sum(a.n_obs for a in _slides()[:3]) // CONFIG.train.batch_size
    assert (
        steps_per_epoch < 17 < 2 * steps_per_epoch
    )  # the kill below falls inside the second epoch

    step = module.PretrainingModule.training_step
    calls: list[int] = []

    def dies_at_step_17(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        if self.global_step == 17:  # mid epoch 1: the checkpoint after step 17 exists
            raise Killed("simulated kill")
        calls.append(self.global_step)
        return step(self, batch, batch_idx)

    monkeypatch.setattr(module.PretrainingModule, "training_step", dies_at_step_17)
    with pytest.raises(Killed):
        _run(tmp_path / "killed", schedule)
    monkeypatch.setattr(module.PretrainingModule, "training_step", step)

    def counting(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        calls.append(self.global_step)
        return step(self, batch, batch_idx)

    monkeypatch.setattr(module.PretrainingModule, "training_step", counting)
    calls.clear()
    resumed = _run(tmp_path / "killed", schedule, resume=True)
    assert calls == list(range(17, 2 * steps_per_epoch))  # only the rest of epoch 1 is trained
    assert expected.keys() == resumed.keys()
    for name, value in expected.items():
        np.testing.assert_allclose(resumed[name], value, rtol=1e-6, atol=1e-7, err_msg=name)


def test_sampler_order_is_a_function_of_seed_and_epoch_and_skip_resumes_it() -> None:
    rng = np.random.default_rng(0)
    coords = [rng.uniform(0, 1000, (50, 2)), rng.uniform(0, 1000, (30, 2))]
    sampler = CentreSampler(coords, [100.0, 100.0], seed=1, block_size=9, slides_per_group=1)
    sampler.set_epoch(2)
    full = list(sampler)
    again = CentreSampler(coords, [100.0, 100.0], seed=1, block_size=9, slides_per_group=1)
    again.set_epoch(2)
    again.skip(20)
    assert list(again) == full[20:]
    assert list(again) == full  # the skip applies once
    again.set_epoch(3)
    assert list(again) != full
    assert sorted((s, p) for s, p, _ in full) == [(0, i) for i in range(50)] + [
        (1, i) for i in range(30)
    ]
    # one group at a time: all of one slide's centres come before the other's
    slides = [s for s, _, _ in full]
    assert slides == sorted(slides) or slides == sorted(slides, reverse=True)
    # spatial blocks: consecutive centres are mostly close together
    gaps = [
        np.linalg.norm(coords[s][p] - coords[s2][p2])
        for (s, p, _), (s2, p2, _) in itertools.pairwise(full)
        if s == s2
    ]
    assert np.median(gaps) < 250  # uniform random pairs in a 1000 µm square: median ~ 500
