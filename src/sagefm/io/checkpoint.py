"""Model directories: config (JSON), vocabulary (TSV), weights (safetensors), checksums (JSON).

Nothing is unpickled: weights are read with safetensors, everything else is text. Each file's
SHA-256 is recorded at save time and checked at load time, so a tampered or half-copied directory
is refused. A directory is written under a temporary name and renamed into place, so an
interrupted save leaves the previous good directory untouched.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from sagefm._constants import Files
from sagefm.config import SageFMConfig
from sagefm.errors import CheckpointError, OutputError

_MODEL_FILES = (Files.CONFIG, Files.VOCABULARY, Files.WEIGHTS)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_model_dir(
    directory: Path,
    config: SageFMConfig,
    genes: Sequence[tuple[str, str]],
    tensors: Mapping[str, torch.Tensor],
    *,
    extra: Mapping[str, object] | None = None,
) -> Path:
    """Write a model directory atomically; ``genes`` are (symbol, Ensembl id or "") in vocabulary order."""
    directory = Path(directory)
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    except OSError as exc:
        raise OutputError(f"cannot write a model directory at {directory}: {exc}") from exc
    try:
        config.save(staging / Files.CONFIG)
        with (staging / Files.VOCABULARY).open("w", newline="") as handle:
            writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
            writer.writerow(["symbol", "gene_id"])
            writer.writerows(genes)
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
            str(staging / Files.WEIGHTS),
        )
        checksums = {name: _sha256(staging / name) for name in _MODEL_FILES}
        (staging / Files.CHECKSUMS).write_text(
            json.dumps(
                {"sha256": checksums, **(dict(extra) if extra else {})}, indent=2, sort_keys=True
            )
        )
        _swap_into_place(staging, directory)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise OutputError(f"cannot write a model directory at {directory}: {exc}") from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def _swap_into_place(staging: Path, directory: Path) -> None:
    """Rename ``staging`` to ``directory``; an existing directory is kept until the new one is in place."""
    if not directory.exists():
        os.replace(staging, directory)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old-", dir=directory.parent))
    retired.rmdir()
    os.replace(directory, retired)
    os.replace(staging, directory)
    shutil.rmtree(retired, ignore_errors=True)


def load_model_dir(
    directory: Path,
) -> tuple[SageFMConfig, list[tuple[str, str]], dict[str, torch.Tensor]]:
    """Read and verify a model directory. Raises `CheckpointError` naming what is wrong."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"no model directory at {directory}")
    missing = [n for n in (*_MODEL_FILES, Files.CHECKSUMS) if not (directory / n).is_file()]
    if missing:
        raise CheckpointError(
            f"{directory} is not a complete sagefm model directory: missing {missing}"
        )
    try:
        recorded = json.loads((directory / Files.CHECKSUMS).read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{directory / Files.CHECKSUMS} is unreadable: {exc}") from exc
    for name in _MODEL_FILES:
        if recorded.get(name) != _sha256(directory / name):
            raise CheckpointError(
                f"{directory / name} does not match the checksum recorded when the model was saved: "
                "the file was modified or is incomplete; do not use this checkpoint"
            )
    try:
        config = SageFMConfig.load(directory / Files.CONFIG)
    except Exception as exc:
        raise CheckpointError(f"bad configuration in {directory}: {exc}") from exc
    with (directory / Files.VOCABULARY).open(newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    if not rows or rows[0] != ["symbol", "gene_id"] or any(len(r) != 2 for r in rows[1:]):
        raise CheckpointError(f"{directory / Files.VOCABULARY} is not a sagefm vocabulary")
    try:
        tensors = load_file(str(directory / Files.WEIGHTS))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{directory / Files.WEIGHTS} is not a readable safetensors file: {exc}"
        ) from exc
    return config, [(r[0], r[1]) for r in rows[1:]], tensors
