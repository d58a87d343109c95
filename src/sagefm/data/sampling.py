"""Which subgraph centres a batch holds: every spot for validation (`CentreDataset`), a seeded,
resumable and DDP-sharded order for training (`CentreSampler`), and the spatial tiles both it and
inference group spots by."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Dataset, Sampler

from sagefm.data.slides import PreparedSlide

#: (slide index, spot index, mask seed) — one subgraph centre
CentreItem = tuple[int, int, int]


class CentreDataset(Dataset[CentreItem]):
    """Every spot of every slide as a subgraph centre, always with mask seed 0.

    Used for validation, whose masks must be the same every epoch (training order and masks come
    from `CentreSampler`).
    """

    def __init__(self, slides: Sequence[PreparedSlide]) -> None:
        sizes = [s.n_spots for s in slides]
        self.slide_of = np.repeat(np.arange(len(slides)), sizes)
        self.spot_of = (
            np.concatenate([np.arange(n) for n in sizes]) if sizes else np.empty(0, np.int64)
        )

    def __len__(self) -> int:
        return int(self.slide_of.size)

    def __getitem__(self, index: int) -> CentreItem:
        return int(self.slide_of[index]), int(self.spot_of[index]), 0


def spatial_tiles(
    coords_um: np.ndarray, spacing_um: float, tile_spots: int, *, shift: np.ndarray | None = None
) -> np.ndarray:
    """(n_spots,) id of the square tile of ~``tile_spots`` spots each spot lies in, numbered row by
    row; ``shift`` (2,) in [0, 1) moves the grid by that share of a tile."""
    coords = np.asarray(coords_um, dtype=np.float64)
    tile = math.sqrt(tile_spots) * spacing_um
    offset = tile * (np.zeros(2) if shift is None else shift)
    cells = np.floor((coords - coords.min(axis=0) + offset) / tile).astype(np.int64)
    return np.unique(cells[:, ::-1], axis=0, return_inverse=True)[1].ravel()


class CentreItems(Dataset[CentreItem]):
    """The dataset behind `CentreSampler`: the sampler yields whole items, this hands them on."""

    def __init__(self, n_items: int) -> None:
        self.n_items = n_items

    def __len__(self) -> int:
        return self.n_items

    def __getitem__(self, item: CentreItem) -> CentreItem:
        return item


class CentreSampler(Sampler[CentreItem]):
    """One rank's training order of subgraph centres: a pure function of (seed, epoch).

    Slides are visited in a shuffled order, ``slides_per_group`` at a time (0 = all together), so a
    corpus streamed from disk keeps only a few slides resident. Within a group, centres come in
    shuffled spatial blocks of about ``block_size`` neighbouring spots (1 = each spot on its own,
    a uniform shuffle): the subgraphs of a batch then share most of their nodes, and the first
    layer runs on fewer distinct spots. The block tiling is shifted at random every epoch.

    The epoch's order is cut into ``world_size`` equal contiguous parts, part ``rank`` for this
    rank: ranks see disjoint centres (mostly disjoint slides) and the same number of batches. The
    epoch is set by Lightning through `set_epoch`; `skip` resumes part-way through an epoch. The
    items carry the epoch, which seeds the masks, so masks follow the epoch too.
    """

    def __init__(
        self,
        coords_um: Sequence[np.ndarray],
        spacing_um: Sequence[float],
        *,
        seed: int,
        block_size: int = 1,
        slides_per_group: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.coords_um = list(coords_um)
        self.spacing_um = list(spacing_um)
        self.seed = seed
        self.block_size = block_size
        self.slides_per_group = slides_per_group or len(self.coords_um)
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self._skip = 0
        self._per_rank = sum(len(c) for c in self.coords_um) // world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip(self, n_items: int) -> None:
        """Start the next iteration ``n_items`` into this rank's order (resuming mid-epoch)."""
        self._skip = n_items

    def __len__(self) -> int:
        return self._per_rank

    def _blocks(self, slide: int, rng: np.random.Generator) -> np.ndarray:
        """(n_spots,) block id of each spot: square tiles of ~block_size spots, randomly offset."""
        coords = self.coords_um[slide]
        if self.block_size <= 1:
            return np.arange(len(coords))
        shift = rng.uniform(0, 1, 2)
        return spatial_tiles(coords, self.spacing_um[slide], self.block_size, shift=shift)

    def epoch_order(self) -> tuple[np.ndarray, np.ndarray]:
        """(slide ids, spot ids) of the whole epoch over all ranks, in visiting order."""
        rng = np.random.default_rng([self.seed, self.epoch])
        slides = rng.permutation(len(self.coords_um))
        slide_parts, spot_parts = [], []
        for start in range(0, len(slides), self.slides_per_group):
            group = slides[start : start + self.slides_per_group]
            blocks = [self._blocks(int(s), rng) for s in group]
            offsets = np.cumsum([0] + [int(b.max()) + 1 for b in blocks])
            block = np.concatenate([b + o for b, o in zip(blocks, offsets[:-1], strict=True)])
            rank_of_block = rng.permutation(int(offsets[-1]))
            order = np.lexsort((rng.random(block.size), rank_of_block[block]))
            slide_parts.append(np.repeat(group, [b.size for b in blocks])[order])
            spot_parts.append(np.concatenate([np.arange(b.size) for b in blocks])[order])
        return np.concatenate(slide_parts), np.concatenate(spot_parts)

    def __iter__(self) -> Iterator[CentreItem]:
        slide_ids, spot_ids = self.epoch_order()
        start, stop = self.rank * self._per_rank, (self.rank + 1) * self._per_rank
        start, self._skip = start + self._skip, 0
        epoch = self.epoch
        for slide, spot in zip(
            slide_ids[start:stop].tolist(), spot_ids[start:stop].tolist(), strict=True
        ):
            yield slide, spot, epoch
