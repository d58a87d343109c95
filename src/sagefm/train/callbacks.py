"""Callbacks: export best/last weights as safetensors model directories (rank 0 only), and time
each epoch's training."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import lightning as L

from sagefm.data.vocabulary import GeneVocabulary
from sagefm.io.checkpoint import save_model_dir
from sagefm.train.module import PretrainingModule

logger = logging.getLogger(__name__)


class ExportModelDirs(L.Callback):
    """After each validation, write ``best/`` when the validation loss improved; ``last/`` every epoch.

    These directories are what `sagefm.load` reads (safetensors + JSON). Lightning's own ``.ckpt``
    (optimizer state, for resuming) is kept separately by `ModelCheckpoint`.
    """

    def __init__(self, output: Path, vocabulary: GeneVocabulary) -> None:
        self.output = Path(output)
        self.genes = list(zip(vocabulary.symbols, vocabulary.gene_ids, strict=True))
        self.best_val_loss = math.inf
        self.best_epoch = -1

    def _save(
        self, name: str, trainer: L.Trainer, module: PretrainingModule, val_loss: float
    ) -> None:
        if not trainer.is_global_zero:
            return
        save_model_dir(
            self.output / name,
            module.config,
            self.genes,
            module.network.state_dict(),
            extra={
                "epoch": trainer.current_epoch,
                "global_step": trainer.global_step,
                "val_loss": val_loss,
            },
        )

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metric = trainer.callback_metrics.get("val_loss")
        val_loss = float(metric) if metric is not None else math.nan
        assert isinstance(pl_module, PretrainingModule)
        if val_loss < self.best_val_loss:
            self.best_val_loss, self.best_epoch = val_loss, trainer.current_epoch
            self._save("best", trainer, pl_module, val_loss)
        self._save("last", trainer, pl_module, val_loss)

    def state_dict(self) -> dict[str, Any]:
        return {"best_val_loss": self.best_val_loss, "best_epoch": self.best_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_val_loss = float(state_dict["best_val_loss"])
        self.best_epoch = int(state_dict["best_epoch"])


class EpochTimer(L.Callback):
    """Each epoch's training wall time, validation excluded, and its subgraphs per second.

    Logged per epoch (``epoch_train_s``, ``train_subgraphs_per_s`` in ``metrics.csv``) and kept
    in ``epoch_train_s`` for ``run.json``: the throughput of real training, not an extrapolation
    from a few steps. Lightning runs the epoch's validation before ``on_train_epoch_end``, so its
    time is measured and taken out. Under DDP the figures are rank 0's (its share of the
    epoch's subgraphs). Each epoch is also logged (INFO), with its validation loss: without a
    progress bar it is the only sign of progress.
    """

    def __init__(self) -> None:
        self.epoch_train_s: list[float] = []
        self._started = self._validation_started = 0.0
        self._validation_s = 0.0
        self._subgraphs = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started, self._validation_s, self._subgraphs = time.perf_counter(), 0.0, 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, _: int
    ) -> None:
        self._subgraphs += int(batch.node_index.shape[0])

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validation_started = time.perf_counter()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validation_s += time.perf_counter() - self._validation_started

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seconds = time.perf_counter() - self._started - self._validation_s
        self.epoch_train_s.append(seconds)
        pl_module.log("epoch_train_s", seconds, on_epoch=True, rank_zero_only=True)
        rate = self._subgraphs / seconds
        pl_module.log("train_subgraphs_per_s", rate, on_epoch=True, rank_zero_only=True)
        if trainer.is_global_zero:
            val_loss = trainer.callback_metrics.get("val_loss")
            logger.info(
                "epoch %d/%d: %.1f s of training (%.0f subgraphs/s)%s",
                trainer.current_epoch + 1,
                trainer.max_epochs,
                seconds,
                rate,
                "" if val_loss is None else f", validation loss {float(val_loss):.5f}",
            )
