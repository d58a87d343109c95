"""Readers (h5ad, Space Ranger outs/, HEST-style folders) and the physical scale of a slide."""

from sagefm.io.reader import read
from sagefm.io.scale import physical_scale

__all__ = ["physical_scale", "read"]
