"""Inference over a slide in chunks of subgraphs: the one batching path of embed, impute, perturb
and explain.

No gene is masked at a centre at inference, so every spot enters every subgraph it belongs to with
the same input: a chunk lists the distinct spots of its subgraphs once (sparse), and the network
projects each once and gathers the rows per subgraph (`SageGCN.project`). Chunks hold spatially
adjacent centres (square tiles), so that their subgraphs share most of their nodes: listed in file
order, a chunk's neighbours are ~9x its spots. Memory is bounded by the chunk, not the slide (a
slide's (n, h_0) projections would be 4 GB for a million spots and h_0 = 1024).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from sagefm.config import ModelConfig
from sagefm.data.batches import subgraph_weights
from sagefm.data.sampling import spatial_tiles
from sagefm.data.slides import PreparedSlide, slide_library
from sagefm.errors import InputDataError

#: subgraphs per forward pass at inference, for embed, impute, perturb ((pair, spot, clamp value)
#: items) and explain. Memory: about chunk x 15 x V x 12 bytes for the skip path's dense inputs,
#: chunk x 15 x V x 40 for explain's differentiable inputs.
DEFAULT_CHUNK_SIZE = 256


def csr_tensor(matrix: sp.csr_matrix) -> torch.Tensor:
    """A scipy CSR matrix as a torch sparse CSR float32 tensor (shares no memory with it)."""
    matrix = sp.csr_matrix(matrix, dtype=np.float32)
    with warnings.catch_warnings():  # CSR (unlike COO, ~10x slower here) is "beta" in torch
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            torch.from_numpy(matrix.indptr.astype(np.int64)),
            torch.from_numpy(matrix.indices.astype(np.int64)),
            torch.from_numpy(matrix.data),
            size=matrix.shape,
            check_invariants=False,  # scipy's CSR is valid by construction
        )


@dataclass
class InferenceChunk:
    """b subgraphs of N nodes over the U distinct spots they contain (no gene masked at a centre)."""

    positions: np.ndarray  # (b,) positions of the centres in the requested ``spots``
    spots: np.ndarray  # (b,) the centres' positions in the slide
    node_index: torch.Tensor  # (b, N) int64 rows into the U distinct spots; column 0 = centre
    adj: torch.Tensor | None  # (b, N, N) normalised adjacency; None = complete graph
    values: sp.csr_matrix  # (U, V) visible values, 0 elsewhere
    hidden: sp.csr_matrix | None  # (U, V) 0/1 observed entries hidden in those spots
    observed: np.ndarray  # (V,) bool, the slide's measured genes
    device: torch.device
    #: (V,) the slide's per-gene centre (`SageGCN.centre_of`), for a network with
    #: ``ModelConfig.slide_centering``; None otherwise
    slide_mean: torch.Tensor | None = None
    #: the slide's `PreparedSlide.median_library`, for a network with
    #: ``ModelConfig.slide_library_target`` or ``slide_output_target`` (the ``slide_library``
    #: of `SageGCN.visible_library` and `SageGCN.reconstruct`); None otherwise
    slide_library: float | None = None

    def projection_inputs(self) -> dict[str, torch.Tensor]:
        """Keyword arguments of `SageGCN.project` for the U distinct spots (sparse)."""
        inputs = {
            "values": csr_tensor(self.values).to(self.device),
            "observed": torch.from_numpy(self.observed).to(self.device),
        }
        if self.hidden is not None:
            inputs["hidden"] = csr_tensor(self.hidden).to(self.device)
        if self.slide_mean is not None:
            inputs["slide_mean"] = self.slide_mean
        return inputs

    def centre_shown(self) -> torch.Tensor:
        """(b,) the share of the vocabulary each centre shows: the slide's measured genes less
        those hidden there (the ``shown`` of `SageGCN.reconstruct`)."""
        count = np.full(len(self.spots), self.observed.sum(), dtype=np.float32)
        if self.hidden is not None:
            centres = self.node_index[:, 0].cpu().numpy()
            count -= np.asarray(self.hidden[centres].sum(axis=1), dtype=np.float32).ravel()
        return torch.from_numpy(count / self.observed.size).to(self.device)

    def dense(self, genes: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(U, G) visible values and visibility (float 0/1) of ``genes`` (None = all V)."""
        columns = slice(None) if genes is None else np.asarray(genes)
        values = np.asarray(self.values[:, columns].toarray(), dtype=np.float32)
        visible = np.broadcast_to(self.observed[columns], values.shape).astype(np.float32)
        if self.hidden is not None:
            visible -= self.hidden[:, columns].toarray()
        return torch.from_numpy(values).to(self.device), torch.from_numpy(visible).to(self.device)


def inference_chunks(
    slide: PreparedSlide,
    model_config: ModelConfig,
    *,
    spots: np.ndarray | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    device: torch.device | str = "cpu",
    progress: bool = False,
    slide_mean: np.ndarray | None = None,
) -> Iterator[InferenceChunk]:
    """The subgraphs centred on ``spots`` (default every spot) in chunks of ``chunk_size``
    spatially adjacent centres; every centre comes exactly once. ``slide_mean`` (V,): the
    slide's centre for a slide-centring network, carried by every chunk, as is the slide's median
    library for a network with ``ModelConfig.slide_library_target`` or ``slide_output_target``."""
    if chunk_size < 1:
        raise InputDataError(f"chunk_size must be >= 1, got {chunk_size}")
    centres = np.arange(slide.n_spots) if spots is None else np.asarray(spots, dtype=np.int64)
    shown, hidden = slide.sparse_inputs()
    tiles = spatial_tiles(slide.coords_um[centres], slide.bandwidth_um, chunk_size)
    order = np.argsort(tiles, kind="stable")
    weighted = model_config.edge_scheme == "weighted"
    device = torch.device(device)
    mean = None if slide_mean is None else torch.from_numpy(slide_mean).to(device)
    library = slide_library(slide, model_config)
    starts = range(0, centres.size, chunk_size)
    for start in tqdm(starts, desc="spots", unit="chunk", disable=not progress):
        positions = order[start : start + chunk_size]
        chunk_spots = centres[positions]
        rows, nodes = np.unique(slide.neighbours[chunk_spots], return_inverse=True)
        yield InferenceChunk(
            positions=positions,
            spots=chunk_spots,
            node_index=torch.from_numpy(nodes.reshape(len(chunk_spots), -1)).to(device),
            adj=subgraph_weights(slide, chunk_spots, model_config).to(device) if weighted else None,
            values=shown[rows],
            hidden=None if hidden is None else hidden[rows],
            observed=slide.observed,
            device=device,
            slide_mean=mean,
            slide_library=library,
        )
