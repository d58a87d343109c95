"""End to end on small synthetic tissue: pretrain, load, embed, impute; checkpoints; bad input."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import sagefm
from sagefm._constants import Keys
from sagefm.config import DataConfig, ModelConfig, SageFMConfig, TrainConfig
from sagefm.data.vocabulary import GeneVocabulary
from sagefm.datasets import synthetic_tissue
from sagefm.errors import CheckpointError, ConfigError, InputDataError, OutputError

SMALL = ModelConfig(hidden_sizes=(32, 16, 16, 16, 32))


def small_slides(seed: int = 0) -> list[ad.AnnData]:
    return synthetic_tissue(n_slides=3, grid_rows=12, grid_cols=12, n_genes=120, seed=seed)


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, sagefm.train.PretrainResult, list]:
    slides = small_slides()
    out = tmp_path_factory.mktemp("run")
    config = SageFMConfig(model=SMALL, train=TrainConfig(max_epochs=2, batch_size=32, seed=3))
    result = sagefm.pretrain(
        slides[:2], val_slides=slides[2:], output=out, config=config, progress=False
    )
    return out, result, slides


def test_pretraining_writes_everything(trained) -> None:
    out, result, _ = trained
    for name in ("config.json", "vocabulary.tsv", "model.safetensors", "checksums.json"):
        assert (out / "best" / name).is_file() and (out / "last" / name).is_file()
    assert (out / "resume" / "last.ckpt").is_file()
    metrics = (out / "metrics.csv").read_text()
    assert "train_loss" in metrics and "val_loss" in metrics
    run = json.loads((out / "run.json").read_text())
    assert run["seed"] == 3 and run["epochs_run"] == 2
    assert np.isfinite(result.best_val_loss) and result.peak_memory_mb > 0
    assert result.val_slides == ["synthetic_2"]


def test_pretraining_times_each_epoch_without_its_validation(trained) -> None:
    out, result, slides = trained
    assert len(result.epoch_train_s) == 2 and min(result.epoch_train_s) > 0
    assert json.loads((out / "run.json").read_text())["epoch_train_s"] == result.epoch_train_s
    per_epoch = pd.read_csv(out / "metrics.csv").dropna(subset=["epoch_train_s"])
    assert per_epoch["epoch_train_s"].tolist() == pytest.approx(result.epoch_train_s)
    # every training spot is a centre once per epoch, in full batches of 32 (the last one dropped)
    n_centres = sum(a.n_obs for a in slides[:2]) // 32 * 32
    rate = per_epoch["train_subgraphs_per_s"].to_numpy()
    assert rate == pytest.approx(n_centres / per_epoch["epoch_train_s"].to_numpy(), rel=1e-4)


def test_each_epoch_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    slides = small_slides(seed=1)
    config = SageFMConfig(model=SMALL, train=TrainConfig(max_epochs=2, batch_size=32, seed=3))
    with caplog.at_level("INFO", logger="sagefm.train.callbacks"):
        result = sagefm.pretrain(
            slides[:2], val_slides=slides[2:], output=tmp_path, config=config, progress=False
        )
    lines = [r.getMessage() for r in caplog.records if r.name == "sagefm.train.callbacks"]
    assert [line.split(":")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]
    val_loss = pd.read_csv(tmp_path / "metrics.csv").dropna(subset=["val_loss"])["val_loss"]
    assert all(f"validation loss {v:.5f}" in line for v, line in zip(val_loss, lines, strict=True))
    assert f"{result.epoch_train_s[1]:.1f} s of training" in lines[1]


def test_load_embed_impute(trained) -> None:
    out, _, slides = trained
    model = sagefm.load(out)  # a training output directory resolves to best/
    adata = slides[2].copy()
    emb = model.embed(adata)
    assert emb.shape == (adata.n_obs, 32) and np.isfinite(emb).all()
    assert adata.obsm["X_sagefm"] is emb
    norm = model.normalize(adata)
    np.testing.assert_allclose(norm, np.log1p(adata.X.toarray()), rtol=1e-6)
    mask = np.zeros(adata.shape, dtype=bool)
    mask[:, :5] = True
    pred = model.impute(adata, mask)
    assert pred.shape == adata.shape
    in_vocab = np.isin(adata.var_names, model.vocabulary.symbols) | np.isin(
        adata.var["gene_ids"], model.vocabulary.gene_ids
    )
    assert np.isnan(pred[:, ~in_vocab]).all() and np.isfinite(pred[:, in_vocab]).all()


def test_impute_mask_hides_values_everywhere(trained) -> None:
    """With a gene masked in every spot, its true values cannot influence any prediction."""
    out, _, slides = trained
    model = sagefm.load(out)
    adata = slides[2].copy()
    mask = np.zeros(adata.shape, dtype=bool)
    mask[:, 3] = True
    before = model.impute(adata, mask)
    changed = adata.copy()
    x = changed.X.toarray()
    x[:, 3] = x[:, 3] * 7 + 11
    changed.X = sp.csr_matrix(x)
    np.testing.assert_allclose(model.impute(changed, mask), before, rtol=1e-5, atol=1e-5)
    assert not np.allclose(model.impute(changed), model.impute(adata), atol=1e-4)


def test_embedding_does_not_depend_on_chunking(trained) -> None:
    out, _, slides = trained
    model = sagefm.load(out)
    a = model.embed(slides[2].copy(), chunk_size=7)
    b = model.embed(slides[2].copy(), chunk_size=1000)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_unobserved_genes_are_not_zero(trained) -> None:
    """A slide missing half the vocabulary: those genes are flagged unobserved, not zero-valued."""
    out, _, slides = trained
    model = sagefm.load(out)
    adata = slides[2]
    half = adata[:, adata.var_names[: adata.n_vars // 2]].copy()
    emb_half = model.embed(half)
    zeros = adata.copy()
    x = zeros.X.toarray()
    x[:, adata.n_vars // 2 :] = 0
    zeros.X = sp.csr_matrix(x)
    emb_zero = model.embed(zeros)
    assert not np.allclose(emb_half, emb_zero, atol=1e-4)


def test_save_roundtrip_and_tampering(trained, tmp_path: Path) -> None:
    out, _, slides = trained
    model = sagefm.load(out / "best")
    copy_dir = model.save(tmp_path / "copy")
    again = sagefm.load(copy_dir)
    np.testing.assert_allclose(
        again.embed(slides[2].copy()), model.embed(slides[2].copy()), rtol=1e-6
    )
    weights = copy_dir / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        sagefm.load(copy_dir)
    with pytest.raises(CheckpointError, match="does not exist"):
        sagefm.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError):
        sagefm.load(tmp_path / "empty")


def test_weights_not_matching_config_are_refused(trained, tmp_path: Path) -> None:
    out, _, _ = trained
    model = sagefm.load(out)
    bigger = dataclasses.replace(model.config.model, hidden_sizes=(64, 16, 16, 16, 32))
    from sagefm.io.checkpoint import save_model_dir

    genes = list(zip(model.vocabulary.symbols, model.vocabulary.gene_ids, strict=True))
    save_model_dir(
        tmp_path / "bad",
        dataclasses.replace(model.config, model=bigger),
        genes,
        model.network.state_dict(),
    )
    with pytest.raises(CheckpointError, match="do not match"):
        sagefm.load(tmp_path / "bad")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.obsm.pop("spatial"), "no spot coordinates"),
        (lambda a: setattr(a, "X", a.X.astype(np.float32) * 0.5), "not integer"),
        (lambda a: setattr(a, "X", sp.csr_matrix(-a.X.toarray())), "negative"),
        (
            lambda a: a.X.data.__setitem__(0, np.nan) or setattr(a, "X", a.X.astype(np.float32)),
            "NaN",
        ),
    ],
)
def test_bad_input_is_a_clear_error(trained, change, message: str) -> None:
    out, _, slides = trained
    model = sagefm.load(out)
    adata = slides[2].copy()
    adata.X = adata.X.astype(np.float32)
    change(adata)
    with pytest.raises(InputDataError, match=message):
        model.embed(adata)


def test_more_bad_input(trained) -> None:
    out, _, slides = trained
    model = sagefm.load(out)
    with pytest.raises(InputDataError, match="at least 15 spots"):
        model.embed(slides[2][:10].copy())
    dup = slides[2].copy()
    dup.obs_names = ["same"] * dup.n_obs
    with pytest.raises(InputDataError, match="duplicate spot names"):
        model.embed(dup)
    foreign = slides[2].copy()
    foreign.var_names = [f"X{i}" for i in range(foreign.n_vars)]
    del foreign.var["gene_ids"]
    with pytest.raises(InputDataError, match="vocabulary"):
        model.embed(foreign)
    normalised = slides[2].copy()
    normalised.X = sp.csr_matrix(np.log1p(normalised.X.toarray()))
    with pytest.raises(InputDataError, match="normalized_input"):
        model.embed(normalised)


def test_normalised_input_flag(tmp_path: Path) -> None:
    slides = small_slides(seed=1)
    for a in slides:
        a.X = sp.csr_matrix(np.log1p(a.X.toarray()))
    config = SageFMConfig(
        model=SMALL, data=DataConfig(normalized_input=True), train=TrainConfig(max_epochs=1)
    )
    model, _ = sagefm.SageFM.pretrain(
        slides[:2], val_slides=slides[2:], output=tmp_path, config=config, progress=False
    )
    np.testing.assert_allclose(model.normalize(slides[2]), slides[2].X.toarray())


def test_unwritable_output_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError):
        sagefm.pretrain(
            small_slides(), output=blocker / "out", config=SageFMConfig(model=SMALL), progress=False
        )


def test_input_scaling_is_the_training_data_and_survives_loading(trained) -> None:
    import torch

    from sagefm.data.slides import observed_gene_stats, prepare_slide
    from sagefm.train.module import SCALE_PAD

    out, _, slides = trained
    model = sagefm.load(out / "last")
    prepared = [prepare_slide(a, model.vocabulary, model.config.data)[0] for a in slides[:2]]
    mean, sd = observed_gene_stats(prepared, len(model.vocabulary))
    network = model.network
    assert model.config.model.standardize_input
    torch.testing.assert_close(network.input_mean, torch.as_tensor(mean))
    torch.testing.assert_close(network.input_scale, torch.as_tensor(sd) + SCALE_PAD)
    # a configuration saved before the option existed describes a raw-input model
    raw = json.loads((out / "last" / "config.json").read_text())
    del raw["model"]["standardize_input"]
    assert SageFMConfig.from_dict(raw).model.standardize_input is False
    # ... and one without a mask_indicator key was saved while the indicator was the default
    assert model.config.model.mask_indicator is False  # the default now
    del raw["model"]["mask_indicator"]
    assert SageFMConfig.from_dict(raw).model.mask_indicator is True
    # ... and one without lr_schedule was trained (and adapts) on the only schedule then, plateau
    assert raw["train"]["lr_schedule"] == "cosine"  # the default now
    del raw["train"]["lr_schedule"]
    assert SageFMConfig.from_dict(raw).train.lr_schedule == "plateau"


def test_adapt_continues_from_the_model(trained, tmp_path: Path) -> None:
    """Adaptation starts from the model's weights and scaling (a vanishing learning rate leaves
    them as they were), keeps its vocabulary, and a real rate changes them."""
    out, _, slides = trained
    model = sagefm.load(out)
    before = {k: v.clone() for k, v in model.network.state_dict().items()}
    frozen, result = model.adapt(
        slides[2], output=tmp_path / "frozen", max_epochs=1, learning_rate=1e-30, progress=False
    )
    assert result.epochs_run == 1 and (tmp_path / "frozen" / "run.json").is_file()
    assert frozen.vocabulary == model.vocabulary and frozen.config.model == model.config.model
    for key, value in frozen.network.state_dict().items():
        np.testing.assert_allclose(value.numpy(), before[key].numpy(), rtol=0, atol=1e-6)
    adapted, _ = model.adapt(slides[2], output=tmp_path / "adapted", max_epochs=1, progress=False)
    after = adapted.network.state_dict()
    assert not np.allclose(after["head.weight"].numpy(), before["head.weight"].numpy())
    for key in ("input_mean", "input_scale"):  # one input scale for zero-shot and adapted
        np.testing.assert_array_equal(after[key].numpy(), before[key].numpy())
    for key, value in model.network.state_dict().items():  # the original model is untouched
        np.testing.assert_array_equal(value.numpy(), before[key].numpy())


def test_adapt_chooses_the_precision_for_this_machine(trained, tmp_path: Path, monkeypatch) -> None:
    """A model pretrained in bf16 (an AMX CPU, a GPU) adapts in what "auto" gives here: fp32 on
    a machine without native bf16, not a slow emulated bf16."""
    from sagefm.train import precision

    out, _, slides = trained
    model = sagefm.load(out)
    model.config = dataclasses.replace(
        model.config, train=dataclasses.replace(model.config.train, precision="bf16-mixed")
    )
    monkeypatch.setattr(precision, "fast_bf16", lambda device: False)
    adapted, _ = model.adapt(slides[2], output=tmp_path / "adapted", max_epochs=1, progress=False)
    assert SageFMConfig.load(tmp_path / "adapted" / "config.json").train.precision == "32-true"
    assert adapted.config.train.precision == "32-true"


def test_adapting_with_another_vocabulary_is_refused_before_anything_is_written(
    trained, tmp_path: Path
) -> None:
    out, _, slides = trained
    model = sagefm.load(out)
    other = GeneVocabulary.from_genes(list(model.vocabulary.symbols)[:-1])
    with pytest.raises(InputDataError, match="start_from"):
        sagefm.pretrain(
            [slides[2]],
            output=tmp_path / "run",
            config=model.config,
            vocabulary=other,
            progress=False,
            start_from=model.network,
        )
    assert not (tmp_path / "run").exists()


def test_embed_reads_the_chosen_gcn_layer(trained) -> None:
    """By default the model's ModelConfig.embedding_layer (the first for new models); gcn_layer=k
    gives layer k's width under key_added, and the layer is recorded in uns. Layers differ, and
    an index outside the network is a clear error."""
    out, _, slides = trained
    model = sagefm.load(out)
    assert model.config.model.embedding_layer == 0
    adata = slides[2].copy()
    default = model.embed(adata)
    assert adata.uns["sagefm"]["embed"]["gcn_layer"] == 0
    np.testing.assert_array_equal(model.embed(adata.copy(), gcn_layer=0), default)
    last = model.embed(adata.copy(), gcn_layer=-1)
    assert last.shape == default.shape and not np.allclose(last, default, atol=1e-4)
    middle = model.embed(adata, gcn_layer=1, key_added="X_layer1")
    assert middle.shape == (adata.n_obs, SMALL.hidden_sizes[1])
    assert adata.uns["sagefm"]["embed"]["gcn_layer"] == 1
    assert adata.obsm["X_layer1"] is middle
    with pytest.raises(ConfigError, match="GCN layer must be in"):
        model.embed(adata, gcn_layer=len(SMALL.hidden_sizes))


def test_embedding_layer_is_saved_and_older_models_keep_the_last() -> None:
    """A config saved before the option reads the last layer, as those models always did; the
    reference preset does too; a layer outside the network is refused."""
    config = SageFMConfig(model=dataclasses.replace(SMALL, embedding_layer=2))
    assert SageFMConfig.from_dict(config.to_dict()).model.embedding_layer == 2
    old = config.to_dict()
    del old["model"]["embedding_layer"]
    assert SageFMConfig.from_dict(old).model.embedding_layer == -1
    assert ModelConfig.reference().embedding_layer == -1
    assert dataclasses.replace(SMALL, embedding_layer=-1).embedding_dim == SMALL.hidden_sizes[-1]
    with pytest.raises(ConfigError, match="embedding_layer must be in"):
        dataclasses.replace(SMALL, embedding_layer=5)


def test_embed_on_chosen_genes_equals_the_slide_without_the_others(trained) -> None:
    """genes=...: the other genes are unobserved, exactly as for a slide that never measured them;
    the embedding lands in the full AnnData. A gene the slide lacks is a clear error."""
    out, _, slides = trained
    model = sagefm.load(out)
    adata = slides[2].copy()
    shown = list(adata.var_names[::2])
    on_subset = model.embed(adata, genes=shown)
    assert adata.obsm["X_sagefm"] is on_subset and adata.uns["sagefm"]["embed"][
        "n_genes_shown"
    ] == len(shown)
    np.testing.assert_array_equal(on_subset, model.embed(adata[:, shown].copy()))
    assert not np.allclose(on_subset, model.embed(adata.copy()), atol=1e-4)
    with pytest.raises(InputDataError, match=r"not in adata\.var_names"):
        model.embed(adata, genes=[*shown, "NOT_A_GENE"])


def _with_hidden_layer(adata: ad.AnnData, mask: np.ndarray, hidden_counts: float) -> ad.AnnData:
    """A copy of ``adata`` whose ``mask`` entries hold ``hidden_counts`` and are marked hidden."""
    out = adata.copy()
    x = np.asarray(out.X.toarray() if sp.issparse(out.X) else out.X, dtype=np.float32)
    x[mask] = hidden_counts
    out.X = sp.csr_matrix(x)
    out.layers[Keys.LAYER_HIDDEN] = sp.csr_matrix(mask)
    return out


def test_adapting_never_reads_the_entries_the_hidden_layer_marks(trained, tmp_path: Path) -> None:
    """Entries in ``layers["sagefm_hidden"]`` are never an input nor a target of adaptation: the
    same slide with other values there (0 or 500 counts) adapts to exactly the same weights.
    Without the layer the values are read, and the weights differ."""
    out, _, slides = trained
    model = sagefm.load(out)
    mask = np.random.default_rng(0).random(slides[2].shape) < 0.3
    weights = []
    for i, counts in enumerate((0.0, 500.0, 500.0)):
        adata = _with_hidden_layer(slides[2], mask, counts)
        if i == 2:
            del adata.layers[Keys.LAYER_HIDDEN]
        adapted, _ = model.adapt(adata, output=tmp_path / str(i), max_epochs=1, progress=False)
        weights.append(adapted.network.state_dict()["head.weight"].numpy())
    np.testing.assert_allclose(weights[1], weights[0], rtol=0, atol=1e-6)
    assert not np.allclose(weights[2], weights[0], atol=1e-4)


def test_the_hidden_layer_hides_entries_as_a_mask_does(trained) -> None:
    """Imputation of a slide with a hidden layer equals imputation with that layer as the mask;
    given both, an entry either hides is hidden. A layer that is not boolean is refused."""
    out, _, slides = trained
    model = sagefm.load(out)
    rng = np.random.default_rng(1)
    first, second = (rng.random(slides[2].shape) < 0.2 for _ in range(2))
    plain = slides[2].copy()
    by_mask = model.impute(plain, first | second, layer_added=None)
    marked = _with_hidden_layer(slides[2], first, 500.0)
    np.testing.assert_allclose(model.impute(marked, second, layer_added=None), by_mask, atol=1e-5)
    marked.layers[Keys.LAYER_HIDDEN] = marked.layers[Keys.LAYER_HIDDEN].astype(np.float32)
    with pytest.raises(InputDataError, match="must be boolean"):
        model.impute(marked, layer_added=None)
