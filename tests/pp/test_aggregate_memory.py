"""A binned slide embeds through pseudo-spots with memory bounded by its counts, not its bins.

A subprocess (so its peak RSS is its own) reads a synthetic 8 µm Visium HD slide, sums it into
pseudo-spots and embeds them with a tiny model and a progress bar. The million-bin figure is
measured by hand: see the lead's report (``/tmp/hd1m_embed.py``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sagefm.datasets.binned import synthetic_binned_tissue

SCRIPT = """
import json, sys, time
import numpy as np, torch
import sagefm
from sagefm.config import ModelConfig, SageFMConfig
from sagefm.data.vocabulary import GeneVocabulary
from sagefm.model import SageFM
from sagefm.nn.gcn import SageGCN

def peak_mb():  # VmHWM: the peak resident set since the last reset
    status = open("/proc/self/status").read()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024

def reset_peak():  # Linux >= 4.0: writing 5 to clear_refs resets VmHWM to the current RSS
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")

bins = sagefm.read(sys.argv[1])
genes = list(bins.var_names)
config = SageFMConfig(model=ModelConfig(n_genes=len(genes), hidden_sizes=(32, 16, 16, 16, 32)))
torch.manual_seed(0)
model = SageFM(SageGCN(config.model), config, GeneVocabulary.from_genes(genes))
import gc; gc.collect()
reset_peak()
before = peak_mb()
started = time.perf_counter()
pseudo = sagefm.pp.aggregate_to_spots(bins)
embedding = model.embed(pseudo, progress=True)
print(json.dumps({
    "n_bins": bins.n_obs, "n_spots": pseudo.n_obs, "x_mb": (bins.X.data.nbytes + bins.X.indices.nbytes) / 2**20,
    "peak_before_mb": before, "peak_mb": peak_mb(), "seconds": time.perf_counter() - started,
    "finite": bool(np.isfinite(embedding).all()),
}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_binned_slide_embeds_through_pseudo_spots_in_bounded_memory(tmp_path: Path) -> None:
    bins, _ = synthetic_binned_tissue(8.0, grid_rows=40, grid_cols=40, n_genes=100, seed=2)
    path = tmp_path / "bins.h5ad"
    bins.write_h5ad(path)
    n_bins = bins.n_obs
    del bins
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(path)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    assert "spots" in done.stderr  # the tqdm progress bar
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["n_bins"] == n_bins > 150_000 and result["finite"]
    assert 1_000 < result["n_spots"] < n_bins / 100
    # Summing goes through one sparse (spots x bins) product: extra memory of the order of the
    # counts (a few times X), far below embedding every bin ((n_bins, 15, V) float32 inputs).
    extra_mb = result["peak_mb"] - result["peak_before_mb"]
    assert extra_mb < 4 * result["x_mb"] + 50, result
    assert extra_mb < n_bins * 15 * 100 * 4 / 2**20 / 20, result
