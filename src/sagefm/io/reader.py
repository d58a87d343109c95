"""`read`: one entry point for every slide source sagefm knows."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anndata as ad

from sagefm._constants import Keys
from sagefm.errors import InputDataError, ReaderError
from sagefm.io.hest import ListedSlide, list_h5ad_folder, read_listed_slide
from sagefm.io.spaceranger import read_spaceranger, spaceranger_outs
from sagefm.io.spatialdata import is_spatialdata, is_zarr_store, read_spatialdata

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

# One slide to read: an .h5ad file (maybe listed in a metadata table) or a Space Ranger folder.
_Source = ListedSlide | Path


def read(
    path: PathLike | Sequence[PathLike] | Any,
    *,
    sample_id: str | Sequence[str] | None = None,
    table: str | None = None,
    coordinate_system: str | None = None,
) -> ad.AnnData | list[ad.AnnData]:
    """Read slides with raw counts, spot coordinates and their physical scale.

    ``path`` is one of:

    - an ``.h5ad`` file -> AnnData (everything in the file is kept);
    - a Space Ranger ``outs/`` folder (or the run folder holding it) -> AnnData of in-tissue spots;
    - a folder of ``.h5ad`` files, HEST-1k style (``st/<id>.h5ad`` plus a metadata CSV with an
      ``id`` or ``sample_id`` column) or plain -> list of AnnData, in the table's order (else by
      file name), each with its table row in ``uns["sagefm"]["metadata"]``;
    - a `spatialdata.SpatialData` object or a SpatialData ``.zarr`` store -> AnnData of one of its
      tables (``table``, default the only one or "table") with the centroids of the shapes it
      annotates in ``coordinate_system`` (default the only one or "global") as coordinates; see
      `sagefm.io.read_spatialdata` (needs the extra ``sagefm[spatial]``);
    - a list or tuple of any of these -> one flat list of AnnData.

    Each AnnData has raw counts in X (CSR, as stored), ``obsm["spatial"]`` (n_spots, 2) float64
    x, y (full-resolution image pixels for Visium, as scanpy), ``obs["sample_id"]``, gene symbols
    as var_names (unique; Ensembl ids in ``var["gene_ids"]`` when known), and ``uns["sagefm"]``
    with ``um_per_unit`` (µm per coordinate unit, see `physical_scale`), ``scale_source``,
    ``platform`` and ``source_path``.

    ``sample_id`` names the slide (a string) or the slides (one string per slide, in order);
    by default it comes from the file, metadata table or folder name.

    Raises `ReaderError` for a missing, empty, unknown, unreadable or corrupt path and
    `InputDataError` for a slide without coordinates.
    """
    if is_spatialdata(path) or (isinstance(path, str | os.PathLike) and is_zarr_store(Path(path))):
        if not (sample_id is None or isinstance(sample_id, str)):
            raise InputDataError("a SpatialData table is one slide: give sample_id as a string")
        return read_spatialdata(
            path, table=table, coordinate_system=coordinate_system, sample_id=sample_id
        )
    if isinstance(path, str | os.PathLike):
        sources, single = _sources(Path(path))
    else:
        sources, single = [s for p in path for s in _sources(Path(p))[0]], False
        if not sources:
            raise ReaderError("no path given: pass a file, a folder or a list of them")
    ids = _sample_ids(sample_id, len(sources), single)
    slides = [_read_source(source, sample) for source, sample in zip(sources, ids, strict=True)]
    if single:
        return slides[0]
    names = [str(s.obs[Keys.SAMPLE_ID].iloc[0]) for s in slides if s.n_obs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        logger.warning(
            "several slides share a sample_id (%s); pass sample_id=[...]", ", ".join(repeated)
        )
    return slides


def _sources(path: Path) -> tuple[list[_Source], bool]:
    """The slides ``path`` holds and whether it is one slide; `ReaderError` when it holds none."""
    if not path.exists():
        raise ReaderError(
            f"{path} does not exist; give an .h5ad file, a Space Ranger outs/ folder or a folder "
            "of .h5ad files"
        )
    if path.is_file():
        if path.suffix.lower() != ".h5ad":
            raise ReaderError(
                f"{path}: sagefm reads .h5ad files, Space Ranger outs/ folders and folders of "
                ".h5ad files; for a 10x .h5 matrix give its outs/ folder"
            )
        return [ListedSlide(path)], True
    outs = spaceranger_outs(path)
    if outs is not None:
        return [outs], True
    listed: list[_Source] = list(list_h5ad_folder(path))
    if not listed:
        raise ReaderError(
            f"{path} holds no slide: expected .h5ad files (directly or under st/) or a Space "
            "Ranger outs/ folder (filtered_feature_bc_matrix.h5 and spatial/)"
        )
    return listed, False


def _sample_ids(
    sample_id: str | Sequence[str] | None, n_slides: int, single: bool
) -> list[str | None]:
    if sample_id is None:
        return [None] * n_slides
    if isinstance(sample_id, str):
        if single:
            return [sample_id]
        raise InputDataError(
            f"{n_slides} slides found: give sample_id as a list with one id per slide"
        )
    ids = [str(s) for s in sample_id]
    if single or len(ids) != n_slides:
        raise InputDataError(
            f"sample_id has {len(ids)} ids for {n_slides} slide(s); give "
            + ("one string" if single else f"{n_slides} ids, one per slide, in reading order")
        )
    return list(ids)


def _read_source(source: _Source, sample_id: str | None) -> ad.AnnData:
    if isinstance(source, ListedSlide):
        return read_listed_slide(source, sample_id=sample_id)
    return read_spaceranger(source, sample_id=sample_id)
