"""Class areas of a class map, on the ellipsoid, whatever the grid CRS.

Pixel areas come from the pixel corners projected into a Lambert azimuthal equal-area
(LAEA) projection centred on the tile: LAEA on the WGS84 ellipsoid preserves area, so the
shoelace area of each projected pixel is its area on the ellipsoid. Areas are summed tile
by tile (one Dask task per chunk), so the class map is never loaded whole.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dask
import dask.array
import geopandas as gpd
import numpy as np
import odc.geo.xr  # noqa: F401  (registers the .odc accessor)
import pyproj
import shapely
import xarray as xr
from odc.geo.geobox import GeoBox

from eoseg.aoi import MapShape, aoi_on_grid, grid_crs, no_overlap_message
from eoseg.classes import IGNORE_ID, ClassSchema
from eoseg.coverage import tile_covers
from eoseg.dates import check_one_date
from eoseg.errors import GeoreferenceError, InvalidParameterError, NoOverlapError
from eoseg.grid import raster_tiles

log = logging.getLogger(__name__)

_EXACT_MAX_CORNERS = 2**18
"""Tiles with at most this many pixel corners are projected corner by corner."""
_STEP = 16
"""Corner stride for larger tiles; corners in between are interpolated bilinearly."""
_BATCH = 64
"""Tiles computed between two progress reports (enough to keep every core busy)."""


@dataclass(frozen=True, slots=True)
class ClassAreas:
    """Areas of each class of a class map inside an area of interest (AOI).

    Attributes:
        class_names: Class names in id order.
        class_km2: Area of each class in km², in id order.
        nodata_km2: Area of nodata (255) pixels in km².
        total_km2: Area counted (inside the AOI, border pixels by their covered fraction;
            or the whole grid) in km²; ``sum(class_km2) + nodata_km2``.
        valid_km2: ``total_km2 - nodata_km2``.
        aoi_km2: Geodesic area of the AOI geometry itself (``None`` without an AOI); larger
            than ``total_km2`` where the AOI reaches beyond the map.
        tiles: Number of map tiles read (those the AOI touches), when known.
    """

    class_names: tuple[str, ...]
    class_km2: tuple[float, ...]
    nodata_km2: float
    total_km2: float
    valid_km2: float
    aoi_km2: float | None = None
    tiles: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: totals and one entry per class with its share of valid area."""
        valid = self.valid_km2
        return {
            "total_km2": self.total_km2,
            "valid_km2": valid,
            "nodata_km2": self.nodata_km2,
            "aoi_km2": self.aoi_km2,
            "tiles": self.tiles,
            "classes": [
                {
                    "id": i,
                    "name": name,
                    "km2": km2,
                    "fraction": km2 / valid if valid > 0 else None,
                }
                for i, (name, km2) in enumerate(zip(self.class_names, self.class_km2, strict=True))
            ],
        }


def pixel_areas(geobox: GeoBox, *, step: int | None = None) -> np.ndarray:
    """Area of each pixel of a grid on the WGS84 ellipsoid.

    Args:
        geobox: The grid (usually one tile of it), in any CRS.
        step: Corner stride: corners are projected exactly every ``step`` rows/columns
            and interpolated bilinearly in between (relative error about 1e-7 for a
            20 km UTM tile, 2e-6 for a 0.6-degree and 1e-4 for a 20-degree EPSG:4326
            tile). ``None`` projects every corner of tiles up to 512x512 pixels and uses
            16 above; 1 is exact.

    Returns:
        ``float64`` array of shape ``geobox.shape`` in m².
    """
    ny, nx = geobox.shape
    a = geobox.affine
    if nx > 1 and a.b == 0 and a.d == 0 and grid_crs(geobox).is_geographic:
        # On a lon/lat grid a pixel's area depends on its row alone: one exact column.
        return np.repeat(pixel_areas(geobox[:, :1], step=1), nx, axis=1)
    if step is None:
        step = 1 if (ny + 1) * (nx + 1) <= _EXACT_MAX_CORNERS else _STEP
    if step < 1:
        raise InvalidParameterError(f"step must be >= 1; found {step}")
    to_laea = _to_laea(geobox)
    if step == 1:
        return _shoelace(*_corners(a, np.arange(ny + 1), np.arange(nx + 1), to_laea))
    # The area is smooth over a tile: exact at every step-th pixel, bilinear in between
    # (one small matrix product instead of projecting and interpolating every corner).
    rows, cols = _sample_index(ny - 1, step), _sample_index(nx - 1, step)
    px, py = _corners(a, np.append(rows, rows + 1), np.append(cols, cols + 1), to_laea)
    n, m = len(rows), len(cols)
    quad = [np.ix_(np.r_[i : i + n], np.r_[j : j + m]) for i in (0, n) for j in (0, m)]
    xs = [px[q] for q in quad]  # corners (top-left, top-right, bottom-left, bottom-right)
    ys = [py[q] for q in quad]
    sampled = 0.5 * np.abs((xs[3] - xs[0]) * (ys[2] - ys[1]) - (xs[2] - xs[1]) * (ys[3] - ys[0]))
    return _interp_weights(rows, ny).T @ sampled @ _interp_weights(cols, nx)


def _corners(
    a: Any, rows: np.ndarray, cols: np.ndarray, to_laea: pyproj.Transformer
) -> tuple[np.ndarray, np.ndarray]:
    """LAEA coordinates of the pixel corners at grid ``rows`` x ``cols``."""
    cc, rr = np.meshgrid(cols.astype(np.float64), rows.astype(np.float64))
    return to_laea.transform(a.a * cc + a.b * rr + a.c, a.d * cc + a.e * rr + a.f)


def _shoelace(px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Areas of the quadrilaterals of a grid of corners: half the cross product of the
    diagonals."""
    dx1 = px[1:, 1:] - px[:-1, :-1]
    dy1 = py[1:, 1:] - py[:-1, :-1]
    dx2 = px[1:, :-1] - px[:-1, 1:]
    dy2 = py[1:, :-1] - py[:-1, 1:]
    return np.abs(dx1 * dy2 - dx2 * dy1) * 0.5


def class_areas(
    classmap: xr.DataArray,
    schema: ClassSchema,
    *,
    aoi: shapely.Geometry | gpd.GeoDataFrame | None = None,
) -> ClassAreas:
    """Area of each class of a class map, optionally inside an area of interest.

    Works tile by tile over the Dask chunks of ``classmap`` (a numpy-backed map is one
    tile); tiles that the AOI misses are never read. A pixel on the AOI's border counts
    with the fraction of its area inside it (`eoseg.coverage`), so the class areas and
    nodata add up to the AOI's geodesic area where the map covers it.

    Args:
        classmap: ``(y, x)`` uint8 class ids, 255 = nodata, georeferenced (``.odc.geobox``).
        schema: The classes of the map.
        aoi: A shapely geometry in EPSG:4326, or a GeoDataFrame in any CRS (its features
            are unioned); ``None`` counts the whole grid.

    Returns:
        The areas in km².

    Raises:
        GeoreferenceError: The map or the AOI has no CRS.
        NoOverlapError: The AOI misses the map.
        InvalidParameterError: The map holds class ids outside ``schema``.
    """
    check_one_date(classmap, "class_areas")
    geobox, _, _ = raster_tiles(classmap)
    shape = None if aoi is None else aoi_on_grid(aoi, geobox)
    sums, tiles = shape_sums(classmap, schema, None if shape is None else [shape])
    return areas_of(sums[0, 0], schema, tiles=tiles, aoi_km2=None if shape is None else shape.km2)


def shape_sums(
    classmap: xr.DataArray,
    schema: ClassSchema,
    shapes: list[MapShape] | None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, int]:
    """Area in m² of each id (256) per shape and date, summed tile by tile on Dask.

    Args:
        classmap: ``(y, x)`` or ``(time, y, x)`` class ids, georeferenced.
        schema: The classes of the map (ids beyond it are refused).
        shapes: Polygons in the map's CRS; ``None`` counts the whole grid as one shape.
        progress: Called with ``(tiles done, tiles to read)`` as batches finish.

    Returns:
        ``(sums, tiles)``: float64 ``(n_shapes, n_dates, 256)`` and the number of tiles
        read (tiles no shape touches are never read).

    Raises:
        InvalidParameterError: The map holds ids outside ``schema``.
        NoOverlapError: The shapes cover no pixel.
    """
    dated = "time" in classmap.dims
    geobox, _, slices = raster_tiles(classmap.isel(time=0) if dated else classmap)
    data = (classmap.transpose("time", ...) if dated else classmap).data
    if not isinstance(data, dask.array.Array):
        data = dask.array.from_array(np.asarray(data), chunks=-1)
    data = (data if dated else data[None]).rechunk({0: -1})
    geoms = None if shapes is None else [s.geometry for s in shapes]
    tasks = []
    for (ys, xs), block in zip(slices, data.to_delayed().ravel(), strict=True):
        tile = geobox[ys, xs]
        if geoms is None or any(_touches(g, tile) for g in geoms):
            tasks.append(dask.delayed(_tile_sums)(block, tile, geoms))
    sums = np.zeros((1 if geoms is None else len(geoms), data.shape[0], 256))
    for start in range(0, len(tasks), _BATCH):
        for part in dask.compute(*tasks[start : start + _BATCH]):
            sums += part
        if progress is not None:
            progress(min(start + _BATCH, len(tasks)), len(tasks))
    n = len(schema)
    unknown = [i for i in range(n, IGNORE_ID) if sums[..., i].sum() > 0]
    if unknown:
        raise InvalidParameterError(
            f"class map holds ids {unknown} that the schema ({n} classes, ids 0..{n - 1}) "
            "lacks: pass the schema the map was made with"
        )
    if geoms is not None and sums.sum() == 0.0:
        to_ll = pyproj.Transformer.from_crs(grid_crs(geobox), 4326, always_xy=True)
        bounds = to_ll.transform_bounds(*shapely.union_all(geoms).bounds)
        raise NoOverlapError(no_overlap_message(bounds, geobox, "covers none of"))
    return sums, len(tasks)


def areas_of(
    sums: np.ndarray, schema: ClassSchema, *, tiles: int | None = None, aoi_km2: float | None
) -> ClassAreas:
    """`ClassAreas` of one shape and date from its 256 sums in m²."""
    total = float(sums.sum()) / 1e6
    nodata = float(sums[IGNORE_ID]) / 1e6
    return ClassAreas(
        class_names=schema.names,
        class_km2=tuple(float(v) / 1e6 for v in sums[: len(schema)]),
        nodata_km2=nodata,
        total_km2=total,
        valid_km2=total - nodata,
        aoi_km2=aoi_km2,
        tiles=tiles,
    )


def _touches(geom: shapely.Geometry, tile: GeoBox) -> bool:
    return bool(shapely.intersects(geom, shapely.box(*tile.extent.geom.bounds)))


def _tile_sums(
    block: np.ndarray, tile: GeoBox, shapes: list[shapely.Geometry] | None
) -> np.ndarray:
    """Area in m² of each of the 256 ids, per shape and date, in one tile."""
    areas = pixel_areas(tile).ravel()
    flat = np.asarray(block).reshape(block.shape[0], -1)
    if shapes is None:
        return np.stack([np.bincount(d, weights=areas, minlength=256) for d in flat])[None]
    out = np.zeros((len(shapes), flat.shape[0], 256))
    box = shapely.box(*tile.extent.geom.bounds)
    inside = [bool(shapely.contains_properly(s, box)) for s in shapes]
    for k in (k for k, full in enumerate(inside) if full):
        out[k] = [np.bincount(d, weights=areas, minlength=256) for d in flat]
    partial = [k for k, full in enumerate(inside) if not full]
    for k, cover in zip(partial, tile_covers(tile, [shapes[k] for k in partial]), strict=True):
        if cover.index.size == 0:
            continue
        weights = areas[cover.index] * cover.fraction
        for t, d in enumerate(flat):
            out[k, t] = np.bincount(d[cover.index], weights=weights, minlength=256)
    return out


def _sample_index(n: int, step: int) -> np.ndarray:
    """Corner indices 0, step, 2*step, ..., n (n always included)."""
    idx = np.arange(0, n + 1, step)
    return idx if idx[-1] == n else np.append(idx, n)


def _interp_weights(samples: np.ndarray, n: int) -> np.ndarray:
    """``(len(samples), n)`` linear interpolation weights from sample indices to 0..n-1."""
    fine = np.arange(n, dtype=np.float64)
    j = np.clip(np.searchsorted(samples, fine, side="right") - 1, 0, len(samples) - 2)
    t = (fine - samples[j]) / (samples[j + 1] - samples[j])
    w = np.zeros((len(samples), n))
    cols = np.arange(n)
    w[j, cols] = 1.0 - t
    w[j + 1, cols] += t
    return w


def _to_laea(geobox: GeoBox) -> pyproj.Transformer:
    """From the grid's CRS to an ellipsoidal LAEA projection centred near the grid (to a
    tenth of a degree, so neighbouring tiles share one transformer: building one costs
    more than projecting a tile's corners)."""
    ny, nx = geobox.shape
    cx, cy = geobox.affine * (nx / 2, ny / 2)
    crs = grid_crs(geobox)
    lon, lat = _to_lonlat(crs.to_wkt()).transform(cx, cy)
    if not (math.isfinite(lon) and math.isfinite(lat)):
        raise GeoreferenceError(f"grid centre ({cx}, {cy}) in {geobox.crs} has no lon/lat")
    return _laea_transformer(crs.to_wkt(), round(lat, 1), round(lon, 1))


@functools.lru_cache(maxsize=64)
def _to_lonlat(wkt: str) -> pyproj.Transformer:
    return pyproj.Transformer.from_crs(pyproj.CRS.from_wkt(wkt), 4326, always_xy=True)


@functools.lru_cache(maxsize=256)
def _laea_transformer(wkt: str, lat: float, lon: float) -> pyproj.Transformer:
    laea = pyproj.CRS.from_proj4(f"+proj=laea +lat_0={lat} +lon_0={lon} +ellps=WGS84 +units=m")
    return pyproj.Transformer.from_crs(pyproj.CRS.from_wkt(wkt), laea, always_xy=True)
