"""Pretraining on PyTorch Lightning: the training plan, data module, callbacks and entry point."""

from sagefm.train.pretrain import PretrainResult, pretrain, split_validation

__all__ = ["PretrainResult", "pretrain", "split_validation"]
