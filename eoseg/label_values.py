"""The values of a class-id raster, checked before any tile resamples them.

Labels are ``uint8`` class ids; resampling a raster of other values into them would
silently change them: 1.5 becomes 1, and 300 wraps or clamps into another id or 255.
The vector path refuses such values per feature; `check_class_ids` refuses them for a
raster before the labels store is created, reading only the part of the raster under the
grid, strip by strip (memory: one strip, whatever the raster's size).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import rasterio
from odc.geo.geobox import GeoBox
from rasterio.windows import Window, from_bounds

from eoseg.classes import IGNORE_ID
from eoseg.errors import UnreadableRasterError

_STRIP_PIXELS = 1 << 24
"""Pixels read at once (64 MB of float32)."""

_SHOWN = 5
"""Offending values named in a message."""


def check_class_ids(path: Path, grid: GeoBox, num_classes: int) -> None:
    """Refuse a class-id raster whose values under ``grid`` are not class ids.

    Accepted: whole numbers ``0..num_classes-1``, 255 (ignore), the raster's nodata value
    and NaN (no label); everything else is refused, naming the values.

    Raises:
        UnreadableRasterError: The raster holds fractional values or values outside the
            class ids.
    """
    with rasterio.open(path) as src:
        kind = np.dtype(src.dtypes[0])
        if kind == np.uint8 and num_classes >= IGNORE_ID:
            return  # every byte is a class id or 255
        window = _window_under(src, grid)
        if window is None:
            return
        fractional, outside = _bad_values(src, window, num_classes)
        nodata = src.nodata
    if not (fractional or outside):
        return
    found = []
    if fractional:
        found.append(f"{_listed(fractional)} (not whole numbers)")
    if outside:
        found.append(f"{_listed(outside)} (no class id)")
    of_schema = " (the classes of --classes)" if num_classes < IGNORE_ID else ""
    declared = f"its nodata value {nodata:g}" if nodata is not None else "no nodata value"
    raise UnreadableRasterError(
        f"label raster {path} holds {' and '.join(found)}; expected whole class ids "
        f"0..{num_classes - 1}{of_schema}, {IGNORE_ID} (ignore) or its nodata value (it "
        f"declares {declared}): translate codes with --code-map 'code=class,...', round "
        f"fractional values, or declare the nodata value (gdal_edit.py -a_nodata VALUE {path})"
    )


def _window_under(src: rasterio.DatasetReader, grid: GeoBox) -> Window | None:
    """The raster's window covering the grid (one pixel wider), None if they miss."""
    bounds = grid.extent.to_crs(src.crs.to_wkt()).boundingbox
    window = from_bounds(*bounds, transform=src.transform)
    window = Window(
        int(np.floor(window.col_off)) - 1,
        int(np.floor(window.row_off)) - 1,
        int(np.ceil(window.width)) + 3,
        int(np.ceil(window.height)) + 3,
    )
    try:
        return window.intersection(Window(0, 0, src.width, src.height))
    except rasterio.errors.WindowError:
        return None


def _bad_values(
    src: rasterio.DatasetReader, window: Window, num_classes: int
) -> tuple[list[float], list[float]]:
    """Up to `_SHOWN` fractional values and values outside the class ids, strip by strip."""
    fractional: set[float] = set()
    outside: set[float] = set()
    for strip in _strips(window):
        values = src.read(1, window=strip)
        values = values[~_no_label(values, src.nodata)].astype("float64")
        if values.size == 0:
            continue
        whole = np.isfinite(values) & (values == np.round(values))
        fractional.update(np.unique(values[~whole])[:_SHOWN].tolist())
        ids = values[whole]
        bad = (ids < 0) | ((ids >= num_classes) & (ids != IGNORE_ID))
        outside.update(np.unique(ids[bad])[:_SHOWN].tolist())
        if len(fractional) >= _SHOWN or len(outside) >= _SHOWN:
            break
    return sorted(fractional)[:_SHOWN], sorted(outside)[:_SHOWN]


def _no_label(values: np.ndarray, nodata: float | None) -> np.ndarray:
    """Pixels that carry no label: the nodata value, and NaN in float rasters."""
    empty = np.isnan(values) if values.dtype.kind == "f" else np.zeros(values.shape, bool)
    if nodata is not None and not np.isnan(nodata):
        empty |= values == nodata
    return empty


def _strips(window: Window) -> Iterator[Window]:
    rows = max(1, _STRIP_PIXELS // max(1, int(window.width)))
    row0, row1 = int(window.row_off), int(window.row_off + window.height)
    for row in range(row0, row1, rows):
        yield Window(window.col_off, row, window.width, min(rows, row1 - row))


def _listed(values: list[float]) -> str:
    return ", ".join(f"{v:g}" for v in values)
