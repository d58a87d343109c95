"""The pretraining entry point: AnnData slides in, a model directory out."""

from __future__ import annotations

import dataclasses
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
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from sagefm._constants import Files
from sagefm.config import SageFMConfig
from sagefm.data.corpus import Corpus
from sagefm.data.expression import normalize_expression
from sagefm.data.slides import (
    PreparedSlide,
    observed_gene_stats,
    prepare_slide,
    slide_name,
    spot_coordinates_um,
)
from sagefm.data.vocabulary import GeneVocabulary, build_vocabulary
from sagefm.errors import InputDataError, OutputError
from sagefm.io.write import write_text_atomic
from sagefm.train.callbacks import ExportModelDirs
from sagefm.train.datamodule import SubgraphDataModule
from sagefm.train.module import PretrainingModule
from sagefm.train.resume import (
    CheckpointOnInterrupt,
    ResumeCheckpointIO,
    interruptible,
    keeping_metrics,
)

logger = logging.getLogger(__name__)


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


def split_validation(
    slides: Sequence[ad.AnnData], val_fraction: float, seed: int
) -> tuple[list[ad.AnnData], list[ad.AnnData]]:
    """Hold out whole slides for validation (at least one); with a single slide, a spatial block.

    The single-slide fallback holds out the ``val_fraction`` (at least 10%) of spots with the largest
    x coordinate: a contiguous region, so validation centres are not interleaved with training ones.
    """
    if len(slides) >= 2:
        n_val = max(1, round(val_fraction * len(slides)))
        order = np.random.default_rng(seed).permutation(len(slides))
        val_ids = set(order[:n_val].tolist())
        return [s for i, s in enumerate(slides) if i not in val_ids], [
            slides[i] for i in sorted(val_ids)
        ]
    only = slides[0]
    x = spot_coordinates_um(only)[:, 0]
    cut = np.quantile(x, 1.0 - max(val_fraction, 0.1))
    logger.warning(
        "only one slide given: validating on the spots with x > %.0f µm (%d of %d spots)",
        cut,
        int((x > cut).sum()),
        only.n_obs,
    )
    return [only[x <= cut].copy()], [only[x > cut].copy()]


def _prepare_all(
    slides: Sequence[ad.AnnData], vocabulary: GeneVocabulary, config: SageFMConfig, prefix: str
) -> list[PreparedSlide]:
    prepared = []
    for i, adata in enumerate(slides):
        slide, _ = prepare_slide(
            adata, vocabulary, config.data, name=slide_name(adata, f"{prefix}{i}")
        )
        prepared.append(slide)
    return prepared


def pretrain(
    slides: Sequence[ad.AnnData] | Corpus,
    *,
    output: Path | str,
    val_slides: Sequence[ad.AnnData] | None = None,
    config: SageFMConfig | None = None,
    vocabulary: GeneVocabulary | None = None,
    progress: bool = True,
    resume: bool = False,
) -> PretrainResult:
    """Pretrain SAGE-FM by masked-gene reconstruction and write ``output/`` (see README).

    ``slides`` are raw-count AnnData with coordinates; ``val_slides`` are held out whole (default:
    `split_validation`). The vocabulary is built from the training slides unless given. ``slides``
    may instead be a prepared `Corpus` (`sagefm prepare`): its vocabulary is used, whole slides
    are held out by ``val_fraction``, and slides stream from disk. Writes
    ``best/`` and ``last/`` model directories, ``metrics.csv`` (train/validation loss per epoch),
    ``resume/last.ckpt`` (resumable Lightning state) and ``run.json`` (what ran, how long, peak memory).
    """
    config = config or SageFMConfig()
    output = Path(output)
    if not slides:
        raise InputDataError("pretraining needs at least one slide")
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output directory {output}: {exc}") from exc
    started = time.perf_counter()
    L.seed_everything(config.train.seed, workers=True, verbose=False)

    train_prepared: Sequence[PreparedSlide]
    val_prepared: Sequence[PreparedSlide]
    if isinstance(slides, Corpus):
        # A prepared corpus streams from disk; its vocabulary and neighbourhoods are fixed.
        vocabulary = slides.vocabulary
        masks = config.data.masking()
        config = dataclasses.replace(config, data=dataclasses.replace(slides.data_config, **masks))
        train_prepared, val_prepared = slides.split(config.train.val_fraction, config.train.seed)
    else:
        train_list, val_list = (
            (list(slides), list(val_slides))
            if val_slides
            else split_validation(slides, config.train.val_fraction, config.train.seed)
        )
        if vocabulary is None:
            expression = [
                normalize_expression(a, normalized_input=config.data.normalized_input)
                for a in train_list
            ]
            vocabulary = build_vocabulary(
                train_list,
                expression,
                min_slide_fraction=config.data.min_slide_fraction,
                max_genes=config.data.max_genes,
            )
    config = dataclasses.replace(
        config, model=dataclasses.replace(config.model, n_genes=len(vocabulary))
    )
    if not isinstance(slides, Corpus):
        train_prepared = _prepare_all(train_list, vocabulary, config, "train")
        val_prepared = _prepare_all(val_list, vocabulary, config, "val")
    logger.info(
        "pretraining on %d slides (%d spots), validating on %d (%d spots), %d genes",
        len(train_prepared),
        sum(s.n_spots for s in train_prepared),
        len(val_prepared),
        sum(s.n_spots for s in val_prepared),
        len(vocabulary),
    )
    config.save(output / Files.CONFIG)

    ckpt = output / Files.RESUME / "last.ckpt"
    resuming = resume and ckpt.is_file()
    # The starting point needs one pass over the training data; a resumed run restores it (the
    # input scaling is part of the state), so it skips that pass.
    module = PretrainingModule(
        config,
        [s.name for s in train_prepared],
        gene_stats=None if resuming else observed_gene_stats(train_prepared, len(vocabulary)),
    )
    datamodule = SubgraphDataModule(train_prepared, val_prepared, config)
    exporter = ExportModelDirs(output, vocabulary)
    on_interrupt = CheckpointOnInterrupt(ckpt)
    callbacks: list[L.Callback] = [
        exporter,
        on_interrupt,
        ModelCheckpoint(
            dirpath=output / Files.RESUME,
            filename="epoch{epoch}",
            save_last=True,
            save_top_k=0,
            enable_version_counter=False,  # a resumed run overwrites last.ckpt, not last-v1.ckpt
        ),
    ]
    if config.train.early_stopping_patience:
        callbacks.append(
            EarlyStopping(monitor="val_loss", patience=config.train.early_stopping_patience)
        )
    train = config.train
    if train.checkpoint_every_n_steps:  # mid-epoch resumable state, so a killed run loses little
        callbacks.append(
            ModelCheckpoint(
                dirpath=output / Files.RESUME,
                save_last=True,
                save_top_k=0,
                every_n_train_steps=train.checkpoint_every_n_steps,
            )
        )
    trainer = L.Trainer(
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
    if resume and not ckpt.is_file():
        logger.warning("resume requested but %s does not exist: training from the start", ckpt)
    # SIGTERM/SIGINT: checkpoint, then TrainingInterrupted; a resumed run keeps the earlier metrics
    with interruptible(on_interrupt), keeping_metrics(output / Files.METRICS, resume):
        trainer.fit(
            module,
            datamodule=datamodule,
            ckpt_path=str(ckpt) if resuming else None,
        )

    result = PretrainResult(
        output=output,
        best_dir=output / "best",
        last_dir=output / Files.LAST,
        best_val_loss=exporter.best_val_loss,
        best_epoch=exporter.best_epoch,
        epochs_run=trainer.current_epoch,
        wall_time_s=time.perf_counter() - started,
        peak_memory_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        train_slides=[s.name for s in train_prepared],
        val_slides=[s.name for s in val_prepared],
    )
    if trainer.is_global_zero:
        record = {
            **{
                k: (str(v) if isinstance(v, Path) else v)
                for k, v in dataclasses.asdict(result).items()
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
        write_text_atomic(output / "run.json", json.dumps(record, indent=2, default=str))
    return result
