"""The resumable training state: saved on SIGTERM/SIGINT, written atomically, read without pickle code.

Lightning already turns SIGTERM (what schedulers such as SLURM or Kubernetes send before killing a
job) into `SIGTERMException` at the end of the current batch. `CheckpointOnInterrupt` treats
SIGINT (Ctrl+C) the same way, saves ``resume/last.ckpt`` when either arrives, and `interruptible`
turns Lightning's exit into `TrainingInterrupted`, so ``sagefm pretrain ... --resume`` continues.

`ResumeCheckpointIO` writes checkpoints to a temporary file beside the target and renames it into
place (Lightning's own writer stages in the system temp folder and *moves* the file, which is a
copy, not a rename, across file systems), and reads them with ``torch.load(weights_only=True)``:
tensors and plain containers only, so a crafted ``.ckpt`` cannot run code.
"""

from __future__ import annotations

import logging
import math
import pickle
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
import pandas as pd
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from sagefm.errors import CheckpointError, TrainingInterrupted
from sagefm.io.write import atomic_path, write_text_atomic

logger = logging.getLogger(__name__)


class ResumeCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written atomically and loaded with ``weights_only=True``."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        with atomic_path(Path(path)) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
            raise CheckpointError(
                f"cannot resume from {path}: it is not a sagefm training checkpoint (only tensors "
                f"and plain values are loaded, nothing that runs code; {type(exc).__name__}: "
                f"{str(exc)[:300]}). Delete it to start again, or resume from your own run"
            ) from exc


class CheckpointOnInterrupt(L.Callback):
    """Save the resumable state to ``path`` when SIGTERM or SIGINT stops training.

    SIGINT is deferred to the end of the current batch, as Lightning does for SIGTERM, so the
    checkpoint never holds a half-applied optimiser step; a second Ctrl+C stops at once.

    A SIGTERM that lands during (or just before) an epoch's validation takes effect when that
    validation ends. Lightning would stop after the current validation batch, and its resume then
    skips the rest of that validation, so the epoch has no ``val_loss`` and early stopping fails.
    ``received`` names the signal that stopped training (None if none did).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.received: signal.Signals | None = None
        self._sigint_requested = False
        self._validating = False
        self._deferred_sigterm: Callable[[], None] | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self._sigint_requested:
            raise KeyboardInterrupt
        self._sigint_requested = True
        logger.warning(
            "SIGINT: stopping after this batch and saving a checkpoint (Ctrl+C again to stop now)"
        )

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        """Lightning's SIGTERM handler, held back while an epoch's validation runs."""
        lightning_handler = self._previous[signal.SIGTERM]
        if self._validating:
            logger.warning("SIGTERM: stopping when this validation ends")
            self._deferred_sigterm = lambda: lightning_handler(signum, frame)
        else:
            lightning_handler(signum, frame)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._on_sigint)
            if callable(signal.getsignal(signal.SIGTERM)):  # Lightning's handler, to wrap
                self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._on_sigterm)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if self._sigint_requested:
            raise KeyboardInterrupt

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn != TrainerFn.FITTING:
            return
        self._validating = True
        if trainer.received_sigterm:  # arrived in the training batch before this validation
            trainer._signal_connector.received_sigterm = False
            self._deferred_sigterm = partial(
                setattr, trainer._signal_connector, "received_sigterm", True
            )

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validating = False
        deferred, self._deferred_sigterm = self._deferred_sigterm, None
        if deferred is not None:  # the fit loop raises it at the end of this epoch
            deferred()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_handlers()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._restore_handlers()
        if isinstance(exception, SIGTERMException):
            self.received = signal.SIGTERM
        elif isinstance(exception, KeyboardInterrupt):
            self.received = signal.SIGINT
        else:  # a real error: the state that caused it is not worth resuming from
            return
        trainer.save_checkpoint(self.path)
        logger.warning(
            "%s: saved the training state at epoch %d, step %d to %s",
            self.received.name,
            trainer.current_epoch,
            trainer.global_step,
            self.path,
        )

    def _restore_handlers(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)
            self._previous = {}


@contextmanager
def interruptible(callback: CheckpointOnInterrupt) -> Iterator[None]:
    """Run ``trainer.fit`` inside: an interrupt becomes `TrainingInterrupted` (Lightning exits).

    Lightning answers Ctrl+C with ``sys.exit(1)`` after ignoring SIGINT for the rest of the
    process; the SIGINT handler in place before training is restored here.
    """
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    try:
        yield
    except SystemExit as exc:
        if callback.received is None:
            raise
        raise TrainingInterrupted(
            f"training stopped by {callback.received.name}; its state is in {callback.path}: run "
            "the same command with --resume (Python: resume=True) to continue",
            signum=int(callback.received),
        ) from exc
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


@contextmanager
def keeping_metrics(metrics_csv: Path, resume: bool) -> Iterator[None]:
    """Keep the rows of ``metrics.csv`` written before a resume (Lightning's CSVLogger deletes it).

    When the block ends, the earlier rows logged before the first step of the resumed run are put
    back in front of the new ones.
    """
    earlier = pd.read_csv(metrics_csv) if resume and metrics_csv.is_file() else None
    try:
        yield
    finally:
        if earlier is not None and "step" in earlier:
            later = pd.read_csv(metrics_csv) if metrics_csv.is_file() else earlier.iloc[:0]
            first_step = later["step"].min() if len(later) else math.inf
            merged = pd.concat([earlier[earlier["step"] < first_step], later], ignore_index=True)
            write_text_atomic(metrics_csv, merged.to_csv(index=False))
