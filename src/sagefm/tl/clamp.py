r"""The network's receptor predictions with a ligand clamped in the neighbours (`perturbation_screen`).

The first GCN layer is linear, so every spot of a chunk is projected once (`SageGCN.project`); a
clamp changes each neighbour's projection by `SageGCN.input_delta` (value and, if the ligand was
hidden, visibility), and hiding the receptor changes the centre's. Only the later layers run per
(pair, spot, clamp value), many per call, and only the receptor's output unit is read
(`SageGCN.reconstruct` with ``genes``).

With depth normalisation (`ModelConfig.depth_normalize`) a clamp is made at fixed library size:
every node keeps the visible library of its unperturbed input as its size factor (clamping one
gene does not rescale the node's others), and the receptor's prediction is restored to the
centre's unperturbed library; `SageGCN.forward` with those libraries gives the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sagefm.data.inference import DEFAULT_CHUNK_SIZE, InferenceChunk
from sagefm.nn.gcn import SageGCN


@dataclass
class _Clamps:
    """The inputs a chunk's clamps touch: (U, G) values and visibility of the G ligand and receptor
    genes, the pairs as vocabulary positions (K,) and as columns of those (K,), clamp values (K, C)."""

    network: SageGCN
    chunk: InferenceChunk
    values: torch.Tensor
    visible: torch.Tensor
    lig: torch.Tensor
    rec: torch.Tensor
    lig_col: torch.Tensor
    rec_col: torch.Tensor
    values_to: torch.Tensor
    hide_nb: torch.Tensor  # (K,) 1 where the receptor is hidden in the neighbours too
    library: torch.Tensor  # (U,) the spots' visible libraries before any clamp

    @classmethod
    def of(
        cls,
        network: SageGCN,
        chunk: InferenceChunk,
        ligands: np.ndarray,
        receptors: np.ndarray,
        clamp_values: np.ndarray,
        hide_receptor_in_neighbours: bool,
        library: torch.Tensor,
    ) -> _Clamps:
        """The clamp inputs of a chunk (see `clamp_predictions` for the arguments)."""
        device = chunk.device
        genes = np.unique(np.concatenate([ligands, receptors]))
        values, visible = chunk.dense(genes)  # (U, G): only the genes the clamps touch
        lig = torch.as_tensor(ligands, dtype=torch.long, device=device)
        rec = torch.as_tensor(receptors, dtype=torch.long, device=device)
        return cls(
            network,
            chunk,
            values,
            visible,
            lig,
            rec,
            torch.as_tensor(np.searchsorted(genes, ligands), device=device),
            torch.as_tensor(np.searchsorted(genes, receptors), device=device),
            torch.as_tensor(clamp_values, dtype=torch.float32, device=device),  # (K, C)
            float(hide_receptor_in_neighbours) * (lig != rec).float(),
            library,
        )

    def deltas(self, sb: slice, sk: slice) -> torch.Tensor:
        """(b, k, C, N, h0) change of every node's projection: the receptor hidden at the centre
        (node 0) and, in the neighbours, the ligand set to v and shown (and the receptor hidden)."""
        network, zero = self.network, torch.zeros((), device=self.values.device)
        nb = self.chunk.node_index[sb, 1:][:, None, None, :]  # (b, 1, 1, N-1)
        lig_c, rec_c = self.lig_col[sk][None, :, None, None], self.rec_col[sk][None, :, None, None]
        clamp = network.input_delta(
            self.lig[sk][None, :, None, None],
            self.values[nb, lig_c],
            self.visible[nb, lig_c],
            self.values_to[sk][None, :, :, None],
            torch.ones((), device=zero.device),
            library=self.library[nb],
            slide_mean=self.chunk.slide_mean,
        )  # (b, k, C, N-1, h0)
        hide = self.hide_nb[sk][None, :, None, None]
        clamp = clamp + network.input_delta(
            self.rec[sk][None, :, None, None],
            self.values[nb, rec_c] * hide,
            self.visible[nb, rec_c] * hide,
            zero,
            zero,
            library=self.library[nb],
            slide_mean=self.chunk.slide_mean,
        )
        centre = self.chunk.node_index[sb, :1]  # (b, 1)
        hidden = network.input_delta(
            self.rec[sk][None],
            self.values[centre, self.rec_col[sk]],
            self.visible[centre, self.rec_col[sk]],
            zero,
            zero,
            library=self.library[centre],
            slide_mean=self.chunk.slide_mean,
        )  # (b, k, h0)
        b, k, c = clamp.shape[:3]
        return torch.cat([hidden[:, :, None, None, :].expand(b, k, c, 1, -1), clamp], dim=3)

    def centre_shown(self) -> torch.Tensor:
        """(b, K) the share of the vocabulary each centre shows with the pair's receptor hidden
        there (the ``shown`` of `SageGCN.reconstruct`)."""
        centres = self.chunk.node_index[:, 0]
        receptor_shown = self.visible[centres][:, self.rec_col]  # (b, K)
        n_genes = self.chunk.observed.size
        return self.chunk.centre_shown()[:, None] - receptor_shown / n_genes

    def receptor_mean(self, *, centred: bool = False) -> torch.Tensor | None:
        """(b, K, C) input of the skip path: the receptor's mean over the neighbours under each
        clamp. The clamp changes it only when the ligand is the receptor itself (then every
        neighbour shows v); a receptor hidden in every neighbour reads 0, as with no neighbour.
        None without a skip path. ``centred``: the panel term's (`SageGCN.neighbour_mean`)."""
        network, nodes = self.network, self.chunk.node_index
        if not network.config.spatial_skip:
            return None
        values, visible = self.values[:, self.rec_col], self.visible[:, self.rec_col]  # (U, K)
        slide_mean = self.chunk.slide_mean
        mean = network.neighbour_mean(
            values,
            visible,
            nodes,
            library=self.library,
            slide_mean=slide_mean,
            genes=self.rec,
            centred=centred,
        )
        mean = mean * (1.0 - self.hide_nb)  # (b, K); hidden everywhere reads as no neighbour
        n_spots, (n_pairs, n_items) = values.shape[0], self.values_to.shape
        clamped = self.values_to.reshape(1, -1).expand(n_spots, -1)  # (U, K C): v everywhere
        clamped_mean = network.neighbour_mean(
            clamped,
            torch.ones_like(clamped),
            nodes,
            library=self.library,
            slide_mean=slide_mean,
            genes=self.rec.repeat_interleave(n_items),
            centred=centred,
        ).reshape(-1, n_pairs, n_items)
        same = (self.lig == self.rec)[None, :, None]
        return torch.where(same, clamped_mean, mean[:, :, None])


@torch.inference_mode()
def clamp_predictions(
    network: SageGCN,
    chunk: InferenceChunk,
    ligands: np.ndarray,
    receptors: np.ndarray,
    clamp_values: np.ndarray,
    *,
    hide_receptor_in_neighbours: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> np.ndarray:
    """Receptor predictions at a chunk's centres with the ligand clamped in the neighbours.

    ligands, receptors: (K,) vocabulary positions; clamp_values: (K, C) values the ligand is set to
    (and shown) in all neighbours (C = 2: low, high). Returns (b, K, C) predictions of
    ``receptors[k]`` at each centre, the receptor hidden there (and in the neighbours with
    ``hide_receptor_in_neighbours``, unless it is the clamped ligand). ``chunk_size`` (pair, spot,
    clamp value) items run per call. Equals `SageGCN.forward` on the perturbed inputs
    (tests/tl/test_perturb.py).
    """
    inputs = chunk.projection_inputs()
    library = network.visible_library(inputs["values"], chunk.slide_library)  # (U,)
    clamps = _Clamps.of(
        network, chunk, ligands, receptors, clamp_values, hide_receptor_in_neighbours, library
    )
    rec = clamps.rec
    base = network.project(**inputs, library=library)[chunk.node_index]  # (b, N, h0)
    centre_library = library[chunk.node_index[:, 0]]  # (b,)
    skip = clamps.receptor_mean()
    panel_mean = clamps.receptor_mean(centred=True) if network.separate_panel_mean else None
    shown = clamps.centre_shown()  # (b, K)
    (n_centres, n_nodes), (n_pairs, n_items) = chunk.node_index.shape, clamp_values.shape
    out = np.empty((n_centres, n_pairs, n_items), dtype=np.float32)
    spots_per_call = max(1, min(n_centres, chunk_size // n_items))
    pairs_per_call = max(1, chunk_size // (n_items * spots_per_call))
    for b0 in range(0, n_centres, spots_per_call):
        sb = slice(b0, b0 + spots_per_call)
        for k0 in range(0, n_pairs, pairs_per_call):
            sk = slice(k0, k0 + pairs_per_call)
            h = base[sb][:, None, None] + clamps.deltas(sb, sk)  # (b, k, C, N, h0)
            b, k = h.shape[:2]
            adj = chunk.adj
            if adj is not None:
                adj = adj[sb][:, None, None].expand(b, k, n_items, n_nodes, n_nodes)
                adj = adj.reshape(b * k * n_items, n_nodes, n_nodes)
            embedding = network.encode(h.reshape(b * k * n_items, n_nodes, -1), adj)
            out[sb, sk] = (
                network.reconstruct(
                    embedding.reshape(b, k, n_items, -1),
                    None if skip is None else skip[sb, sk],
                    genes=rec[sk][None, :, None],
                    library=centre_library[sb][:, None, None],
                    slide_mean=chunk.slide_mean,
                    slide_library=chunk.slide_library,
                    shown=shown[sb, sk][:, :, None],
                    panel_mean=None if panel_mean is None else panel_mean[sb, sk],
                )
                .cpu()
                .numpy()
            )
    return out
