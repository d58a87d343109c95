"""``sagefm pretrain``: sources that cannot go together are errors, not silently dropped."""

import json
import logging
from pathlib import Path

import pytest

from sagefm.cli import main
from sagefm.datasets import synthetic_tissue


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--corpus", "c", "--data", "a.h5ad"], "either --corpus or --data"),
        (["--val-data", "v.h5ad"], "--val-data needs --data or --corpus"),
    ],
)
def test_pretrain_rejects_options_that_cannot_apply(
    argv: list[str], message: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        assert main(["pretrain", "--output", str(tmp_path), *argv]) == 2
    assert message in caplog.text


def test_unknown_flags_are_rejected_outside_bench(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["embed", "--model", "m", "--input", "i", "--output", "o", "--quick"])
    assert exc.value.code == 2 and "unrecognized arguments: --quick" in capsys.readouterr().err


def test_demo_writes_its_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sagefm.cli import training

    slides = synthetic_tissue(n_slides=3, grid_rows=8, grid_cols=8, n_genes=60, seed=1)
    monkeypatch.setattr(training, "synthetic_slides", lambda seed: (slides[:2], slides[2:]))
    assert main(["--no-progress", "demo", "--output", str(tmp_path), "--max-epochs", "1"]) == 0
    summary = json.loads((tmp_path / "demo.json").read_text())
    assert set(summary["masked_gene_recovery"]["rmse"]) >= {"model", "zero", "gene_mean"}
    assert json.loads((tmp_path / "model" / "run.json").read_text())["epochs_run"] == 1
    assert (tmp_path / "held_out_embedded.h5ad").is_file()
