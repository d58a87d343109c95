"""The CLI end to end on tiny tissue: prepare → pretrain (corpus + --val-data) → embed, impute."""

import json
from pathlib import Path

import anndata as ad
import pytest

from sagefm._constants import Keys
from sagefm.cli import main
from sagefm.datasets import synthetic_tissue
from sagefm.io.write import write_h5ad

TINY = ["--hidden-sizes", "16", "8", "16", "--max-epochs", "1", "--batch-size", "16"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A model directory pretrained through the CLI, and a slide file it was not trained on."""
    root = tmp_path_factory.mktemp("cli")
    raw = root / "raw"
    raw.mkdir()
    slides = synthetic_tissue(n_slides=3, grid_rows=8, grid_cols=8, n_genes=60, seed=2)
    for i, adata in enumerate(slides[:2]):
        write_h5ad(adata, raw / f"s{i}.h5ad")
    held_out = write_h5ad(slides[2], root / "held_out.h5ad")
    assert (
        main(["prepare", "--input", str(raw), "--output", str(root / "c"), "--max-genes", "40"])
        == 0
    )
    argv = ["--corpus", str(root / "c"), "--val-data", str(held_out), "--accelerator", "cpu"]
    assert main(["--no-progress", "pretrain", *argv, "--output", str(root / "run"), *TINY]) == 0
    run = json.loads((root / "run" / "run.json").read_text())
    assert run["val_slides"] == ["synthetic_2"] and len(run["train_slides"]) == 2
    return root / "run" / "best", held_out


def test_embed_writes_the_embedding(trained: tuple[Path, Path], tmp_path: Path) -> None:
    model, slide = trained
    out = tmp_path / "e.h5ad"
    argv = ["--model", str(model), "--input", str(slide), "--output", str(out)]
    assert main(["--no-progress", "embed", *argv, "--key-added", "emb", "--chunk-size", "7"]) == 0
    embedded = ad.read_h5ad(out)
    assert embedded.obsm["emb"].shape == (embedded.n_obs, 16)
    assert "emb_neighbourhood" not in embedded.obsm
    averaged = tmp_path / "e_nb.h5ad"
    argv[-1] = str(averaged)
    assert main(["--no-progress", "embed", *argv, "--key-added", "emb", "--neighbourhood"]) == 0
    embedded = ad.read_h5ad(averaged)
    assert embedded.obsm["emb_neighbourhood"].shape == (embedded.n_obs, 16)
    assert embedded.uns["sagefm"]["average_neighbourhood"]["emb_neighbourhood"]["use_rep"] == "emb"
    middle = tmp_path / "e1.h5ad"
    argv[-1] = str(middle)
    assert main(["--no-progress", "embed", *argv, "--gcn-layer", "1"]) == 0
    embedded = ad.read_h5ad(middle)
    assert embedded.obsm["X_sagefm"].shape == (embedded.n_obs, 8)  # TINY's middle layer
    assert embedded.uns["sagefm"]["embed"]["gcn_layer"] == 1
    assert not embedded.uns["sagefm"]["embed"]["slide_centering"]  # as pretrained
    # this model centres on the corpus means: there is no slide centring to turn on
    argv[-1] = str(tmp_path / "e2.h5ad")
    assert main(["--no-progress", "embed", *argv, "--slide-centering"]) == 2
    assert not (tmp_path / "e2.h5ad").exists()
    assert main(["--no-progress", "embed", *argv, "--no-slide-centering"]) == 0


def test_impute_writes_a_layer_or_the_vocabulary(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    model, slide = trained
    argv = ["--no-progress", "impute", "--model", str(model), "--input", str(slide)]
    assert main([*argv, "--output", str(tmp_path / "i.h5ad")]) == 0
    imputed = ad.read_h5ad(tmp_path / "i.h5ad")
    assert imputed.layers[Keys.LAYER_IMPUTED].shape == imputed.shape
    assert main([*argv, "--output", str(tmp_path / "v.h5ad"), "--vocabulary-genes"]) == 0
    assert ad.read_h5ad(tmp_path / "v.h5ad").n_vars == 40  # the corpus vocabulary


def test_embed_refuses_a_file_with_several_slides(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    model, slide = trained
    argv = ["embed", "--model", str(model), "--input", str(slide.parent / "raw")]
    assert main([*argv, "--output", str(tmp_path / "e.h5ad")]) == 2


def test_adapt_writes_a_model_on_the_same_vocabulary(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    model, slide = trained
    argv = ["--model", str(model), "--data", str(slide), "--output", str(tmp_path / "a")]
    assert main(["--no-progress", "adapt", *argv, "--max-epochs", "1"]) == 0
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    assert run["epochs_run"] == 1 and run["config"]["train"]["max_epochs"] == 1
    vocabulary = (tmp_path / "a" / "best" / "vocabulary.tsv").read_text()
    assert vocabulary == (model / "vocabulary.tsv").read_text()


def test_learn_panels_writes_a_model_with_the_panel_term_alone_trained(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    model, slide = trained
    out = tmp_path / "p"
    argv = ["--model", str(model), "--data", str(slide), "--val-data", str(slide)]
    argv += ["--output", str(out), "--max-epochs", "1", "--panel-fraction", "0.5"]
    assert main(["--no-progress", "learn-panels", *argv]) == 0
    config = json.loads((out / "best" / "config.json").read_text())
    assert config["model"]["panel_skip"] and config["train"]["trainable"] == ["panel_skip_shared"]
    assert config["data"]["panel_batch_fraction"] == 0.5
    assert (out / "best" / "vocabulary.tsv").read_text() == (model / "vocabulary.tsv").read_text()


def test_learn_decoder_writes_a_model_with_the_centre_residual(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    model, slide = trained
    out = tmp_path / "d"
    command = ["--no-progress", "learn-decoder", "--model", str(model), "--data", str(slide)]
    assert main([*command, "--output", str(out), "--max-epochs", "1"]) == 0
    config = json.loads((out / "best" / "config.json").read_text())
    trained_names = config["train"]["trainable"]
    assert config["model"]["centre_residual"] and "centre_gate" in trained_names
    assert "head.weight" in trained_names and "layers.0.linear.weight" not in trained_names
