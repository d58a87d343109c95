"""One family of errors for users: each says what is wrong and what to do about it."""

from __future__ import annotations


class SageFMError(Exception):
    """Base class of every error sagefm raises for bad input, missing files or bad checkpoints."""


class InputDataError(SageFMError, ValueError):
    """The data given (AnnData, counts, coordinates, gene names) cannot be used as it is."""


class ReaderError(SageFMError, OSError):
    """A file or folder is missing, unreadable or not in a format sagefm knows."""


class CheckpointError(SageFMError):
    """A model directory is missing, incomplete, inconsistent or has been tampered with."""


class ConfigError(SageFMError, ValueError):
    """A configuration value is out of range or inconsistent."""


class OutputError(SageFMError, OSError):
    """An output path cannot be written."""


class TrainingError(SageFMError, RuntimeError):
    """Training cannot continue (e.g. a non-finite loss)."""


class TrainingInterrupted(TrainingError):
    """SIGTERM or SIGINT stopped training after saving a resumable checkpoint.

    ``signum`` is the signal's number; the CLI exits with 128 + signum (143 for SIGTERM, 130 for
    SIGINT), the shell's code for a process ended by that signal.
    """

    def __init__(self, message: str, *, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
