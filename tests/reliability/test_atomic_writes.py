"""Nothing half-written: a writer killed (SIGKILL) at a random moment leaves a loadable target.

A subprocess rewrites the same ``.h5ad`` file (or model directory) in a loop, each version carrying
its own checksum of the content; it is killed at random moments while writing. Afterwards the
target must be a complete version: the previous one or the new one, never a mix or a truncation.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pytest

import sagefm

pytestmark = pytest.mark.slow

KILLS = 3

H5AD_WRITER = """
import sys
import numpy as np, scipy.sparse as sp, anndata as ad
from sagefm.io.write import write_h5ad
base = sp.random(20000, 400, density=0.05, format="csr", dtype=np.float32, random_state=0)
version = 0
while True:
    version += 1
    adata = ad.AnnData(X=base * version)
    adata.uns["version"] = version
    adata.uns["total"] = float(adata.X.sum(dtype=np.float64))
    write_h5ad(adata, sys.argv[1])
    print(version, flush=True)
"""

MODEL_WRITER = """
import sys
import torch
from sagefm.config import ModelConfig, SageFMConfig
from sagefm.io.checkpoint import save_model_dir
config = SageFMConfig(model=ModelConfig(n_genes=3000, hidden_sizes=(1024, 512, 1024)))
from sagefm.nn.gcn import SageGCN
network = SageGCN(config.model)
genes = [(f"G{i}", "") for i in range(3000)]
version = 0
while True:
    version += 1
    with torch.no_grad():
        for p in network.parameters():
            p.fill_(version)
    save_model_dir(sys.argv[1], config, genes, network.state_dict(), extra={"version": version})
    print(version, flush=True)
"""


def kill_while_writing(script: str, target: Path, seed: int) -> int:
    """Start the writer, time one write, SIGKILL it at a random moment of a later write.

    Returns the last version the writer reported complete.
    """
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "1", "the writer failed before writing anything"
    started = time.monotonic()
    assert process.stdout.readline().strip() == "2"
    write_s = time.monotonic() - started
    time.sleep(np.random.default_rng(seed).uniform(0.0, 1.0) * write_s)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    return max([2, *(int(line) for line in process.stdout.read().split())])


def test_killed_h5ad_writer_leaves_a_complete_file(tmp_path: Path) -> None:
    target = tmp_path / "out.h5ad"
    for seed in range(KILLS):
        last_done = kill_while_writing(H5AD_WRITER, target, seed)
        adata = ad.read_h5ad(target)
        version = int(adata.uns["version"])
        assert version in (last_done, last_done + 1)  # the previous good file or the new one
        assert adata.shape == (20000, 400)
        assert float(adata.X.sum(dtype=np.float64)) == pytest.approx(adata.uns["total"])


def test_killed_model_writer_leaves_a_loadable_model(tmp_path: Path) -> None:
    target = tmp_path / "model"
    for seed in range(KILLS):
        last_done = kill_while_writing(MODEL_WRITER, target, seed)
        model = sagefm.load(target)  # verifies every file against the checksums
        version = json.loads((target / "checksums.json").read_text())["version"]
        assert version in (last_done, last_done + 1)
        weights = next(iter(model.network.parameters()))
        assert bool((weights == version).all())
