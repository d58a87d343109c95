"""SIGTERM/SIGINT during `sagefm pretrain` saves a resumable checkpoint; `--resume` finishes the run.

Real subprocesses of the CLI on small synthetic slides: the signal arrives while the second epoch
trains, the process exits with 128 + signal after writing ``resume/last.ckpt``, and a second
process started with ``--resume`` completes exactly the steps the uninterrupted run would have.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import lightning as L
import pandas as pd
import pytest
import torch

from sagefm import SageFMConfig, pretrain
from sagefm.datasets import synthetic_tissue
from sagefm.errors import TrainingInterrupted
from sagefm.io.write import write_h5ad

pytestmark = pytest.mark.slow

EPOCHS, BATCHES_PER_EPOCH = 3, 12


@pytest.fixture(scope="module")
def slide_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("slides")
    slides = synthetic_tissue(n_slides=3, grid_rows=12, grid_cols=12, n_genes=60, seed=0)
    return [write_h5ad(a, folder / f"s{i}.h5ad") for i, a in enumerate(slides)]


def start_pretrain(slide_files: list[Path], output: Path, *extra: str) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "sagefm.cli",
        "--no-progress",
        "pretrain",
        "--data",
        *map(str, slide_files[:2]),
        "--val-data",
        str(slide_files[2]),
        "--output",
        str(output),
        "--hidden-sizes",
        *"32 16 16 16 32".split(),
        "--max-epochs",
        str(EPOCHS),
        "--batch-size",
        "8",
        "--limit-train-batches",
        str(BATCHES_PER_EPOCH),
        *extra,
    ]
    log = (output.parent / f"{output.name}{'-'.join(extra)}.log").open("w")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)


def wait_for(path: Path, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert process.poll() is None, "training ended before it could be interrupted"
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout_s} s"
        time.sleep(0.05)


def interrupt_training(slide_files: list[Path], output: Path, signum: signal.Signals) -> Path:
    """Start `sagefm pretrain`, send ``signum`` during the second epoch; the saved checkpoint."""
    process = start_pretrain(slide_files, output)
    # The first epoch's model export proves training is under way; the signal then lands in epoch 1.
    wait_for(output / "last" / "checksums.json", process, timeout_s=240)
    process.send_signal(signum)
    assert process.wait(timeout=120) == 128 + signum
    log = (output.parent / "run.log").read_text()
    assert f"training stopped by {signum.name}" in log and "--resume" in log

    checkpoint = output / "resume" / "last.ckpt"
    state = torch.load(checkpoint, weights_only=True)  # plain tensors and containers only
    assert state["epoch"] >= 1 and BATCHES_PER_EPOCH <= state["global_step"] < EPOCHS * (
        BATCHES_PER_EPOCH
    )
    assert not list(checkpoint.parent.glob(".*.tmp")), "a temporary file was left behind"
    assert not (output / "run.json").exists()  # the run did not claim to have finished
    return checkpoint


def test_sigint_saves_a_checkpoint_and_exits_130(slide_files: list[Path], tmp_path: Path) -> None:
    interrupt_training(slide_files, tmp_path / "run", signal.SIGINT)


def test_sigterm_then_resume_finishes_the_run(slide_files: list[Path], tmp_path: Path) -> None:
    output = tmp_path / "run"
    checkpoint = interrupt_training(slide_files, output, signal.SIGTERM)
    resumed = start_pretrain(slide_files, output, "--resume")
    assert resumed.wait(timeout=300) == 0, (tmp_path / "run--resume.log").read_text()
    run = json.loads((output / "run.json").read_text())
    assert run["epochs_run"] == EPOCHS
    final = torch.load(checkpoint, weights_only=True)
    assert final["global_step"] == EPOCHS * BATCHES_PER_EPOCH  # no step lost, none repeated
    assert not (checkpoint.parent / "last-v1.ckpt").exists()  # the next --resume finds it
    metrics = pd.read_csv(output / "metrics.csv")  # rows from before the signal are kept
    assert sorted(metrics.dropna(subset=["val_loss"])["epoch"]) == list(range(EPOCHS))
    assert metrics["step"].is_monotonic_increasing


class SignalDuringEpoch1(L.Callback):
    """Sends ``signum`` to this process once, at ``hook`` in the second epoch."""

    def __init__(self, signum: signal.Signals, hook: str) -> None:
        self.signum, self.hook, self.sent = signum, hook, False

    def _send(self, trainer: L.Trainer, hook: str) -> None:
        if hook == self.hook and trainer.current_epoch == 1 and not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signum)

    def on_train_batch_end(self, trainer: L.Trainer, *args: object, **kwargs: object) -> None:
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self._send(trainer, "last training batch")

    def on_validation_batch_end(self, trainer: L.Trainer, *args: object, **kwargs: object) -> None:
        self._send(trainer, "validation batch")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._send(trainer, "end of validation")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("hook", ["last training batch", "validation batch", "end of validation"])
def test_a_signal_at_the_end_of_an_epoch_loses_no_validation(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    signum: signal.Signals,
    hook: str,
) -> None:
    """Where a short epoch makes the CLI test's signal land: the resumed run validates every epoch.

    Lightning alone stops a validation after the batch a SIGTERM lands in; its resume then skips the
    rest of that validation and early stopping finds no ``val_loss``.
    """
    slides = synthetic_tissue(n_slides=3, grid_rows=12, grid_cols=12, n_genes=60, seed=0)
    config = SageFMConfig()
    config = dataclasses.replace(
        config,
        model=dataclasses.replace(config.model, hidden_sizes=(32, 16, 16, 16, 32)),
        train=dataclasses.replace(
            config.train,
            max_epochs=EPOCHS,
            batch_size=8,
            limit_train_batches=BATCHES_PER_EPOCH,
        ),
    )
    output = tmp_path / "run"
    run = partial(pretrain, slides[:2], val_slides=slides[2:], output=output, config=config)
    pretraining = importlib.import_module("sagefm.train.pretrain")
    checkpointing = pretraining._checkpointing
    sender = SignalDuringEpoch1(signum, hook)
    monkeypatch.setattr(
        pretraining, "_checkpointing", lambda *args: [*checkpointing(*args), sender]
    )
    with pytest.raises(TrainingInterrupted):
        run(progress=False)
    assert sender.sent
    monkeypatch.setattr(pretraining, "_checkpointing", checkpointing)

    result = run(progress=False, resume=True)
    assert result.epochs_run == EPOCHS
    state = torch.load(output / "resume" / "last.ckpt", weights_only=True)
    assert state["global_step"] == EPOCHS * BATCHES_PER_EPOCH
    metrics = pd.read_csv(output / "metrics.csv")
    assert sorted(metrics.dropna(subset=["val_loss"])["epoch"]) == list(range(EPOCHS))
