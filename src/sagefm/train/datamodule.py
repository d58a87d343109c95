"""Lightning DataModule over prepared slides: training centres shuffled, validation masks fixed."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
from torch.utils.data import DataLoader

from sagefm.config import SageFMConfig
from sagefm.data.batches import CentreDataset, SubgraphCollator
from sagefm.data.slides import PreparedSlide


class SubgraphDataModule(L.LightningDataModule):
    """Train and validation loaders. Under DDP Lightning shards the centres across ranks."""

    def __init__(
        self, train: Sequence[PreparedSlide], val: Sequence[PreparedSlide], config: SageFMConfig
    ) -> None:
        super().__init__()
        self.config = config
        self.train_dataset = CentreDataset(train)
        self.val_dataset = CentreDataset(val, fixed_masks=True)
        masks = {
            "mask_fraction": config.data.mask_fraction,
            "neighbour_mask_fraction": config.data.neighbour_mask_fraction,
        }
        # Validation masks use a seed of their own so they never coincide with a training epoch's.
        self.train_collate = SubgraphCollator(train, config.model, seed=config.train.seed, **masks)
        self.val_collate = SubgraphCollator(val, config.model, seed=config.train.seed + 1, **masks)

    def set_epoch(self, epoch: int) -> None:
        self.train_dataset.set_epoch(epoch)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_dataset,
            batch_size=self.config.train.batch_size,
            shuffle=True,
            collate_fn=self.train_collate,
            num_workers=self.config.train.num_workers,
            drop_last=len(self.train_dataset) > self.config.train.batch_size,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            self.val_dataset,
            batch_size=4 * self.config.train.batch_size,
            shuffle=False,
            collate_fn=self.val_collate,
            num_workers=self.config.train.num_workers,
        )
