"""``sagefm pretrain``: sources that cannot go together are errors, not silently dropped."""

import json
import logging
from pathlib import Path

import anndata as ad
import pytest

from sagefm.cli import main
from sagefm.datasets import synthetic_tissue
from sagefm.evaluation.recovery import BASELINES


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


def test_demo_writes_its_summary_and_figure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sagefm.cli import training

    slides = synthetic_tissue(n_slides=3, grid_rows=10, grid_cols=10, n_genes=60, seed=1)
    monkeypatch.setattr(training, "demo_slides", lambda seed: (slides[:1], slides[2:], slides[1]))
    assert main(["--no-progress", "demo", "--output", str(tmp_path), "--max-epochs", "1"]) == 0
    summary = json.loads((tmp_path / "demo.json").read_text())
    assert set(summary["masked_gene_recovery"]["rmse"]) == {"model", *BASELINES}
    assert {"gene_mean", "scaled_neighbour_mean"} <= set(BASELINES)
    ari = summary["domains"]["ari"]
    assert set(ari) == {"sagefm", "sagefm_neighbourhood", "pca", "neighbour_pca", "banksy"}
    assert all(-1.0 <= value <= 1.0 for value in ari.values())
    assert summary["domains"]["strongest_baseline"] in {"pca", "neighbour_pca", "banksy"}
    assert (tmp_path / summary["figure"]).read_bytes()[:4] == b"\x89PNG"
    run = json.loads((tmp_path / "model" / "run.json").read_text())
    assert run["epochs_run"] == 1
    # the held-out slide is neither trained nor validated on
    assert slides[1].obs["sample_id"].iloc[0] not in run["train_slides"] + run["val_slides"]
    embedded = ad.read_h5ad(tmp_path / "held_out_embedded.h5ad")
    assert {"sagefm_domain", "sagefm_neighbourhood_domain", "banksy_domain"} <= set(
        embedded.obs.columns
    )
    assert "X_sagefm_neighbourhood" in embedded.obsm
