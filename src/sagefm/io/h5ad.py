"""Read one slide from an ``.h5ad`` file, keeping everything the file holds."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import anndata as ad

from sagefm._constants import Keys
from sagefm.errors import ReaderError

logger = logging.getLogger(__name__)


def load_h5ad(path: Path) -> ad.AnnData:
    """The AnnData stored in ``path``, fully in memory; `ReaderError` if it cannot be read."""
    try:
        return ad.read_h5ad(path)
    except Exception as err:  # h5py, anndata and numpy raise many types for broken files
        raise ReaderError(
            f"cannot read {path} as .h5ad ({type(err).__name__}: {err}); the file is truncated, "
            "corrupt or not an AnnData file: copy or download it again, or re-write it with "
            "adata.write_h5ad"
        ) from err


def slide_id_in_file(adata: ad.AnnData, path: Path) -> str | None:
    """The sample id a file carries: None when ``obs["sample_id"]`` exists (it is kept as it is),
    else the single ``uns["spatial"]`` library id, else the file name without ``.h5ad``."""
    if Keys.SAMPLE_ID in adata.obs:
        return None
    spatial = adata.uns.get(Keys.SPATIAL)
    if isinstance(spatial, Mapping) and len(spatial) == 1:
        return str(next(iter(spatial)))
    return path.stem
