"""The pretraining entry point: AnnData slides in, a model directory out."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import platform
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import lightning as L
import numpy as np
import scipy.sparse as sp
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from sagefm._constants import Files
from sagefm.config import ModelConfig, SageFMConfig, TrainConfig
from sagefm.data.corpus import Corpus, held_out_slides
from sagefm.data.expression import normalize_expression
from sagefm.data.inference import csr_tensor
from sagefm.data.slides import (
    PreparedSlide,
    observed_gene_stats,
    prepare_slide,
    slide_library,
    slide_name,
    spot_coordinates_um,
)
from sagefm.data.vocabulary import GeneVocabulary, build_vocabulary
from sagefm.errors import InputDataError, OutputError
from sagefm.io.write import write_text_atomic
from sagefm.nn.gcn import SageGCN
from sagefm.nn.inputs import network_scale
from sagefm.train.callbacks import EpochTimer, ExportModelDirs
from sagefm.train.datamodule import SubgraphDataModule
from sagefm.train.memory import reusing_freed_memory
from sagefm.train.module import PretrainingModule
from sagefm.train.precision import resolve_precision
from sagefm.train.resume import (
    CheckpointOnInterrupt,
    ResumeCheckpointIO,
    interruptible,
    keeping_metrics,
)

logger = logging.getLogger(__name__)


#: a single slide's validation block holds at least this many spots: a few full subgraphs
MIN_VALIDATION_SPOTS = 50


@dataclass(frozen=True)
class PretrainResult:
    """Where a pretraining run wrote its outputs, and what it measured."""

    output: Path
    best_dir: Path
    last_dir: Path
    best_val_loss: float
    best_epoch: int
    epochs_run: int
    wall_time_s: float
    peak_memory_mb: float
    train_slides: list[str]
    val_slides: list[str]
    #: each epoch's training wall time, validation excluded (`EpochTimer`); this run's epochs only
    epoch_train_s: list[float] = dataclasses.field(default_factory=list)


def split_validation(
    slides: Sequence[ad.AnnData], val_fraction: float, seed: int
) -> tuple[list[ad.AnnData], list[ad.AnnData]]:
    """Hold out whole slides for validation (`held_out_slides`); with a single slide, a spatial block.

    The single-slide fallback holds out the ``val_fraction`` (at least 10%, and at least
    `MIN_VALIDATION_SPOTS` unless that is over half the slide) of spots with the largest x
    coordinate: a contiguous region, so validation centres are not interleaved with training ones.
    """
    if len(slides) >= 2:
        train, val = held_out_slides(len(slides), val_fraction, seed)
        return [slides[i] for i in train], [slides[i] for i in val]
    only = slides[0]
    x = spot_coordinates_um(only)[:, 0]
    share = max(val_fraction, 0.1, min(0.5, MIN_VALIDATION_SPOTS / only.n_obs))
    cut = np.quantile(x, 1.0 - share)
    logger.warning(
        "only one slide given: validating on the spots with x > %.0f µm (%d of %d spots)",
        cut,
        int((x > cut).sum()),
        only.n_obs,
    )
    return [only[x <= cut].copy()], [only[x > cut].copy()]


@dataclass(frozen=True)
class _Inputs:
    """What a run trains on: prepared slides, the vocabulary, and the configuration as run."""

    train: Sequence[PreparedSlide]
    val: Sequence[PreparedSlide]
    vocabulary: GeneVocabulary
    config: SageFMConfig


def _training_inputs(
    slides: Sequence[ad.AnnData] | Corpus,
    val_slides: Sequence[ad.AnnData] | None,
    vocabulary: GeneVocabulary | None,
    config: SageFMConfig,
) -> _Inputs:
    """Split, fix the vocabulary and the data config, prepare: the same steps for both sources.

    A `Corpus` fixes the vocabulary and the neighbourhoods it was prepared with (only the masking
    of ``config.data`` applies); given ``val_slides`` are prepared with that vocabulary.
    """
    train, val = _split(slides, val_slides, config.train)
    if isinstance(train, Corpus):
        if vocabulary is not None and vocabulary != train.vocabulary:
            raise InputDataError(
                f"the corpus {train.path} fixes its vocabulary ({len(train.vocabulary)} genes); "
                "do not pass another one (prepare the corpus with `sagefm prepare --vocabulary`)"
            )
        vocabulary = train.vocabulary
        config = dataclasses.replace(
            config, data=dataclasses.replace(train.data_config, **config.data.masking())
        )
    elif vocabulary is None:
        vocabulary = _build_vocabulary(train, config)
    # as run: the vocabulary's size and the precision "auto" resolves to on this machine
    precision = resolve_precision(config.train.precision, config.train.accelerator)
    config = dataclasses.replace(
        config,
        model=dataclasses.replace(config.model, n_genes=len(vocabulary)),
        train=dataclasses.replace(config.train, precision=precision),
    )
    inputs = _Inputs(
        train=_prepare_all(train, vocabulary, config, "train"),
        val=_prepare_all(val, vocabulary, config, "val"),
        vocabulary=vocabulary,
        config=config,
    )
    logger.info(
        "pretraining on %d slides (%d spots), validating on %d (%d spots), %d genes",
        len(inputs.train),
        sum(s.n_spots for s in inputs.train),
        len(inputs.val),
        sum(s.n_spots for s in inputs.val),
        len(vocabulary),
    )
    return inputs


def _split(
    slides: Sequence[ad.AnnData] | Corpus,
    val_slides: Sequence[ad.AnnData] | None,
    train: TrainConfig,
) -> tuple[Sequence[ad.AnnData] | Corpus, Sequence[ad.AnnData] | Corpus]:
    """The given validation slides, or whole slides held out by ``train.val_fraction``."""
    if val_slides:
        return slides, list(val_slides)
    if isinstance(slides, Corpus):
        return slides.split(train.val_fraction, train.seed)
    return split_validation(slides, train.val_fraction, train.seed)


def _build_vocabulary(slides: Sequence[ad.AnnData], config: SageFMConfig) -> GeneVocabulary:
    expression = [
        normalize_expression(a, normalized_input=config.data.normalized_input) for a in slides
    ]
    return build_vocabulary(
        slides,
        expression,
        min_slide_fraction=config.data.min_slide_fraction,
        max_genes=config.data.max_genes,
        ranking=config.data.vocabulary_ranking,
    )


def _prepare_all(
    slides: Sequence[ad.AnnData] | Corpus,
    vocabulary: GeneVocabulary,
    config: SageFMConfig,
    prefix: str,
) -> Sequence[PreparedSlide]:
    """AnnData slides prepared over ``vocabulary``; a corpus as it is (it streams from disk)."""
    if isinstance(slides, Corpus):
        return slides
    return [
        prepare_slide(adata, vocabulary, config.data, name=slide_name(adata, f"{prefix}{i}"))[0]
        for i, adata in enumerate(slides)
    ]


def _checkpointing(output: Path, train: TrainConfig) -> list[L.Callback]:
    """Resumable state each epoch (and every N steps if asked), and early stopping."""
    callbacks: list[L.Callback] = [
        ModelCheckpoint(
            dirpath=output / Files.RESUME,
            filename="epoch{epoch}",
            save_last=True,
            save_top_k=0,
            enable_version_counter=False,  # a resumed run overwrites last.ckpt, not last-v1.ckpt
        ),
    ]
    if train.early_stopping_patience:
        callbacks.append(EarlyStopping(monitor="val_loss", patience=train.early_stopping_patience))
    if train.checkpoint_every_n_steps:  # mid-epoch resumable state, so a killed run loses little
        callbacks.append(
            ModelCheckpoint(
                dirpath=output / Files.RESUME,
                save_last=True,
                save_top_k=0,
                every_n_train_steps=train.checkpoint_every_n_steps,
            )
        )
    return callbacks


def _trainer(
    train: TrainConfig, output: Path, callbacks: list[L.Callback], progress: bool
) -> L.Trainer:
    return L.Trainer(
        max_epochs=train.max_epochs,
        accelerator=train.accelerator,
        devices=train.devices,
        num_nodes=train.num_nodes,
        strategy=train.strategy,
        precision=train.precision,  # type: ignore[arg-type]
        gradient_clip_val=train.gradient_clip_norm or None,
        limit_train_batches=train.limit_train_batches or None,
        logger=CSVLogger(save_dir=output, name="", version=""),
        callbacks=callbacks,
        plugins=[ResumeCheckpointIO()],
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=10,
        deterministic=False,
        use_distributed_sampler=False,  # CentreSampler shards the centres across ranks itself
    )


def _write_run_record(result: PretrainResult, config: SageFMConfig) -> None:
    """``run.json``: the result, the command line, the seed, library versions and the config."""
    record = {
        **{
            k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(result).items()
        },
        "command": sys.argv,
        "seed": config.train.seed,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "lightning": L.__version__,
        },
        "config": config.to_dict(),
    }
    write_text_atomic(result.output / "run.json", json.dumps(record, indent=2, default=str))


def _starting_stats(
    train: Sequence[PreparedSlide], config: SageFMConfig
) -> tuple[np.ndarray, np.ndarray]:
    """The training genes' means and SDs on the scale the network reads and predicts at
    (depth-normalised with ``ModelConfig.depth_normalize``): the head's bias, the z-scores."""
    transform = (
        functools.partial(_depth_normalized, config=config.model)
        if config.model.depth_normalize
        else None
    )
    return observed_gene_stats(train, config.model.n_genes, transform=transform)


def _depth_normalized(slide: PreparedSlide, config: ModelConfig) -> sp.csr_matrix:
    """(n, V) a slide's log1p values as the network reads them (`sagefm.nn.inputs.network_scale`,
    at the slide's median library with ``ModelConfig.slide_library_target``)."""
    values = slide.values
    data = network_scale(csr_tensor(values), config, slide_library(slide, config)).values()
    return sp.csr_matrix((data.numpy(), values.indices, values.indptr), shape=values.shape)


def _check_start(
    start_from: SageGCN | None, config: SageFMConfig, vocabulary: GeneVocabulary | None
) -> None:
    """Refuse a starting network the run could not continue, before anything is read or written:
    it needs the run's vocabulary and network configuration."""
    if start_from is None:
        return
    if vocabulary is None or start_from.config != dataclasses.replace(
        config.model, n_genes=len(vocabulary)
    ):
        raise InputDataError(
            "start_from's network configuration or vocabulary differs from the run's: adapt a "
            "model with its own configuration and vocabulary"
        )


def pretrain(
    slides: Sequence[ad.AnnData] | Corpus,
    *,
    output: Path | str,
    val_slides: Sequence[ad.AnnData] | None = None,
    config: SageFMConfig | None = None,
    vocabulary: GeneVocabulary | None = None,
    progress: bool = True,
    resume: bool = False,
    start_from: SageGCN | None = None,
) -> PretrainResult:
    """Pretrain SAGE-FM by masked-gene reconstruction and write ``output/`` (see README).

    ``slides`` are raw-count AnnData with coordinates, or a prepared `Corpus` (`sagefm prepare`)
    that streams from disk and brings its own vocabulary. ``val_slides`` (AnnData) are held out
    whole; by default `split_validation` / `Corpus.split` hold out ``val_fraction`` of the slides.
    The vocabulary is built from the training slides unless given. Writes ``best/`` and ``last/``
    model directories, ``metrics.csv`` (train/validation loss per epoch), ``resume/last.ckpt``
    (resumable Lightning state) and ``run.json`` (what ran, how long, peak memory).

    ``start_from``: continue from these weights (and input scaling) instead of a fresh start, as
    `SageFM.adapt` does; its configuration must be ``config.model`` and ``vocabulary`` its genes.
    """
    started = time.perf_counter()
    if not slides:
        raise InputDataError("pretraining needs at least one slide")
    config = config or SageFMConfig()
    _check_start(start_from, config, vocabulary)
    output = Path(output)
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output directory {output}: {exc}") from exc
    L.seed_everything(config.train.seed, workers=True, verbose=False)

    # 1. inputs
    inputs = _training_inputs(slides, val_slides, vocabulary, config)
    config = inputs.config
    config.save(output / Files.CONFIG)
    ckpt = output / Files.RESUME / "last.ckpt"
    resuming = resume and ckpt.is_file()
    if resume and not resuming:
        logger.warning("resume requested but %s does not exist: training from the start", ckpt)
    # The starting point needs one pass over the training data; a resumed run restores it (the
    # input scaling is part of the state), so it skips that pass.
    fresh = not resuming and start_from is None
    module = PretrainingModule(
        config,
        [s.name for s in inputs.train],
        gene_stats=_starting_stats(inputs.train, config) if fresh else None,
    )
    if start_from is not None and not resuming:
        module.network.load_state_dict(start_from.state_dict())

    # 2. callbacks: model directories, checkpoint on SIGTERM/SIGINT, resumable state
    exporter = ExportModelDirs(output, inputs.vocabulary)
    on_interrupt = CheckpointOnInterrupt(ckpt)
    timer = EpochTimer()
    callbacks = [exporter, on_interrupt, timer, *_checkpointing(output, config.train)]
    # 3. trainer
    trainer = _trainer(config.train, output, callbacks, progress)
    # SIGTERM/SIGINT: checkpoint, then TrainingInterrupted; a resumed run keeps the earlier metrics
    with (
        interruptible(on_interrupt),
        keeping_metrics(output / Files.METRICS, resume),
        reusing_freed_memory(config.train.reuse_freed_memory),
    ):
        trainer.fit(
            module,
            datamodule=SubgraphDataModule(inputs.train, inputs.val, config),
            ckpt_path=str(ckpt) if resuming else None,
        )

    # 4. run record
    result = PretrainResult(
        output=output,
        best_dir=output / "best",
        last_dir=output / Files.LAST,
        best_val_loss=exporter.best_val_loss,
        best_epoch=exporter.best_epoch,
        epochs_run=trainer.current_epoch,
        wall_time_s=time.perf_counter() - started,
        peak_memory_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        train_slides=[s.name for s in inputs.train],
        val_slides=[s.name for s in inputs.val],
        epoch_train_s=timer.epoch_train_s,
    )
    if trainer.is_global_zero:
        _write_run_record(result, config)
    return result
