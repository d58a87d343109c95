"""Embedding a very large slide runs in chunks: peak memory stays far below a non-chunked pass.

A subprocess (so its peak RSS is its own) builds a hexagonal Visium-like lattice with sparse
Poisson counts over 100 genes and embeds it with a tiny model. Run by hand for the million-spot
figure: ``python tests/reliability/test_bounded_memory.py 1000000``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

N_GENES = 100

SCRIPT = """
import json, resource, sys, time
import anndata as ad, numpy as np, scipy.sparse as sp, torch
from sagefm.config import ModelConfig, SageFMConfig
from sagefm.data.vocabulary import GeneVocabulary
from sagefm.model import SageFM
from sagefm.nn.gcn import SageGCN

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

n_spots, n_genes, chunk = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
side = int(np.ceil(np.sqrt(n_spots)))
index = np.arange(n_spots)
row, col = index // side, index % side
coords = np.column_stack([col * 100.0 + (row % 2) * 50.0, row * 100.0 * np.sqrt(3) / 2])
rng = np.random.default_rng(0)
nnz_per_spot = 10  # sparse like real spots: most genes zero
cols = rng.integers(0, n_genes, (n_spots, nnz_per_spot))
X = sp.csr_matrix(
    (rng.poisson(3.0, n_spots * nnz_per_spot).astype(np.int32) + 1, (np.repeat(index, nnz_per_spot), cols.ravel())),
    shape=(n_spots, n_genes),
)
del cols
adata = ad.AnnData(X=X)
adata.obsm["spatial"] = coords
adata.uns["sagefm"] = {"um_per_unit": 1.0}
genes = [f"G{i}" for i in range(n_genes)]
adata.var_names = genes
config = SageFMConfig(model=ModelConfig(n_genes=n_genes, hidden_sizes=(32, 16, 16, 16, 32)))
torch.manual_seed(0)
model = SageFM(SageGCN(config.model), config, GeneVocabulary.from_genes(genes))
before = peak_mb()
started = time.perf_counter()
embedding = model.embed(adata, chunk_size=chunk, progress=True)
seconds = time.perf_counter() - started
print(json.dumps({
    "n_spots": n_spots, "chunk_size": chunk, "peak_before_embed_mb": before,
    "peak_mb": peak_mb(), "embed_s": seconds, "finite": bool(np.isfinite(embedding).all()),
    "shape": list(embedding.shape),
}))
"""


def measure(n_spots: int, chunk_size: int = 1024) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(n_spots), str(N_GENES), str(chunk_size)],
        capture_output=True,
        text=True,
        timeout=1800,
        check=True,
    )
    assert "spots" in done.stderr  # the tqdm progress bar
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_embedding_200k_spots_stays_within_memory_bound() -> None:
    n_spots = 200_000
    result = measure(n_spots)
    assert result["finite"] and result["shape"] == [n_spots, 32]
    # A non-chunked pass would hold the (n, 15, V) float32 subgraph inputs alone: 1.2 GB.
    dense_subgraphs_mb = n_spots * 15 * N_GENES * 4 / 2**20
    extra_mb = result["peak_mb"] - result["peak_before_embed_mb"]
    assert extra_mb < dense_subgraphs_mb / 4, result


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000), indent=2))
