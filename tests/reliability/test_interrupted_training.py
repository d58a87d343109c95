"""SIGTERM/SIGINT during `sagefm pretrain` saves a resumable checkpoint; `--resume` finishes the run.

Real subprocesses of the CLI on small synthetic slides: the signal arrives while the second epoch
trains, the process exits with 128 + signal after writing ``resume/last.ckpt``, and a second
process started with ``--resume`` completes exactly the steps the uninterrupted run would have.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from sagefm.datasets import synthetic_tissue
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
