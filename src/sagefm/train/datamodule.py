"""Lightning DataModule over prepared slides: training order seeded per epoch, validation masks fixed.

The training order comes from `CentreSampler`, a pure function of (seed, epoch) that shards the
centres across DDP ranks itself (the Trainer runs with ``use_distributed_sampler=False``), so that
a run resumed from a checkpoint, or spread over any number of ranks, sees the same batches.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from sagefm.config import ModelConfig, SageFMConfig
from sagefm.data.batches import SubgraphCollator
from sagefm.data.inference import csr_tensor
from sagefm.data.sampling import CentreDataset, CentreItems, CentreSampler
from sagefm.data.slides import PreparedSlide, slide_library
from sagefm.nn.inputs import slide_input_mean


def slide_mean(slide: PreparedSlide, config: ModelConfig) -> np.ndarray:
    """(V,) float32 `slide_input_mean` of a slide's shown values (NaN for genes no spot shows):
    the per-slide centre of ``ModelConfig.slide_centering``, in training and at inference. Each
    spot is read at its whole library, estimated from the genes it shows when some are hidden."""
    shown, hidden = slide.sparse_inputs()
    visible = torch.from_numpy(slide.visible_spots())
    library = slide_library(slide, config)
    share = None if hidden is None else torch.from_numpy(slide.shown_share())
    return slide_input_mean(csr_tensor(shown), visible, config, library, share).numpy()


def centring_mean(slide: PreparedSlide, config: ModelConfig) -> np.ndarray | None:
    """`slide_mean` for a network with ``ModelConfig.slide_centering`` (None otherwise): what
    `sagefm.data.inference_chunks` takes as ``slide_mean``."""
    return slide_mean(slide, config) if config.slide_centering else None


def slide_means_for(config: ModelConfig) -> Callable[[PreparedSlide], np.ndarray] | None:
    """The collators' ``slide_means`` for a network built with ``config`` (None unless it
    centres slides)."""
    return functools.partial(slide_mean, config=config) if config.slide_centering else None


class SubgraphDataModule(L.LightningDataModule):
    """Train and validation loaders; each DDP rank trains on its own part of every epoch."""

    def __init__(
        self, train: Sequence[PreparedSlide], val: Sequence[PreparedSlide], config: SageFMConfig
    ) -> None:
        super().__init__()
        self.config = config
        self.train_slides = train
        self.val_dataset = CentreDataset(val)
        masks = config.data.masking()
        means = slide_means_for(config.model)
        # Validation masks use a seed of their own so they never coincide with a training epoch's.
        self.train_collate = SubgraphCollator(
            train, config.model, seed=config.train.seed, slide_means=means, **masks
        )
        # Validation sees whole panels, so that val_loss is one measure for every model.
        self.val_collate = SubgraphCollator(
            val,
            config.model,
            seed=config.train.seed + 1,
            slide_means=means,
            **(masks | {"panel_batch_fraction": 0.0}),
        )

    def _steps_per_epoch(self, n_items: int) -> int:
        batch, limit = self.config.train.batch_size, self.config.train.limit_train_batches
        steps = n_items // batch if n_items > batch else 1
        return min(steps, limit) if limit else steps

    def train_dataloader(self) -> DataLoader:
        train = self.config.train
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        sampler = CentreSampler(
            [s.coords_um for s in self.train_slides],
            [s.bandwidth_um for s in self.train_slides],
            seed=train.seed,
            block_size=train.centre_block_size,
            slides_per_group=train.slides_per_group,
            rank=rank,
            world_size=world,
        )
        if trainer is not None:
            # Resuming from a mid-epoch checkpoint: Lightning restores the step count before it
            # asks for the loader; skip the batches of this epoch that were already trained on.
            steps = self._steps_per_epoch(len(sampler))
            done = trainer.global_step - trainer.current_epoch * steps
            if 0 < done < steps:
                sampler.skip(done * train.batch_size)
        return DataLoader(
            CentreItems(len(sampler)),
            batch_size=train.batch_size,
            sampler=sampler,
            collate_fn=self.train_collate,
            num_workers=train.num_workers,
            drop_last=len(sampler) > train.batch_size,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            self.val_dataset,
            batch_size=4 * self.config.train.batch_size,
            shuffle=False,
            collate_fn=self.val_collate,
            num_workers=self.config.train.num_workers,
        )
