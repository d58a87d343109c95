"""SpatialData (scverse) objects and ``.zarr`` stores: read a table with its coordinates, write
results back into it.

A SpatialData table annotates a region, a shapes element (Visium spot circles, Visium HD bin
squares, Xenium cell circles or boundaries) whose rows it matches by ``instance_key``. A spot's
coordinates are the centroid of its shape in the chosen coordinate system: the element's
transformation to that system is applied by `spatialdata.get_centroids`, so a ``Scale`` to a
micrometre system gives micrometres. The micrometres per unit of that system are then found as
for every slide (`sagefm.io.physical_scale`: given, Visium lattice, or assumed µm), except for
Visium HD bins read by ``spatialdata-io`` (elements named ``..._square_008um``), whose bin size
is in their name. ``spatialdata`` is the optional extra ``sagefm[spatial]``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from sagefm._constants import Keys
from sagefm.errors import InputDataError, ReaderError
from sagefm.io.lattice import median_spacing
from sagefm.io.standardize import standardize_slide

logger = logging.getLogger(__name__)

#: Coordinate system chosen when the region's element has several and none is given.
DEFAULT_COORDINATE_SYSTEM = "global"
#: Table chosen when a SpatialData object has several and none is given (spatialdata-io's name).
DEFAULT_TABLE = "table"
# spatialdata-io names Visium HD elements and tables "<dataset>_square_008um" / "square_008um".
_HD_BIN_NAME = re.compile(r"square_(\d{3})um")
# What `uns["sagefm"]` says about the scale of one coordinate system.
_SCALE_KEYS = (Keys.UM_PER_UNIT, Keys.SCALE_SOURCE, Keys.PLATFORM, "resolution")


def import_spatialdata() -> Any:
    """The ``spatialdata`` module; a `ReaderError` naming the extra to install when it is missing."""
    try:
        import spatialdata
    except ImportError as err:
        raise ReaderError(
            "reading or writing SpatialData needs the optional extra 'spatial': "
            "pip install 'sagefm[spatial]' (installs spatialdata)"
        ) from err
    return spatialdata


def is_spatialdata(obj: object) -> bool:
    """Whether ``obj`` is a `spatialdata.SpatialData` (checked without importing spatialdata)."""
    return any(
        cls.__name__ == "SpatialData" and cls.__module__.startswith("spatialdata")
        for cls in type(obj).__mro__
    )


def is_zarr_store(path: Path) -> bool:
    """A folder that is a zarr store (``.zarr`` suffix or zarr metadata at its top)."""
    markers = ("zarr.json", ".zgroup", ".zattrs")
    return path.is_dir() and (
        path.suffix.lower() == ".zarr" or any((path / m).is_file() for m in markers)
    )


def read_spatialdata(
    source: Any,
    *,
    table: str | None = None,
    coordinate_system: str | None = None,
    um_per_unit: float | None = None,
    sample_id: str | None = None,
) -> ad.AnnData:
    """A copy of one SpatialData table as a sagefm slide, with coordinates from its region.

    ``source`` is a `spatialdata.SpatialData` or the path of a ``.zarr`` store. ``table``:
    default the only table, else the one named "table". ``coordinate_system``: default the only
    one of the region's element, else "global". ``um_per_unit``: micrometres per unit of that
    coordinate system when known (e.g. 1 for a micrometre system); else it is found from the
    spots (see the module docstring).

    Returns an AnnData following the reader contract (see `sagefm.read`) whose obs_names are the
    table's; ``uns["sagefm"]["spatialdata"]`` records the table, coordinate system and regions.
    Write results back with `write_spatialdata`. Raises `InputDataError` for an object without
    tables, an unknown table or coordinate system, or a table whose rows have no shape.
    """
    spatialdata = import_spatialdata()
    path = None if is_spatialdata(source) else Path(source)
    sdata = source if path is None else _read_zarr(spatialdata, path)
    table_name = _table_name(sdata, table)
    adata = sdata.tables[table_name].copy()
    coords, cs, regions = _table_coordinates(spatialdata, sdata, table_name, coordinate_system)
    adata.obsm[Keys.SPATIAL] = coords
    info: dict[str, Any] = dict(adata.uns.get(Keys.UNS, {}))
    if info.get("spatialdata", {}).get("coordinate_system") != cs:
        # A scale written back by `write_spatialdata` is for the coordinate system read then.
        for key in _SCALE_KEYS:
            info.pop(key, None)
    info["spatialdata"] = {"table": table_name, "coordinate_system": cs, "regions": regions}
    if um_per_unit is not None:
        info[Keys.UM_PER_UNIT], info[Keys.SCALE_SOURCE] = float(um_per_unit), "spatialdata:given"
    else:
        info.update(_visium_hd_scale(coords, [table_name, *regions]))
    adata.uns[Keys.UNS] = info
    default_id = path.stem if path is not None else table_name
    if sample_id is None and Keys.SAMPLE_ID not in adata.obs:
        sample_id = default_id
    where = path if path is not None else Path(f"<SpatialData table {table_name}>")
    return standardize_slide(adata, source_path=where, sample_id=sample_id)


def write_spatialdata(
    sdata: Any,
    adata: ad.AnnData,
    *,
    table: str | None = None,
    obsm: tuple[str, ...] = (Keys.X_EMB,),
    layers: tuple[str, ...] = (Keys.LAYER_IMPUTED,),
) -> None:
    """Put sagefm's results from ``adata`` (read by `read_spatialdata`) back into the table.

    Copies ``adata.obsm[k]`` for the keys ``obsm`` and ``adata.layers[k]`` for the keys
    ``layers`` that exist (embeddings, imputed expression) and ``uns["sagefm"]``, matching rows
    by obs name (table rows ``adata`` lacks get NaN) and genes by position (sagefm may have
    renamed them, never reordered). ``table`` defaults to the one ``adata`` was read from.
    """
    import_spatialdata()
    recorded = adata.uns.get(Keys.UNS, {}).get("spatialdata", {})
    name = table or recorded.get("table") or _table_name(sdata, None)
    if name not in sdata.tables:
        raise InputDataError(f"no table {name!r} in the SpatialData object; it has {_names(sdata)}")
    target = sdata.tables[name]
    rows = pd.Index(adata.obs_names).get_indexer(target.obs_names)
    if (rows < 0).all():
        raise InputDataError(
            f"none of the table {name!r}'s rows is in the AnnData: write back the AnnData that "
            "sagefm.read returned for this table (its obs_names are the table's)"
        )
    for key in (k for k in obsm if k in adata.obsm):
        target.obsm[key] = _rows_by_name(np.asarray(adata.obsm[key]), rows)
    for key in (k for k in layers if k in adata.layers):
        values = np.asarray(adata.layers[key])
        if values.shape[1] != target.n_vars:
            raise InputDataError(
                f'layers["{key}"] has {values.shape[1]} genes, the table {name!r} {target.n_vars}'
            )
        target.layers[key] = _rows_by_name(values, rows)
    target.uns[Keys.UNS] = dict(adata.uns.get(Keys.UNS, {}))


def _rows_by_name(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    out = np.full((rows.size, *values.shape[1:]), np.nan, dtype=np.float32)
    found = rows >= 0
    out[found] = values[rows[found]]
    return out


def _read_zarr(spatialdata: Any, path: Path) -> Any:
    if not path.exists():
        raise ReaderError(f"{path} does not exist; give a SpatialData .zarr store")
    try:
        return spatialdata.read_zarr(path)
    except Exception as err:  # zarr, ome-zarr and spatialdata raise many types for broken stores
        raise ReaderError(
            f"cannot read {path} as a SpatialData store ({type(err).__name__}: {err})"
        ) from err


def _names(sdata: Any) -> list[str]:
    return sorted(sdata.tables)


def _table_name(sdata: Any, table: str | None) -> str:
    names = _names(sdata)
    if not names:
        raise InputDataError(
            "the SpatialData object has no table: sagefm needs a table of counts (an AnnData in "
            "sdata.tables) annotating the spots, bins or cells"
        )
    if table is not None:
        if table not in names:
            raise InputDataError(f"no table {table!r} in the SpatialData object; it has {names}")
        return table
    if len(names) == 1:
        return names[0]
    if DEFAULT_TABLE in names:
        return DEFAULT_TABLE
    raise InputDataError(f"the SpatialData object has several tables {names}: choose one by table=")


def _table_coordinates(
    spatialdata: Any, sdata: Any, table_name: str, coordinate_system: str | None
) -> tuple[np.ndarray, str, list[str]]:
    """(n_obs, 2) float64 centroids of the table's rows in the coordinate system, its name and
    the regions they come from."""
    table = sdata.tables[table_name]
    attrs = table.uns.get("spatialdata_attrs")
    if not isinstance(attrs, Mapping) or attrs.get("region") is None:
        raise InputDataError(
            f"the table {table_name!r} annotates no region, so its rows have no coordinates: parse "
            "it with spatialdata.models.TableModel.parse(table, region=..., region_key=..., "
            "instance_key=...) pointing at the shapes of its spots, bins or cells"
        )
    region = attrs["region"]
    regions = [region] if isinstance(region, str) else [str(r) for r in region]
    region_key, instance_key = attrs.get("region_key"), attrs.get("instance_key")
    coords = np.full((table.n_obs, 2), np.nan)
    chosen = _coordinate_system(spatialdata, sdata, regions, coordinate_system)
    for name in regions:
        if name not in sdata:
            raise InputDataError(f"the table {table_name!r} annotates {name!r}, not in the object")
        centroids = spatialdata.get_centroids(sdata[name], coordinate_system=chosen).compute()
        rows = (
            np.ones(table.n_obs, dtype=bool)
            if len(regions) == 1
            else (table.obs[region_key].astype(str) == name).to_numpy()
        )
        position = pd.Index(centroids.index).get_indexer(table.obs[instance_key].to_numpy()[rows])
        xy = centroids[["x", "y"]].to_numpy(dtype=np.float64)
        coords[np.flatnonzero(rows)[position >= 0]] = xy[position[position >= 0]]
    missing = int(np.isnan(coords).any(axis=1).sum())
    if missing:
        raise InputDataError(
            f"{missing} of the {table.n_obs} rows of table {table_name!r} match no shape of "
            f"{regions} by {instance_key!r}: the table has no coordinates for them"
        )
    return coords, chosen, regions


def _coordinate_system(
    spatialdata: Any, sdata: Any, regions: list[str], coordinate_system: str | None
) -> str:
    available: set[str] = set()
    for name in regions:
        if name in sdata:
            element = sdata[name]
            available |= set(spatialdata.transformations.get_transformation(element, get_all=True))
    if coordinate_system is not None:
        if coordinate_system not in available:
            raise InputDataError(
                f"no coordinate system {coordinate_system!r} for {regions}; they have "
                f"{sorted(available)}"
            )
        return coordinate_system
    if len(available) == 1:
        return next(iter(available))
    if DEFAULT_COORDINATE_SYSTEM in available:
        return DEFAULT_COORDINATE_SYSTEM
    raise InputDataError(
        f"{regions} have several coordinate systems {sorted(available)}: choose one by "
        "coordinate_system="
    )


def _visium_hd_scale(coords: np.ndarray, names: list[str]) -> dict[str, Any]:
    """The scale of spatialdata-io's Visium HD bins (bin size in their name), else nothing."""
    match = next((m for m in map(_HD_BIN_NAME.search, names) if m is not None), None)
    if match is None or len(coords) < 2:
        return {}
    bin_um = float(match.group(1))
    logger.info("Visium HD bins of %g µm (from the name %r)", bin_um, match.string)
    return {
        Keys.UM_PER_UNIT: bin_um / median_spacing(coords),
        Keys.SCALE_SOURCE: "spatialdata:visium_hd_bin_size",
        Keys.PLATFORM: "unknown",  # a square bin grid, not a spot lattice
        "resolution": "visium_hd",
    }
