"""The Lightning training plan: masked-gene reconstruction of the centre spot.

The training path (`SageGCN.predict_rows`) is dense on every device. Measured on the 2-core
EPYC (issue 12): torch's CSR x dense matmul ran at 1.4 GFLOP/s and ``embedding_bag`` at 2.6,
against ~100 for the dense matmul of the same (1024 x 5000) @ (5000 x 1024), so at the input's
12% density (and the ~30% of observed genes the default masks hide, which the sparse visibility
correction would carry) the sparse kernels are 3-6x slower; on CUDA the dense matmul is also the
one bf16 autocast runs. `SageGCN.project`'s sparse form stays the inference path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch

from sagefm.config import SageFMConfig
from sagefm.data.batches import SubgraphBatch
from sagefm.errors import ConfigError, TrainingError
from sagefm.nn.contrast import contrast_loss
from sagefm.nn.gcn import SageGCN


def masked_mse(prediction: torch.Tensor, truth: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the ``target`` entries only (B, V) -> scalar (NaN with none).

    Zeroing the other entries instead of selecting the targets gives the same value and
    gradient without the boolean index's ``nonzero`` and gather (~1.5 ms per default step)."""
    error = torch.where(target, prediction - truth, 0.0)
    return error.square().sum() / target.sum()


def clip_norm(parameters: list[torch.Tensor], max_norm: float) -> None:
    """`torch.nn.utils.clip_grad_norm_` (foreach), without the multiply when it would be by 1.

    torch always multiplies every gradient by ``min(1, max_norm / (norm + 1e-6))`` so that no
    device has to report the norm to the host; a pass over 10M gradients (~3 ms per default CPU
    step). On the CPU the norm is already on the host, so the multiply runs only when it clips."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    total = torch.nn.utils.get_total_norm(grads, foreach=True)
    if grads[0].device.type == "cpu" and float(total) + 1e-6 <= max_norm:
        return
    torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, total, foreach=True)


def freeze_except(network: torch.nn.Module, names: Sequence[str]) -> None:
    """Stop gradients of every parameter of ``network`` not named in ``names``
    (`TrainConfig.trainable`). Frozen parameters get no gradient, so Adam (and its weight
    decay) leaves them as they are, and DDP does not reduce them."""
    known = dict(network.named_parameters())
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ConfigError(
            f"TrainConfig.trainable names no parameter of this network: {unknown}; it has "
            f"{sorted(known)}"
        )
    for name, parameter in known.items():
        parameter.requires_grad_(name in names)


#: added to each gene's standard deviation (log1p units) before it divides: rarely detected
#: genes (sd near 0) would otherwise turn a single count into a z-score in the hundreds
SCALE_PAD = 0.1


class PretrainingModule(L.LightningModule):
    """Wraps `SageGCN` with the masked-MSE objective, Adam and ReduceLROnPlateau."""

    def __init__(
        self,
        config: SageFMConfig,
        slide_names: Sequence[str] = (),
        gene_stats: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """``gene_stats``: (V,) means and standard deviations of the training data
        (`observed_gene_stats`): the head's starting bias and, with
        ``ModelConfig.standardize_input``, the input's z-scores (scale = sd + `SCALE_PAD`)."""
        super().__init__()
        self.config = config
        self.network = SageGCN(config.model)
        if gene_stats is not None:
            mean, sd = (torch.as_tensor(v, dtype=torch.float32) for v in gene_stats)
            self.network.start_at_gene_means(mean)
            if config.model.standardize_input:
                self.network.set_input_scaling(mean, sd + SCALE_PAD)
        self.slide_names = list(slide_names)
        if config.train.trainable:
            freeze_except(self.network, config.train.trainable)

    def transfer_batch_to_device(
        self, batch: Any, device: torch.device, dataloader_idx: int
    ) -> Any:
        return (
            batch.to(device)
            if isinstance(batch, SubgraphBatch)
            else super().transfer_batch_to_device(batch, device, dataloader_idx)
        )

    def loss(self, batch: SubgraphBatch, *, auxiliary: bool = True) -> torch.Tensor:
        """The objective on one batch: masked MSE on the hidden genes of `SageGCN.predict_rows`
        (the plain forward pass with every node row projected in one matmul), plus, with
        ``auxiliary``, ``embedding_loss_weight`` times that of the embedding head and
        ``contrastive_loss_weight`` times the contrast's (`sagefm.nn.contrast`) when the model
        has them. Validation leaves them out, so that val_loss is the same measure for every
        model."""
        return self._weighted(
            self.loss_terms(batch, auxiliary=auxiliary), gcn=self._trains_gcn(batch)
        )

    def _trains_gcn(self, batch: SubgraphBatch) -> bool:
        """False for a panel batch when `DataConfig.panel_batches_train_gcn` is off."""
        return self.config.data.panel_batches_train_gcn or not batch.panel

    def _weighted(self, terms: dict[str, torch.Tensor], *, gcn: bool = True) -> torch.Tensor:
        """The sum of `loss_terms`, each auxiliary term times its weight (0 without ``gcn``:
        kept in the graph at 0, so that every parameter still gets a gradient, as DDP needs)."""
        model = self.config.model
        weights = {
            "embedding": model.embedding_loss_weight if gcn else 0.0,
            "contrast": model.contrastive_loss_weight if gcn else 0.0,
        }
        total = terms["masked_mse"]
        for name, weight in weights.items():
            if name in terms:
                total = total + weight * terms[name]
        return total

    def loss_terms(
        self, batch: SubgraphBatch, *, auxiliary: bool = True
    ) -> dict[str, torch.Tensor]:
        """The unweighted terms of `loss`: "masked_mse", and with ``auxiliary`` "embedding" and
        "contrast" where the model has them."""
        out = self.network.predict_rows(
            batch.node_values,
            batch.node_visible,
            batch.node_rows,
            batch.adj,
            slide_mean=batch.row_slide_mean,
            slide_library=batch.row_slide_library,
            row_group=batch.row_slide,
            train_gcn=self._trains_gcn(batch),
        )
        terms = {"masked_mse": masked_mse(out.prediction, batch.centre_truth, batch.target)}
        if auxiliary and out.from_embedding is not None:
            terms["embedding"] = masked_mse(out.from_embedding, batch.centre_truth, batch.target)
        if auxiliary and out.contrast is not None:
            terms["contrast"] = contrast_loss(out.contrast)
        return terms

    def _slides_of(self, batch: SubgraphBatch) -> list[str]:
        ids = sorted(set(batch.slide_index.tolist()))
        return [self.slide_names[i] if i < len(self.slide_names) else str(i) for i in ids]

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """With ``lr_schedule="cosine"``, step ``g`` of the run's ``T`` steps uses
        ``learning_rate * (1 + cos(pi * g / T)) / 2``.

        A function of the trainer's step count, not a scheduler's own counter: Lightning saves a
        mid-epoch checkpoint before it steps a per-step scheduler, so a resumed
        ``CosineAnnealingLR`` ran one step behind and ended on other weights
        (tests/train/test_resume.py)."""
        train = self.config.train
        if train.lr_schedule != "cosine":
            return
        share = self.trainer.global_step / max(1, int(self.trainer.estimated_stepping_batches))
        rate = train.learning_rate * 0.5 * (1.0 + math.cos(math.pi * min(share, 1.0)))
        for optimizer in self.trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = rate

    def training_step(self, batch: SubgraphBatch, batch_idx: int) -> torch.Tensor:
        terms = self.loss_terms(batch)
        loss = self._weighted(terms, gcn=self._trains_gcn(batch))
        if "contrast" in terms:  # log 2 = 0.69: the discriminator cannot tell the pairs apart
            n_centres = batch.node_index.shape[0]
            self.log("train_contrast", terms["contrast"], on_epoch=True, batch_size=n_centres)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"non-finite training loss ({loss.item()}) at global step {self.global_step}, epoch "
                f"{self.current_epoch}, batch {batch_idx}, slides {self._slides_of(batch)}; weights were "
                "not updated. Check the input for extreme values or lower the learning rate."
            )
        self.log(
            "train_loss",
            loss,
            prog_bar=True,
            on_step=True,
            on_epoch=True,
            batch_size=int(batch.target.sum()),
        )
        return loss

    def validation_step(self, batch: SubgraphBatch, batch_idx: int) -> None:
        loss = self.loss(batch, auxiliary=False)
        self.log(
            "val_loss",
            loss,
            prog_bar=True,
            on_epoch=True,
            sync_dist=True,
            batch_size=int(batch.target.sum()),
        )

    @property
    def fp16_scaled(self) -> bool:
        """True under "16-mixed", where a GradScaler owns the gradients until it unscales them;
        bf16, fp32 and "auto" (which resolves to one of those two) have no scaler."""
        return str(self.config.train.precision) == "16-mixed"

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip the global gradient norm with one multi-tensor kernel.

        Lightning's mixed-precision plugin refuses to clip for a fused optimizer (it assumes a
        scaler owns the gradients). In bf16 and fp32 there is no scaler, the gradients are the
        true ones, so clipping them here is exact and keeps the fused Adam step (~25% faster
        per default bf16 step, measured on DLPFC 151676).
        """
        if not gradient_clip_val:
            return
        by_value = gradient_clip_algorithm not in (None, "norm")
        if by_value or self.fp16_scaled:
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
            return
        clip_norm(list(self.parameters()), gradient_clip_val)

    def build_optimizer(self) -> torch.optim.Adam:
        """Adam over every trained parameter (`TrainConfig.trainable`), as `TrainConfig` sets it
        (no scheduler: benchmarks step it without a trainer)."""
        train = self.config.train
        # fused: one kernel over all parameters, ~10x faster than the per-tensor loop on CPU
        # (the 10000 x 1024 input layer makes the optimizer step a visible share of a step).
        # fp16 ("16-mixed") keeps the foreach loop: its GradScaler must unscale before clipping,
        # which Lightning skips for fused optimizers. bf16 has no scaler; clipping is done in
        # ``configure_gradient_clipping`` below.
        fused = not self.fp16_scaled
        return torch.optim.Adam(
            [p for p in self.parameters() if p.requires_grad],
            lr=train.learning_rate,
            weight_decay=train.weight_decay,
            decoupled_weight_decay=train.decoupled_weight_decay,
            fused=fused,
            foreach=None if fused else True,
        )

    def configure_optimizers(self) -> Any:
        train, optimizer = self.config.train, self.build_optimizer()
        if train.lr_schedule == "cosine":  # set before every step: `on_train_batch_start`
            return optimizer
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=train.lr_factor, patience=train.lr_patience
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss"},
        }
