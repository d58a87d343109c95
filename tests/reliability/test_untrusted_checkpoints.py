"""Checkpoints from elsewhere: nothing is unpickled, tampering and inconsistency are refused.

Extends tests/test_model.py (weights tampered, weights of another shape) with crafted files whose
checksums were *recomputed* by the attacker, so only the loaders' own checks stand in the way.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import sagefm
from sagefm.config import ModelConfig, SageFMConfig, TrainConfig
from sagefm.data.vocabulary import GeneVocabulary
from sagefm.datasets import synthetic_tissue
from sagefm.errors import CheckpointError
from sagefm.io.checkpoint import save_model_dir
from sagefm.model import SageFM
from sagefm.nn.gcn import SageGCN
from sagefm.train.resume import ResumeCheckpointIO

GENES = [f"GENE{i}" for i in range(20)]


class Payload:
    """Unpickling this writes ``marker``: what a malicious checkpoint would do with a shell."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., object], tuple[object, ...]]:
        return Path.write_text, (self.marker, "foreign code ran")


def malicious_pickle(path: Path, marker: Path) -> None:
    """A torch.save file whose tensors come with the payload, as a poisoned checkpoint would."""
    torch.save({"state_dict": {"w": torch.zeros(2)}, "payload": Payload(marker)}, path)


def tiny_model() -> SageFM:
    config = SageFMConfig(model=ModelConfig(n_genes=len(GENES), hidden_sizes=(8, 4, 8)))
    torch.manual_seed(0)
    return SageFM(SageGCN(config.model), config, GeneVocabulary.from_genes(GENES))


def reseal(directory: Path) -> None:
    """Recompute checksums.json, as someone tampering with the files on purpose would."""
    path = directory / "checksums.json"
    record = json.loads(path.read_text())
    for name in record["sha256"]:
        record["sha256"][name] = hashlib.sha256((directory / name).read_bytes()).hexdigest()
    path.write_text(json.dumps(record))


def test_the_payload_runs_when_unpickled(tmp_path: Path) -> None:
    """Positive control: the crafted file does run code under a plain torch.load."""
    marker = tmp_path / "marker"
    malicious_pickle(tmp_path / "bad.pt", marker)
    torch.load(tmp_path / "bad.pt", weights_only=False)
    assert marker.read_text() == "foreign code ran"


def test_pickled_weights_are_never_unpickled(tmp_path: Path) -> None:
    directory = tiny_model().save(tmp_path / "model")
    marker = tmp_path / "marker"
    malicious_pickle(directory / "model.safetensors", marker)
    reseal(directory)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        sagefm.load(directory)
    assert not marker.exists()


def test_pickled_resume_checkpoint_is_refused(tmp_path: Path) -> None:
    """`--resume` reads resume/last.ckpt with weights_only=True: a poisoned file cannot run code."""
    marker = tmp_path / "marker"
    output = tmp_path / "run"
    (output / "resume").mkdir(parents=True)
    malicious_pickle(output / "resume" / "last.ckpt", marker)
    with pytest.raises(CheckpointError, match="nothing that runs code"):
        ResumeCheckpointIO().load_checkpoint(output / "resume" / "last.ckpt")
    slides = synthetic_tissue(n_slides=2, grid_rows=6, grid_cols=6, n_genes=40, seed=0)
    config = SageFMConfig(
        model=ModelConfig(hidden_sizes=(8, 4, 8)), train=TrainConfig(max_epochs=1, batch_size=16)
    )
    with pytest.raises(CheckpointError, match="cannot resume"):
        sagefm.pretrain(
            slides[:1],
            val_slides=slides[1:],
            output=output,
            config=config,
            progress=False,
            resume=True,
        )
    assert not marker.exists()


def _edit_config(directory: Path) -> None:
    raw = json.loads((directory / "config.json").read_text())
    raw["model"]["hidden_sizes"] = [8, 4, 4]
    (directory / "config.json").write_text(json.dumps(raw))


def _unknown_config_field(directory: Path) -> None:
    raw = json.loads((directory / "config.json").read_text())
    raw["model"]["exec"] = "import os"
    (directory / "config.json").write_text(json.dumps(raw))


def _drop_weight(directory: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(directory / "model.safetensors")
    tensors.pop(sorted(tensors)[0])
    save_file(tensors, directory / "model.safetensors")


def _nan_weights(directory: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(directory / "model.safetensors")
    first = sorted(k for k, v in tensors.items() if v.is_floating_point())[0]
    tensors[first][0] = float("nan")
    save_file(tensors, directory / "model.safetensors")


def _binary_vocabulary(directory: Path) -> None:
    (directory / "vocabulary.tsv").write_bytes(b"symbol\tgene_id\n\xff\xfe\x00\x01\n")


def _short_vocabulary(directory: Path) -> None:
    lines = (directory / "vocabulary.tsv").read_text().splitlines()
    (directory / "vocabulary.tsv").write_text("\n".join(lines[:-1]) + "\n")


def _duplicate_vocabulary(directory: Path) -> None:
    lines = (directory / "vocabulary.tsv").read_text().splitlines()
    lines[-1] = lines[1]
    (directory / "vocabulary.tsv").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (_edit_config, "do not match its configuration"),
        (_unknown_config_field, "bad configuration"),
        (_drop_weight, "do not match its configuration"),
        (_nan_weights, "NaN or infinite weights"),
        (_binary_vocabulary, "vocabulary"),
        (_short_vocabulary, "genes"),
        (_duplicate_vocabulary, "duplicate genes"),
    ],
)
def test_resealed_inconsistent_checkpoints_are_refused(
    tmp_path: Path, tamper: Callable[[Path], None], message: str
) -> None:
    """Checksums recomputed after the edit: the content checks alone must catch it."""
    directory = tiny_model().save(tmp_path / "model")
    tamper(directory)
    reseal(directory)
    with pytest.raises(CheckpointError, match=message):
        sagefm.load(directory)


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (_edit_config, "config.json does not match the checksum"),
        (_binary_vocabulary, "vocabulary.tsv does not match the checksum"),
        (lambda d: (d / "checksums.json").unlink(), "missing"),
        (lambda d: (d / "checksums.json").write_text('{"sha256": ["x"]}'), "unreadable"),
        (lambda d: (d / "checksums.json").write_text("{not json"), "unreadable"),
        (lambda d: (d / "model.safetensors").write_bytes(b""), "checksum"),
    ],
)
def test_tampered_files_are_refused_by_checksum(
    tmp_path: Path, tamper: Callable[[Path], None], message: str
) -> None:
    directory = tiny_model().save(tmp_path / "model")
    tamper(directory)
    with pytest.raises(CheckpointError, match=message):
        sagefm.load(directory)


def test_non_finite_weights_are_never_saved(tmp_path: Path) -> None:
    model = tiny_model()
    weights = dict(model.network.state_dict())
    name = next(k for k, v in weights.items() if v.is_floating_point())
    weights[name] = weights[name].clone().fill_(float("inf"))
    genes = [(g, "") for g in GENES]
    with pytest.raises(CheckpointError, match="NaN or infinite weights"):
        save_model_dir(tmp_path / "model", model.config, genes, weights)
    assert not (tmp_path / "model").exists()
    assert list(tmp_path.iterdir()) == []  # no staging folder left behind


def test_a_good_checkpoint_still_loads(tmp_path: Path) -> None:
    model = tiny_model()
    again = sagefm.load(model.save(tmp_path / "model"))
    assert again.config == model.config
    for name, value in model.network.state_dict().items():
        assert torch.equal(again.network.state_dict()[name], value)
