"""Readers (h5ad, Space Ranger outs/, HEST-style folders, SpatialData) and the physical scale of a slide."""

from sagefm.io.reader import read
from sagefm.io.scale import physical_scale
from sagefm.io.spatialdata import read_spatialdata, write_spatialdata

__all__ = ["physical_scale", "read", "read_spatialdata", "write_spatialdata"]
