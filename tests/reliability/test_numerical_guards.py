"""A non-finite loss stops pretraining with a message naming step, batch and slide; no NaN weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from safetensors.torch import load_file

import sagefm
from sagefm.config import DataConfig, ModelConfig, SageFMConfig, TrainConfig
from sagefm.datasets import synthetic_tissue
from sagefm.errors import TrainingError


def test_overflowing_input_stops_training_with_a_clear_message(tmp_path: Path) -> None:
    slides = synthetic_tissue(n_slides=2, grid_rows=6, grid_cols=6, n_genes=40, seed=0)
    for adata in slides:
        adata.X = sp.csr_matrix(np.log1p(adata.X.toarray()), dtype=np.float32)
    poisoned = slides[0]
    x = poisoned.X.toarray()
    # finite in float32, but its square in the loss is not; in every other spot, so that the
    # genes are not constant (a constant column standardises to 0 and never reaches the loss)
    x[::2, :5] = 3e38
    poisoned.X = sp.csr_matrix(x)
    config = SageFMConfig(
        model=ModelConfig(hidden_sizes=(8, 4, 8)),
        data=DataConfig(normalized_input=True),
        train=TrainConfig(max_epochs=2, batch_size=8),
    )
    with pytest.raises(TrainingError) as raised:
        sagefm.pretrain(
            [poisoned], val_slides=slides[1:], output=tmp_path, config=config, progress=False
        )
    message = str(raised.value)
    assert "non-finite training loss" in message
    assert "global step 0" in message and "batch 0" in message
    assert str(poisoned.obs["sample_id"].iloc[0]) in message  # the slide to look at
    for name in ("best", "last"):  # nothing exported, or only finite weights
        weights = tmp_path / name / "model.safetensors"
        if weights.exists():
            assert all(np.isfinite(t.numpy()).all() for t in load_file(weights).values())
    assert not (tmp_path / "resume" / "last.ckpt").exists()  # a diverged state is not resumable
