"""Shared CLI options: defaults read from the config dataclasses, flags land in the config."""

import dataclasses

import pytest

from sagefm.cli import build_parser
from sagefm.cli.options import TRAIN_FLAGS, config_from_args
from sagefm.config import (
    DECODER_STAGE_LEARNING_RATE,
    PANEL_STAGE_LEARNING_RATE,
    DataConfig,
    ModelConfig,
    SageFMConfig,
    TrainConfig,
)
from sagefm.errors import ConfigError


def _pretrain_config(*argv: str) -> SageFMConfig:
    return config_from_args(build_parser().parse_args(["pretrain", "--output", "o", *argv]))


@pytest.mark.parametrize(
    ("argv", "neighbours", "whole_genes"),
    [
        ([], 0.3, 0.5),
        (["--whole-gene-mask-fraction", "0"], 0.3, 0.0),
        (["--preset", "reference"], 0.0, 0.0),
    ],
)
def test_cli_masking_options(argv: list[str], neighbours: float, whole_genes: float) -> None:
    config = _pretrain_config(*argv)
    assert config.data.neighbour_mask_fraction == neighbours
    assert config.data.whole_gene_mask_fraction == whole_genes
    assert config.model.standardize_input == ("reference" not in argv)
    assert config.data.panel_batch_fraction == 0.0


def test_panel_batches_train_only() -> None:
    """``--panel-batch-fraction`` reaches the training batches; validation sees whole panels."""
    from sagefm.train.datamodule import SubgraphDataModule

    config = _pretrain_config("--panel-batch-fraction", "0.25")
    assert config.data.panel_batch_fraction == 0.25
    module = SubgraphDataModule([], [], config)
    assert module.train_collate.panel_batch_fraction == 0.25
    assert module.val_collate.panel_batch_fraction == 0.0
    with pytest.raises(ConfigError, match="panel_batch_fraction"):
        DataConfig(panel_batch_fraction=1.5)


def test_pretrain_defaults_are_the_config_defaults() -> None:
    assert _pretrain_config() == SageFMConfig()
    reference = _pretrain_config("--preset", "reference")
    assert reference.model == ModelConfig.reference()


def test_embedding_loss_weight_and_depth_normalize_flags() -> None:
    model = _pretrain_config("--embedding-loss-weight", "0.5", "--depth-normalize").model
    assert model.embedding_loss_weight == 0.5 and model.depth_normalize
    assert not _pretrain_config("--no-depth-normalize").model.depth_normalize
    assert _pretrain_config().model.embedding_loss_weight == ModelConfig.embedding_loss_weight


def test_slide_centering_flag() -> None:
    assert _pretrain_config("--slide-centering").model.slide_centering
    assert not _pretrain_config().model.slide_centering
    assert not _pretrain_config("--no-slide-centering").model.slide_centering


def test_mask_indicator_flag_overrides_the_preset() -> None:
    assert _pretrain_config().model.mask_indicator == ModelConfig.mask_indicator
    assert not _pretrain_config("--no-mask-indicator").model.mask_indicator
    assert _pretrain_config("--preset", "reference", "--mask-indicator").model.mask_indicator
    assert not _pretrain_config("--preset", "reference").model.mask_indicator


def test_skip_centring_flag_overrides_the_preset() -> None:
    assert _pretrain_config().model.skip_centring == ModelConfig.skip_centring
    assert _pretrain_config("--preset", "transfer", "--skip-centring").model.skip_centring
    assert not _pretrain_config("--no-skip-centring").model.skip_centring


def test_panel_skip_flag_overrides_the_preset() -> None:
    assert not _pretrain_config("--preset", "transfer").model.panel_skip
    given = _pretrain_config("--preset", "transfer", "--panel-skip").model
    assert given.panel_skip and not given.skip_centring
    assert not _pretrain_config("--skip-centring", "--no-panel-skip").model.panel_skip
    shared = _pretrain_config("--panel-skip", "--panel-skip-shared").model
    assert shared.panel_skip and shared.panel_skip_shared
    assert not _pretrain_config("--panel-skip").model.panel_skip_shared


def test_transfer_preset_and_flags_that_override_it() -> None:
    model = _pretrain_config("--preset", "transfer").model
    assert model == ModelConfig.transfer()
    assert model.embedding_loss_weight == 1.0 and model.depth_normalize and model.slide_centering
    assert model.library_target == 100.0 and model.contrastive_loss_weight == 1.0
    assert model.embedding_layer == 1 and model.embedding_dim == 512 and model.dropout == 0.1
    assert (
        dataclasses.replace(
            model,
            embedding_layer=ModelConfig.embedding_layer,
            dropout=ModelConfig.dropout,
            embedding_loss_weight=0.0,
            contrastive_loss_weight=0.0,
            depth_normalize=False,
            slide_centering=False,
            library_target=ModelConfig.library_target,
        )
        == ModelConfig()
    )
    overridden = _pretrain_config(
        "--preset",
        "transfer",
        "--no-slide-centering",
        "--embedding-loss-weight",
        "0.5",
        "--contrastive-loss-weight",
        "0",
        "--embedding-layer",
        "0",
        "--dropout",
        "0.2",
    ).model
    assert not overridden.slide_centering and overridden.embedding_loss_weight == 0.5
    assert overridden.embedding_layer == 0 and _pretrain_config().model.embedding_layer == 0
    assert overridden.contrastive_loss_weight == 0.0
    assert overridden.dropout == 0.2 and _pretrain_config().model.dropout == ModelConfig.dropout
    assert overridden.depth_normalize  # still the preset's


def test_weight_decay_is_the_presets_unless_given() -> None:
    assert _pretrain_config().train.weight_decay == TrainConfig.weight_decay == 1e-4
    assert _pretrain_config("--preset", "reference").train.weight_decay == 1e-4
    assert _pretrain_config("--preset", "transfer") == SageFMConfig.transfer()
    transfer = _pretrain_config("--preset", "transfer", "--seed", "3").train
    assert transfer == TrainConfig.transfer(seed=3) and transfer.weight_decay == 0.0
    given = _pretrain_config("--preset", "transfer", "--weight-decay", "1e-3").train
    assert given.weight_decay == 1e-3
    assert _pretrain_config("--weight-decay", "0").train.weight_decay == 0.0


def test_lr_schedule_is_the_presets_unless_given() -> None:
    assert _pretrain_config().train.lr_schedule == TrainConfig.lr_schedule == "cosine"
    assert _pretrain_config("--preset", "transfer").train.lr_schedule == "plateau"
    reference = _pretrain_config("--preset", "reference").train
    assert reference == TrainConfig.reference() and reference.lr_schedule == "plateau"
    given = _pretrain_config("--preset", "transfer", "--lr-schedule", "cosine").train
    assert given.lr_schedule == "cosine" and given.weight_decay == 0.0
    assert _pretrain_config("--lr-schedule", "plateau").train.lr_schedule == "plateau"


def test_decoupled_weight_decay_flag() -> None:
    assert _pretrain_config("--decoupled-weight-decay").train.decoupled_weight_decay
    assert not _pretrain_config().train.decoupled_weight_decay


def test_every_training_flag_sets_its_field() -> None:
    changed = {
        "max_epochs": 3,
        "seed": 7,
        "batch_size": 5,
        "learning_rate": 0.5,
        "accelerator": "cpu",
        "devices": 2,
        "num_nodes": 2,
        "strategy": "ddp",
        "precision": "bf16-mixed",
        "num_workers": 1,
        "limit_train_batches": 4,
        "centre_block_size": 6,
        "slides_per_group": 2,
        "checkpoint_every_n_steps": 9,
    }
    assert set(changed) == set(TRAIN_FLAGS)
    changed["weight_decay"] = 0.25  # a flag of its own: its default is the preset's
    argv = [x for name, v in changed.items() for x in (f"--{name.replace('_', '-')}", str(v))]
    config = _pretrain_config(
        *argv, "--hidden-sizes", "8", "4", "--max-genes", "11", "--vocabulary-ranking", "per_slide"
    )
    assert config.train == dataclasses.replace(TrainConfig(), **changed)
    assert config.model.hidden_sizes == (8, 4) and config.data.max_genes == 11
    assert config.data.vocabulary_ranking == "per_slide"
    assert _pretrain_config().data.vocabulary_ranking == "mean"
    assert _pretrain_config("--devices", "auto").train.devices == "auto"


def test_help_shows_the_config_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["pretrain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"epochs at most (default: {TrainConfig.max_epochs})" in text
    assert f"(default: {DataConfig.max_genes})" in text
    assert "(default 1024 512 512 512 1024)" in text
    assert "(default: None)" not in text and "(default: False)" not in text


def test_prepare_builds_the_vocabulary_with_the_data_config_cap() -> None:
    args = build_parser().parse_args(["prepare", "--input", "i", "--output", "o"])
    assert args.max_genes == DataConfig.max_genes and args.vocabulary is None
    with pytest.raises(SystemExit):  # a given vocabulary and a cap exclude each other
        build_parser().parse_args(
            ["prepare", "--input", "i", "--output", "o", "--vocabulary", "v", "--max-genes", "3"]
        )


def test_library_target_flag() -> None:
    assert _pretrain_config().model.library_target == ModelConfig.library_target
    assert _pretrain_config("--library-target", "1000").model.library_target == 1000.0


def test_slide_library_target_flag() -> None:
    assert not _pretrain_config().model.slide_library_target
    flags = ("--depth-normalize", "--slide-library-target")
    assert _pretrain_config(*flags).model.slide_library_target
    with pytest.raises(ConfigError, match="needs depth_normalize"):
        _pretrain_config("--no-depth-normalize", "--slide-library-target")


def test_slide_output_target_flag() -> None:
    assert not _pretrain_config().model.slide_output_target
    given = _pretrain_config("--preset", "transfer", "--slide-output-target").model
    assert given.slide_output_target and given.library_target == 100.0  # the input's stays
    with pytest.raises(ConfigError, match="needs depth_normalize"):
        _pretrain_config("--no-depth-normalize", "--slide-output-target")
    with pytest.raises(ConfigError, match="drop slide_output_target"):
        _pretrain_config("--depth-normalize", "--slide-library-target", "--slide-output-target")


def test_output_activation_flag() -> None:
    assert _pretrain_config().model.output_activation == "relu"
    given = _pretrain_config("--preset", "transfer", "--output-activation", "softplus").model
    assert given.output_activation == "softplus" and given.library_target == 100.0


def test_centre_residual_flag() -> None:
    assert not _pretrain_config().model.centre_residual
    given = _pretrain_config("--preset", "transfer", "--centre-residual").model
    assert given.centre_residual and given.dropout == 0.1  # the preset's otherwise


@pytest.mark.parametrize(
    ("command", "rate"),
    [
        ("learn-panels", PANEL_STAGE_LEARNING_RATE),
        ("learn-decoder", DECODER_STAGE_LEARNING_RATE),
        ("adapt", None),  # the model's own rate
    ],
)
def test_a_stage_has_its_own_learning_rate(command: str, rate: float | None) -> None:
    argv = [command, "--model", "m", "--data", "x.h5ad", "--output", "o"]
    assert build_parser().parse_args(argv).learning_rate == rate
    again = build_parser().parse_args([*argv, "--learning-rate", "3e-4"])
    assert again.learning_rate == 3e-4
