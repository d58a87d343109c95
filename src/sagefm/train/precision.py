"""Training precision: what ``TrainConfig.precision = "auto"`` becomes on this machine.

bf16 mixed precision (fp32 weights, optimizer state and loss; matmuls in bfloat16) where the
device multiplies bfloat16 natively: CUDA devices that support it, and CPUs with AMX tiles
(Intel Sapphire Rapids and later) or AVX-512 BF16 dot products (AMD Zen 4 and later, Intel
Cooper Lake). On 2 cores the first layer's (918 x 10,000) @ (10,000 x 1,024) product ran at
2.3 TFLOP/s in bf16 against 0.31 in fp32 with AMX, and at 419 against 188 GFLOP/s with AVX-512
BF16 on an AMD EPYC (issue 12). Elsewhere fp32: a CPU without either converts bf16 in software,
which gains nothing and rounds anyway.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

#: the value of ``TrainConfig.precision`` resolved by `resolve_precision`
AUTO = "auto"


def fast_bf16(device_type: str) -> bool:
    """Whether ``device_type`` ("cpu" or "cuda") has native bfloat16 matmuls (see module doc)."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type != "cpu":
        return False
    return torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()


def training_device(accelerator: str) -> str:
    """ "cuda" or "cpu": the device Lightning's ``accelerator`` ("cpu", "gpu", "cuda", "auto")
    trains on here."""
    if accelerator in ("gpu", "cuda") or (accelerator == AUTO and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


def resolve_precision(precision: str, accelerator: str) -> str:
    """Lightning's precision for ``TrainConfig.precision``: "auto" becomes "bf16-mixed" where
    `fast_bf16` holds for the training device and "32-true" elsewhere; any other value is kept."""
    if precision != AUTO:
        return precision
    return "bf16-mixed" if fast_bf16(training_device(accelerator)) else "32-true"


@contextlib.contextmanager
def autocast(precision: str, device_type: str = "cpu") -> Iterator[None]:
    """The autocast Lightning's ``precision`` applies to a training step's forward pass (bf16
    for "bf16-mixed", fp16 for "16-mixed", none otherwise), for code that steps outside a
    Trainer (the benchmark)."""
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    with torch.autocast(device_type, dtype=dtype, enabled=dtype is not None):
        yield
