"""Model directories: config (JSON), vocabulary (TSV), weights (safetensors), checksums (JSON).

Nothing is unpickled: weights are read with safetensors, everything else is text. Each file's
SHA-256 is recorded at save time and checked at load time, so a tampered or half-copied directory
is refused. A directory is written under a temporary name and renamed into place, so an
interrupted save leaves the previous good directory untouched.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from sagefm._constants import Files
from sagefm.config import SageFMConfig
from sagefm.errors import CheckpointError, InputDataError
from sagefm.io.write import staged_directory, write_text_atomic

_MODEL_FILES = (Files.CONFIG, Files.VOCABULARY, Files.WEIGHTS)
_VOCABULARY_HEADER = ("symbol", "gene_id")


def write_vocabulary_file(path: Path, genes: Sequence[tuple[str, str]]) -> None:
    """Write ``symbol<TAB>gene_id`` rows (Ensembl id or "") under a header, atomically."""
    text = io.StringIO()
    writer = csv.writer(text, delimiter="\t", lineterminator="\n")
    writer.writerow(_VOCABULARY_HEADER)
    writer.writerows(genes)
    write_text_atomic(Path(path), text.getvalue())


def read_vocabulary_file(path: Path) -> list[tuple[str, str]]:
    """(symbol, gene id or "") per gene of a vocabulary TSV: a model's or corpus's
    ``vocabulary.tsv``, or a user's list with a ``symbol`` header and an optional ``gene_id``
    column. Raises `InputDataError` naming the file when it cannot be read as one."""
    try:
        with Path(path).open(newline="") as handle:
            rows = list(csv.reader(handle, delimiter="\t"))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputDataError(f"cannot read the vocabulary {path}: {exc}") from exc
    body = [r for r in rows[1:] if r]
    if not rows or rows[0][:1] != ["symbol"] or any(len(r) > 2 for r in body):
        raise InputDataError(
            f"{path} is not a sagefm vocabulary: expected a header 'symbol<TAB>gene_id' and "
            "one gene (symbol, optional Ensembl id) per line"
        )
    return [(r[0], r[1] if len(r) > 1 else "") for r in body]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _non_finite(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of floating-point tensors holding NaN or infinite values."""
    return sorted(
        name
        for name, value in tensors.items()
        if value.is_floating_point() and not bool(torch.isfinite(value).all())
    )


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
    bad = _non_finite(tensors)
    if bad:
        raise CheckpointError(
            f"refusing to save a model with NaN or infinite weights ({', '.join(bad[:5])}) to "
            f"{directory}: training diverged; lower the learning rate or check the input"
        )
    with staged_directory(directory) as staging:
        config.save(staging / Files.CONFIG)
        write_vocabulary_file(staging / Files.VOCABULARY, genes)
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
    return directory


def resolve_model_dir(path: Path) -> Path:
    """A model directory, or a pretraining output directory (then its ``best/``)."""
    if (path / Files.CONFIG).is_file() and (path / Files.WEIGHTS).is_file():
        return path
    if (path / "best" / Files.WEIGHTS).is_file():
        return path / "best"
    if not path.exists():
        raise CheckpointError(f"no model at {path}: the path does not exist")
    raise CheckpointError(
        f"{path} is not a sagefm model: expected {Files.CONFIG} and {Files.WEIGHTS} in it (or in best/)"
    )


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
        if not isinstance(recorded, dict):
            raise TypeError(f'"sha256" is a {type(recorded).__name__}, not a JSON object')
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
    try:
        genes = read_vocabulary_file(directory / Files.VOCABULARY)
    except InputDataError as exc:
        raise CheckpointError(str(exc)) from exc
    if config.model.n_genes != len(genes):
        raise CheckpointError(
            f"{directory}: config says {config.model.n_genes} genes, vocabulary has {len(genes)}"
        )
    try:
        tensors = load_file(str(directory / Files.WEIGHTS))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{directory / Files.WEIGHTS} is not a readable safetensors file: {exc}"
        ) from exc
    bad = _non_finite(tensors)
    if bad:
        raise CheckpointError(
            f"{directory / Files.WEIGHTS} holds NaN or infinite weights ({', '.join(bad[:5])}); "
            "the model would give NaN results: do not use this checkpoint"
        )
    return config, genes, tensors
