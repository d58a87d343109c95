"""``TrainConfig.precision = "auto"``: bf16 mixed precision where the device has native bf16
matmuls, fp32 elsewhere, and what a run records."""

import json

import numpy as np
import pytest
import torch

from sagefm.config import ModelConfig, SageFMConfig, TrainConfig
from sagefm.datasets import synthetic_tissue
from sagefm.train import precision
from sagefm.train.pretrain import pretrain


@pytest.mark.parametrize(("amx", "avx512_bf16"), [(True, False), (False, True), (False, False)])
def test_auto_is_bf16_exactly_where_the_cpu_multiplies_bf16(
    monkeypatch, amx: bool, avx512_bf16: bool
) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    expected = "bf16-mixed" if amx or avx512_bf16 else "32-true"
    assert precision.resolve_precision("auto", "cpu") == expected
    assert precision.resolve_precision("auto", "auto") == expected
    for explicit in ("32-true", "bf16-mixed", "16-mixed"):
        assert precision.resolve_precision(explicit, "cpu") == explicit


@pytest.mark.parametrize("bf16", [True, False])
def test_auto_on_a_gpu_follows_its_bf16_support(monkeypatch, bf16: bool) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: not bf16)  # not consulted
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: not bf16)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16)
    expected = "bf16-mixed" if bf16 else "32-true"
    assert precision.resolve_precision("auto", "gpu") == expected
    assert precision.resolve_precision("auto", "auto") == expected
    # a CPU run on a machine with a GPU asks the CPU
    assert precision.resolve_precision("auto", "cpu") == ("32-true" if bf16 else "bf16-mixed")


def test_autocast_matches_lightning_precisions() -> None:
    with precision.autocast("bf16-mixed"):
        assert torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 3) @ torch.ones(3, 2)).dtype == torch.bfloat16
    with precision.autocast("32-true"):
        assert not torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 3) @ torch.ones(3, 2)).dtype == torch.float32


@pytest.mark.parametrize("native", [True, False])
def test_a_run_records_the_precision_auto_resolved_to(tmp_path, monkeypatch, native) -> None:
    """config.json and run.json say what the run trained in, not "auto" (a resumed or repeated
    run on another machine then knows), and the bf16 run trains to a finite loss."""
    monkeypatch.setattr(precision, "fast_bf16", lambda device: native)
    slides = synthetic_tissue(n_slides=2, grid_rows=6, grid_cols=6, n_genes=40, seed=3)
    config = SageFMConfig(
        model=ModelConfig(hidden_sizes=(16, 8, 8)),
        train=TrainConfig(max_epochs=1, batch_size=16, accelerator="cpu"),
    )
    assert config.train.precision == "auto"  # the default
    result = pretrain(
        slides[:1], val_slides=slides[1:], output=tmp_path, config=config, progress=False
    )
    expected = "bf16-mixed" if native else "32-true"
    assert SageFMConfig.load(tmp_path / "config.json").train.precision == expected
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["config"]["train"]["precision"] == expected
    assert np.isfinite(result.best_val_loss)
