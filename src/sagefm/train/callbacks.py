"""Callbacks: export best/last weights as safetensors model directories (rank 0 only)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L

from sagefm.data.vocabulary import GeneVocabulary
from sagefm.io.checkpoint import save_model_dir
from sagefm.train.module import PretrainingModule


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
