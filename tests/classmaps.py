"""Helpers for tests of accuracy and area products: class map stores written from arrays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from odc.geo.geobox import GeoBox

from eoseg.classes import ClassSchema, LandClass
from eoseg.grid import grid_coords, iter_tiles
from eoseg.store import create_store, publish, write_tile

UTM = "EPSG:32632"


def schema_of(names: tuple[str, ...]) -> ClassSchema:
    """A class schema with these names (ids in order)."""
    colours = ("#1b7837", "#2166ac", "#d6604d", "#fee08b", "#762a83", "#999999")
    return ClassSchema(
        tuple(LandClass(i, n, colours[i % len(colours)]) for i, n in enumerate(names))
    )


def utm_grid(ny: int, nx: int, left: float = 500_000.0, top: float = 5_300_000.0) -> GeoBox:
    """A 10 m grid in UTM 32N with its top-left corner at (left, top)."""
    return GeoBox.from_bbox((left, top - 10 * ny, left + 10 * nx, top), UTM, resolution=10)


def write_classmap(
    path: Path,
    classes: np.ndarray,
    grid: GeoBox,
    schema: ClassSchema,
    *,
    tile: int = 32,
    attrs: dict[str, Any] | None = None,
) -> Path:
    """Publish ``classes`` (uint8 ``(y, x)``, 255 nodata) as a class map store of ``grid``."""
    zeros = da.zeros(grid.shape.yx, chunks=(tile, tile), dtype="uint8")
    template = xr.Dataset(
        {"class": (("y", "x"), zeros), "confidence": (("y", "x"), zeros)},
        coords=grid_coords(grid),
    )
    for name in ("class", "confidence"):
        template[name].attrs["grid_mapping"] = "spatial_ref"
    template["class"].encoding["fill_value"] = 255
    meta = {"classes": schema.to_dict(), "tile_size": tile, **(attrs or {})}
    staging = create_store(path, template, product="classmap", signature="test", attrs=meta)
    conf = np.full(classes.shape, 200, dtype=np.uint8)
    for t in iter_tiles(grid, tile):
        arrays = {"class": classes[t.ys, t.xs], "confidence": conf[t.ys, t.xs]}
        write_tile(staging, t, arrays, {"run": "test"})
    return publish(path, overwrite=True)
