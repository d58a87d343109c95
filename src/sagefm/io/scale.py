"""Physical scale of a slide: micrometres per unit of ``obsm["spatial"]``, and how it was found.

Sources, first that applies:

1. ``uns["sagefm"]["um_per_unit"]`` already set (by sagefm, by a reader from metadata, or by the
   user): kept as it is.
2. The spot lattice, when the platform is known: the median nearest-neighbour distance in
   coordinate units is the platform's centre-to-centre distance (Visium 100 µm, legacy ST 200 µm):
   ``um_per_unit = centre_to_centre_um / spacing``. Preferred to the scalefactors because Space
   Ranger's ``spot_diameter_fullres`` spans a 65 µm spot (10x's definition), not the 55 µm one, so
   on DLPFC the scalefactors read as 55 µm are 28% off the lattice.
3. ``uns["spatial"][library]["scalefactors"]["spot_diameter_fullres"]`` (spot diameter in pixels)
   and the platform's spot diameter, when the spacing cannot be measured (a single spot).
4. Nothing known: the coordinates are taken to be micrometres (``um_per_unit = 1``), with a warning.

The platform comes from ``uns["sagefm"]["platform"]``, else ``uns["spatial"][library]["metadata"]``
(``"platform"``, e.g. her2st's "legacy ST"), else the array indices, else the spot positions, else
the reader's hint (a Space Ranger folder is Visium). Metadata may also give
``spot_diameter_um`` and ``center_to_center_um``, which then replace the platform defaults.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import anndata as ad
import numpy as np

from sagefm._constants import Keys
from sagefm.errors import InputDataError
from sagefm.io.lattice import (
    PLATFORM_GEOMETRY,
    Platform,
    SpotGeometry,
    coordinates_from_array,
    median_spacing,
    platform_from_array,
    platform_from_coordinates,
    platform_from_name,
)

logger = logging.getLogger(__name__)

_ARRAY_COLUMNS = ("array_row", "array_col")
# Scalefactors and lattice disagreeing by more than this is reported (see `_cross_check`).
_SCALE_DISAGREEMENT = 0.1


def physical_scale(adata: ad.AnnData) -> float:
    """Micrometres per unit of ``adata.obsm["spatial"]``; computed once and recorded.

    Writes ``um_per_unit``, ``scale_source`` ("uns", "metadata:<column>", "scalefactors", "lattice",
    "array_coordinates" or "assumed_um") and ``platform`` ("visium", "legacy_st", "unknown") into
    ``adata.uns["sagefm"]`` (not on a view, which is left untouched). Without ``obsm["spatial"]``
    but with ``obs["array_row"]``/``obs["array_col"]``, writes coordinates in micrometres laid out
    on the platform lattice into ``obsm["spatial"]`` and returns 1.0.

    Raises `InputDataError` when the slide has neither coordinates nor array indices.
    """
    return record_physical_scale(adata)


def spatial_coordinates(adata: ad.AnnData) -> np.ndarray:
    """``obsm["spatial"]`` checked: (n_spots, 2+) float64, finite x and y, in its own units.

    The one check of spot positions, for readers, the scale and the model. Raises
    `InputDataError` naming the fix when they are missing, not numbers, of the wrong shape, or
    NaN / infinite.
    """
    if Keys.SPATIAL not in adata.obsm:
        raise InputDataError(
            'the AnnData has no spot coordinates: put (x, y) per spot in adata.obsm["spatial"]'
        )
    try:
        coords = np.asarray(adata.obsm[Keys.SPATIAL], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputDataError(f'obsm["spatial"] must hold numbers (x, y per spot): {exc}') from exc
    if coords.ndim != 2 or coords.shape[1] < 2 or coords.shape[0] != adata.n_obs:
        raise InputDataError(
            f'obsm["spatial"] must be (n_spots, 2) x, y per spot, got shape {coords.shape}'
        )
    bad = int((~np.isfinite(coords[:, :2])).any(axis=1).sum())
    if bad:
        raise InputDataError(
            f'{bad} spots have NaN or infinite coordinates in obsm["spatial"]; drop those spots '
            "or fix their positions"
        )
    return coords


def sagefm_info(adata: ad.AnnData) -> dict[str, Any]:
    """A copy of ``adata.uns["sagefm"]`` (empty when absent); `InputDataError` when it is no dict."""
    info = adata.uns.get(Keys.UNS, {})
    if not isinstance(info, Mapping):
        raise InputDataError(
            f'adata.uns["{Keys.UNS}"] must be a dict (sagefm keeps the scale and call parameters '
            f"there), got {type(info).__name__}: delete or rename it"
        )
    return dict(info)


def record_physical_scale(adata: ad.AnnData, *, platform_hint: Platform | None = None) -> float:
    """`physical_scale` with the reader's guess at the platform, used when nothing else tells it."""
    info = sagefm_info(adata)
    library = _library_entry(adata)
    if Keys.UM_PER_UNIT in info:
        value = _checked_scale(info[Keys.UM_PER_UNIT], "uns['sagefm']['um_per_unit']")
        info.setdefault(Keys.SCALE_SOURCE, "uns")
        if Keys.PLATFORM not in info:
            info[Keys.PLATFORM] = _detect_platform(adata, info, library, platform_hint)
        _store(adata, info)
        return value

    stated = _stated_microns_per_pixel(library)
    if stated is not None and Keys.SPATIAL in adata.obsm:
        # Space Ranger HD states the scale: its square bin lattice would otherwise pass for
        # legacy ST's 200 µm lattice and the scale would be 25x off for 8 µm bins.
        info.setdefault(Keys.PLATFORM, "unknown")
        info[Keys.UM_PER_UNIT] = stated
        info[Keys.SCALE_SOURCE] = "microns_per_pixel"
        logger.info("scale from the scalefactors' microns_per_pixel: %.4g µm per unit", stated)
        _store(adata, info)
        return stated
    platform = _detect_platform(adata, info, library, platform_hint)
    info[Keys.PLATFORM] = platform
    if Keys.SPATIAL not in adata.obsm:
        value, source = _lay_out_from_array(adata, platform), "array_coordinates"
    else:
        value, source = _scale_from_coordinates(adata, platform, library)
    info[Keys.UM_PER_UNIT] = value
    info[Keys.SCALE_SOURCE] = source
    _store(adata, info)
    return value


def _store(adata: ad.AnnData, info: dict[str, Any]) -> None:
    # Writing to a view would silently turn it into a copy (with an anndata warning); the caller
    # of a view gets the value without the record.
    if not adata.is_view:
        adata.uns[Keys.UNS] = info


def _checked_scale(value: object, what: str) -> float:
    try:
        scale = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        scale = math.nan
    if not (math.isfinite(scale) and scale > 0):
        raise InputDataError(f"{what} must be a positive number of micrometres, got {value!r}")
    return scale


def _library_entry(adata: ad.AnnData) -> Mapping[str, Any] | None:
    """The slide's ``uns["spatial"][library_id]`` entry, when it is unambiguous."""
    spatial = adata.uns.get(Keys.SPATIAL)
    if not isinstance(spatial, Mapping) or not spatial:
        return None
    entries = {str(key): value for key, value in spatial.items() if isinstance(value, Mapping)}
    if len(entries) == 1:
        return next(iter(entries.values()))
    if Keys.SAMPLE_ID in adata.obs:
        ids = adata.obs[Keys.SAMPLE_ID].astype(str).unique()
        if len(ids) == 1 and str(ids[0]) in entries:
            return entries[str(ids[0])]
    logger.info(
        'uns["spatial"] holds %d libraries and none matches obs["sample_id"]; '
        "their scalefactors are not used",
        len(entries),
    )
    return None


def _stated_microns_per_pixel(library: Mapping[str, Any] | None) -> float | None:
    """``microns_per_pixel`` of the scalefactors (Space Ranger HD writes it), when present."""
    scalefactors = library.get("scalefactors") if library is not None else None
    if not isinstance(scalefactors, Mapping) or "microns_per_pixel" not in scalefactors:
        return None
    return _checked_scale(scalefactors["microns_per_pixel"], "scalefactors microns_per_pixel")


def _library_metadata(library: Mapping[str, Any] | None) -> Mapping[str, Any]:
    metadata = library.get("metadata") if library is not None else None
    return metadata if isinstance(metadata, Mapping) else {}


def _array_indices(adata: ad.AnnData) -> tuple[np.ndarray, np.ndarray] | None:
    if not all(column in adata.obs for column in _ARRAY_COLUMNS):
        return None
    return (
        np.asarray(adata.obs["array_row"], dtype=np.float64),
        np.asarray(adata.obs["array_col"], dtype=np.float64),
    )


def _detect_platform(
    adata: ad.AnnData,
    info: Mapping[str, Any],
    library: Mapping[str, Any] | None,
    platform_hint: Platform | None,
) -> Platform:
    recorded = platform_from_name(info.get(Keys.PLATFORM, ""))
    if recorded != "unknown":
        return recorded
    named = _library_metadata(library).get("platform")
    if named is not None and platform_from_name(named) != "unknown":
        return platform_from_name(named)
    array = _array_indices(adata)
    if array is not None:
        from_array = platform_from_array(*array)
        if from_array != "unknown":
            logger.info("platform %s recognised from the array_row/array_col lattice", from_array)
            return from_array
    if Keys.SPATIAL in adata.obsm:
        from_coords = platform_from_coordinates(np.asarray(adata.obsm[Keys.SPATIAL]))
        if from_coords != "unknown":
            logger.info("platform %s recognised from the spot positions", from_coords)
            return from_coords
    return platform_hint or "unknown"


def _geometry(platform: Platform, library: Mapping[str, Any] | None) -> SpotGeometry | None:
    """The platform's spot geometry, with values the slide's metadata states taking precedence."""
    default = PLATFORM_GEOMETRY.get(platform)
    metadata = _library_metadata(library)
    diameter = metadata.get("spot_diameter_um", default.spot_diameter_um if default else None)
    pitch = metadata.get(
        "center_to_center_um",
        metadata.get("centre_to_centre_um", default.centre_to_centre_um if default else None),
    )
    if diameter is None or pitch is None:
        return None
    return SpotGeometry(
        _checked_scale(diameter, "metadata spot_diameter_um"),
        _checked_scale(pitch, "metadata center_to_center_um"),
    )


def _scale_from_coordinates(
    adata: ad.AnnData, platform: Platform, library: Mapping[str, Any] | None
) -> tuple[float, str]:
    coords = spatial_coordinates(adata)
    geometry = _geometry(platform, library)
    scalefactors = library.get("scalefactors") if library is not None else None
    diameter_units = (
        scalefactors.get("spot_diameter_fullres") if isinstance(scalefactors, Mapping) else None
    )
    if geometry is not None and len(coords) >= 2:
        # The lattice first: centre-to-centre distance is a physical fact of the platform, while
        # Space Ranger's spot_diameter_fullres spans a 65 µm (documented), not the nominal 55 µm, spot.
        spacing = median_spacing(coords)
        value = geometry.centre_to_centre_um / spacing
        logger.info(
            "scale from the spot lattice: %.4g units between spot centres = %g µm (%s)",
            spacing,
            geometry.centre_to_centre_um,
            platform,
        )
        if diameter_units is not None:
            _cross_check(geometry, value, _checked_scale(diameter_units, "spot_diameter_fullres"))
        return value, "lattice"
    if geometry is not None and diameter_units is not None:
        value = geometry.spot_diameter_um / _checked_scale(diameter_units, "spot_diameter_fullres")
        return value, "scalefactors"
    logger.warning(
        'no physical scale found (no uns["sagefm"]["um_per_unit"], no known platform from metadata '
        'or spot lattice): obsm["spatial"] is assumed to be in micrometres. If it is not, set '
        'adata.uns["sagefm"]["um_per_unit"] to the micrometres per coordinate unit'
    )
    return 1.0, "assumed_um"


def _cross_check(geometry: SpotGeometry, lattice_um_per_unit: float, diameter_units: float) -> None:
    """Log when the scalefactors disagree with the spot lattice.

    Space Ranger documents ``spot_diameter_fullres`` as the pixels spanned by a *65 µm* spot, and
    real outputs imply 65–70 µm, while the nominal Visium spot is 55 µm: the two sources can differ
    by up to ~30%. Recorded at info level because it is systematic, not a fault of the data.
    """
    from_scalefactors = geometry.spot_diameter_um / diameter_units
    if abs(from_scalefactors / lattice_um_per_unit - 1.0) > _SCALE_DISAGREEMENT:
        logger.info(
            "the spot lattice (%g µm centre to centre) gives %.4g µm per unit; the scalefactors "
            "(%g µm spots) would give %.4g",
            geometry.centre_to_centre_um,
            lattice_um_per_unit,
            geometry.spot_diameter_um,
            from_scalefactors,
        )


def _lay_out_from_array(adata: ad.AnnData, platform: Platform) -> float:
    array = _array_indices(adata)
    if array is None:
        raise InputDataError(
            'the AnnData has no spot coordinates: put (x, y) per spot in adata.obsm["spatial"] '
            '(or the lattice indices in adata.obs["array_row"] and adata.obs["array_col"])'
        )
    if adata.is_view:
        raise InputDataError(
            'obsm["spatial"] is missing and cannot be derived on a view of an AnnData: '
            "call sagefm.io.physical_scale on adata.copy()"
        )
    adata.obsm[Keys.SPATIAL] = coordinates_from_array(*array, platform)
    logger.warning(
        'obsm["spatial"] is missing: spot centres laid out from array_row/array_col on the %s '
        "lattice, in micrometres (um_per_unit = 1)",
        platform,
    )
    return 1.0
