"""Read a folder of per-sample ``.h5ad`` files, HEST-1k style, with its metadata table.

HEST-1k's layout: ``HEST_v1_1_0.csv`` (one row per sample; ``id`` names it) beside ``st/<id>.h5ad``.
Also accepted: the ``.h5ad`` files directly in the folder, a metadata CSV whose id column is
``sample_id``, and no CSV at all (files then come sorted by name). HEST's ``obsm["spatial"]`` is in
pixels of the full-resolution slide image, whose size the table gives as
``pixel_size_um_estimated`` (µm per pixel); ``st_technology`` names the platform.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from sagefm._constants import Keys
from sagefm.errors import ReaderError
from sagefm.io.h5ad import load_h5ad, slide_id_in_file
from sagefm.io.lattice import platform_from_name
from sagefm.io.scale import sagefm_info
from sagefm.io.standardize import standardize_slide

logger = logging.getLogger(__name__)

#: Column names (case-insensitive) that identify the sample of a metadata row, in preference order.
ID_COLUMNS = ("id", "sample_id")
#: ``uns["sagefm"]["metadata"]``: the slide's row of the folder's metadata table.
METADATA_KEY = "metadata"
# Columns of HEST's table giving micrometres per pixel of obsm["spatial"], in preference order.
_PIXEL_SIZE_COLUMNS = ("pixel_size_um_estimated", "pixel_size_um_embedded")
_PLATFORM_COLUMN = "st_technology"


@dataclass(frozen=True)
class ListedSlide:
    """One ``.h5ad`` file of a folder, with its id and metadata row when the table lists it."""

    path: Path
    sample_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def h5ad_files(folder: Path) -> list[Path]:
    """The ``.h5ad`` files of a folder: those under ``st/`` if any, else the folder's own."""
    for candidate in (folder / "st", folder):
        files = sorted(p for p in candidate.glob("*.h5ad") if p.is_file())
        if files:
            return files
    return []


def _metadata_table(folder: Path) -> tuple[Path, str] | None:
    """The folder's metadata CSV and its id column; HEST's own table first."""
    candidates = sorted(folder.glob("*.csv"), key=lambda p: (not p.name.startswith("HEST"), p.name))
    for path in candidates:
        try:
            header = pd.read_csv(path, nrows=0).columns
        except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as err:
            raise ReaderError(
                f"cannot read the metadata table {path} ({err}); fix or move it"
            ) from err
        by_lower = {str(c).lower(): str(c) for c in header}
        column = next((by_lower[name] for name in ID_COLUMNS if name in by_lower), None)
        if column is not None:
            return path, column
        logger.info(
            "%s has no %s column: not used as the metadata table", path, " or ".join(ID_COLUMNS)
        )
    return None


def _plain(value: object) -> object:
    """A table cell as a plain Python value that h5ad can store."""
    return value.item() if isinstance(value, np.generic) else value


def list_h5ad_folder(folder: Path) -> list[ListedSlide]:
    """The slides of a folder, in the metadata table's order, then unlisted files by name.

    Table rows without a file (a partial HEST-1k download) are skipped and counted in the log.
    """
    files = h5ad_files(folder)
    if not files:
        return []
    table = _metadata_table(folder)
    if table is None:
        return [ListedSlide(path) for path in files]
    csv_path, id_column = table
    try:
        rows = pd.read_csv(csv_path, dtype={id_column: str})
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as err:
        raise ReaderError(
            f"cannot read the metadata table {csv_path} ({err}); fix or move it"
        ) from err
    if rows[id_column].duplicated().any():
        logger.warning(
            "%s: repeated ids in column %r; the first row of each is used", csv_path, id_column
        )
        rows = rows.drop_duplicates(subset=id_column)
    by_stem = {path.stem: path for path in files}
    listed = []
    for record in rows.to_dict(orient="records"):
        sample_id = str(record[id_column])
        if sample_id in by_stem:
            metadata = {str(k): _plain(v) for k, v in record.items()}
            listed.append(ListedSlide(by_stem.pop(sample_id), sample_id, metadata))
    if len(listed) < len(rows):
        logger.info(
            "%s: %d of %d rows have no .h5ad file in %s (not downloaded?); skipped",
            csv_path,
            len(rows) - len(listed),
            len(rows),
            files[0].parent,
        )
    if by_stem:
        logger.warning(
            "%s: %d .h5ad files are not in %s (%s); read without metadata",
            folder,
            len(by_stem),
            csv_path.name,
            ", ".join(sorted(by_stem)),
        )
        listed.extend(ListedSlide(path) for path in sorted(by_stem.values()))
    return listed


def _scale_from_metadata(adata: ad.AnnData, metadata: Mapping[str, Any]) -> None:
    """Record the platform and µm per pixel the metadata row states, unless the slide has them."""
    info = sagefm_info(adata)
    info[METADATA_KEY] = dict(metadata)
    platform = platform_from_name(metadata.get(_PLATFORM_COLUMN, ""))
    if platform != "unknown":
        info.setdefault(Keys.PLATFORM, platform)
    if Keys.UM_PER_UNIT not in info:
        for column in _PIXEL_SIZE_COLUMNS:
            try:
                value = float(metadata.get(column))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                continue
            if math.isfinite(value) and value > 0:
                info[Keys.UM_PER_UNIT] = value
                info[Keys.SCALE_SOURCE] = f"metadata:{column}"
                break
    adata.uns[Keys.UNS] = info


def read_listed_slide(slide: ListedSlide, *, sample_id: str | None = None) -> ad.AnnData:
    """One ``.h5ad`` slide as `read` gives it, with its table row in uns["sagefm"]["metadata"]."""
    adata = load_h5ad(slide.path)
    if slide.metadata:
        _scale_from_metadata(adata, slide.metadata)
    chosen = sample_id or slide.sample_id or slide_id_in_file(adata, slide.path)
    return standardize_slide(adata, source_path=slide.path, sample_id=chosen)
