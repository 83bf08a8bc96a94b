"""Class areas of a class map, on the ellipsoid, whatever the grid CRS.

Pixel areas come from the pixel corners projected into a Lambert azimuthal equal-area
(LAEA) projection centred on the tile: LAEA on the WGS84 ellipsoid preserves area, so the
shoelace area of each projected pixel is its area on the ellipsoid. Areas are summed tile
by tile (one Dask task per chunk), so the class map is never loaded whole.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import dask.array
import geopandas as gpd
import numpy as np
import odc.geo.xr  # noqa: F401  (registers the .odc accessor)
import pyproj
import rasterio.features
import shapely
import xarray as xr
from odc.geo.geobox import GeoBox

from eoseg.classes import IGNORE_ID, ClassSchema
from eoseg.dates import check_one_date
from eoseg.errors import (
    GeoreferenceError,
    InputNotFoundError,
    InvalidParameterError,
    NoOverlapError,
    UnreadableVectorError,
)
from eoseg.grid import describe_lonlat, parse_bbox, raster_tiles

log = logging.getLogger(__name__)

_EXACT_MAX_CORNERS = 2**18
"""Tiles with at most this many pixel corners are projected corner by corner."""
_STEP = 16
"""Corner stride for larger tiles; corners in between are interpolated bilinearly."""


@dataclass(frozen=True, slots=True)
class ClassAreas:
    """Areas of each class of a class map inside an area of interest (AOI).

    Attributes:
        class_names: Class names in id order.
        class_km2: Area of each class in km², in id order.
        nodata_km2: Area of nodata (255) pixels in km².
        total_km2: Area of all pixels counted (pixel centres inside the AOI, or the whole
            grid) in km²; ``sum(class_km2) + nodata_km2``.
        valid_km2: ``total_km2 - nodata_km2``.
        aoi_km2: Geodesic area of the AOI geometry itself (``None`` without an AOI); larger
            than ``total_km2`` where the AOI reaches beyond the map.
    """

    class_names: tuple[str, ...]
    class_km2: tuple[float, ...]
    nodata_km2: float
    total_km2: float
    valid_km2: float
    aoi_km2: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: totals and one entry per class with its share of valid area."""
        valid = self.valid_km2
        return {
            "total_km2": self.total_km2,
            "valid_km2": valid,
            "nodata_km2": self.nodata_km2,
            "aoi_km2": self.aoi_km2,
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
    if step is None:
        step = 1 if (ny + 1) * (nx + 1) <= _EXACT_MAX_CORNERS else _STEP
    if step < 1:
        raise InvalidParameterError(f"step must be >= 1; found {step}")
    rows = _sample_index(ny, step)
    cols = _sample_index(nx, step)
    a = geobox.affine
    cc, rr = np.meshgrid(cols.astype(np.float64), rows.astype(np.float64))
    gx = a.a * cc + a.b * rr + a.c
    gy = a.d * cc + a.e * rr + a.f
    to_laea = pyproj.Transformer.from_crs(_crs(geobox), _laea_for(geobox), always_xy=True)
    px, py = to_laea.transform(gx, gy)
    if step > 1:
        wy = _interp_weights(rows, ny + 1)
        wx = _interp_weights(cols, nx + 1)
        px = wy.T @ px @ wx
        py = wy.T @ py @ wx
    # Shoelace of a quadrilateral: half the cross product of its diagonals.
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
    tile); tiles that the AOI misses are never read. A pixel belongs to the AOI when its
    centre lies inside it.

    Args:
        classmap: ``(y, x)`` uint8 class ids, 255 = nodata, georeferenced (``.odc.geobox``).
        schema: The classes of the map.
        aoi: A shapely geometry in EPSG:4326, or a GeoDataFrame in any CRS (its features
            are unioned); ``None`` counts the whole grid.

    Returns:
        The areas in km².

    Raises:
        GeoreferenceError: The map or the AOI has no CRS.
        NoOverlapError: The AOI covers no pixel centre of the map.
        InvalidParameterError: The map holds class ids outside ``schema``.
    """
    check_one_date(classmap, "class_areas")
    geobox, data, slices = raster_tiles(classmap)
    aoi_map, aoi_km2 = _aoi_in_map_crs(aoi, geobox)

    tasks = []
    blocks = data.to_delayed()
    for (ys, xs), block in zip(slices, blocks.ravel(), strict=True):
        tile = geobox[ys, xs]
        shape = None
        if aoi_map is not None:
            shape = shapely.clip_by_rect(aoi_map, *tile.extent.geom.bounds)
            if shape.is_empty:
                continue
        tasks.append(dask.delayed(_tile_areas)(block, tile, shape))
    sums = np.zeros(256, dtype=np.float64)
    for part in dask.compute(*tasks):
        sums += part
    n = len(schema)
    unknown = [i for i in range(n, IGNORE_ID) if sums[i] > 0]
    if unknown:
        raise InvalidParameterError(
            f"class map holds ids {unknown} that the schema ({n} classes, ids 0..{n - 1}) "
            "lacks: pass the schema the map was made with"
        )
    total = float(sums.sum()) / 1e6
    if aoi_map is not None and total == 0.0:
        to_ll = pyproj.Transformer.from_crs(_crs(geobox), 4326, always_xy=True)
        aoi_ll = to_ll.transform_bounds(*aoi_map.bounds)
        raise NoOverlapError(_no_overlap_message(aoi_ll, geobox, "covers no pixel centre"))
    nodata = float(sums[IGNORE_ID]) / 1e6
    return ClassAreas(
        class_names=schema.names,
        class_km2=tuple(float(v) / 1e6 for v in sums[:n]),
        nodata_km2=nodata,
        total_km2=total,
        valid_km2=total - nodata,
        aoi_km2=aoi_km2,
    )


def read_aoi(spec: str) -> shapely.Geometry:
    """Read an area of interest as one geometry in EPSG:4326.

    Args:
        spec: A path to a GeoJSON/GeoPackage file (features are unioned, any CRS) or a
            ``"minx,miny,maxx,maxy"`` box in EPSG:4326 degrees.

    Returns:
        A valid polygonal shapely geometry in EPSG:4326.

    Raises:
        InputNotFoundError: ``spec`` is neither an existing file nor a box.
        InvalidParameterError: The box is malformed or outside lon/lat ranges.
        UnreadableVectorError: The file cannot be read or holds no polygon.
        GeoreferenceError: The file has no CRS.
    """
    path = Path(spec).expanduser()
    if path.is_file():
        return _read_aoi_file(path)
    parts = spec.split(",")
    if len(parts) != 4:
        raise InputNotFoundError(
            f"AOI {spec!r} is neither an existing file nor a box: give a GeoJSON/GeoPackage "
            "path or 'minx,miny,maxx,maxy' in EPSG:4326 degrees"
        )
    return shapely.box(*parse_bbox(spec, "--aoi"))


def write_areas_csv(areas: ClassAreas, path: str | os.PathLike[str]) -> Path:
    """Write class areas as CSV (``class_id,class_name,area_km2,fraction``), atomically.

    One row per class plus a ``nodata`` row (id 255, no fraction); fractions are of the
    valid area. Returns the path written.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with tmp.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["class_id", "class_name", "area_km2", "fraction"])
            for item in areas.to_dict()["classes"]:
                frac = "" if item["fraction"] is None else f"{item['fraction']:.6f}"
                w.writerow([item["id"], item["name"], f"{item['km2']:.6f}", frac])
            w.writerow([IGNORE_ID, "nodata", f"{areas.nodata_km2:.6f}", ""])
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _tile_areas(block: np.ndarray, tile: GeoBox, shape: shapely.Geometry | None) -> np.ndarray:
    """Area in m² of each of the 256 ids in one tile (pixel centres inside ``shape``)."""
    areas = pixel_areas(tile)
    block = np.asarray(block)
    if shape is None:
        return np.bincount(block.ravel(), weights=areas.ravel(), minlength=256)
    inside = rasterio.features.geometry_mask(
        [shape], out_shape=block.shape, transform=tile.affine, invert=True
    )
    return np.bincount(block[inside], weights=areas[inside], minlength=256)


def _aoi_in_map_crs(
    aoi: shapely.Geometry | gpd.GeoDataFrame | None, geobox: GeoBox
) -> tuple[shapely.Geometry | None, float | None]:
    """The AOI in the map CRS and its geodesic area in km² (None, None without AOI)."""
    if aoi is None:
        return None, None
    if isinstance(aoi, gpd.GeoDataFrame | gpd.GeoSeries):
        if aoi.crs is None:
            raise GeoreferenceError("AOI has no CRS: set one (e.g. gdf.set_crs('EPSG:4326'))")
        # Densify in the source CRS first so its straight edges survive the reprojection.
        minx, miny, maxx, maxy = aoi.total_bounds
        densified = aoi.geometry.segmentize(max(maxx - minx, maxy - miny) / 256 or 1.0)
        geom = shapely.make_valid(densified.to_crs(4326).union_all())
    else:
        geom = shapely.make_valid(aoi)
    geom = _polygonal(geom)
    if geom.is_empty:
        raise InvalidParameterError("AOI holds no polygon: give an area, not points or lines")
    # Densify in degrees so straight lon/lat edges stay faithful once projected.
    geom = shapely.segmentize(geom, 0.001)
    geod = pyproj.Geod(ellps="WGS84")
    aoi_km2 = abs(geod.geometry_area_perimeter(geom)[0]) / 1e6
    to_map = pyproj.Transformer.from_crs(4326, _crs(geobox), always_xy=True)
    mapped = shapely.make_valid(
        shapely.transform(geom, lambda xy: np.column_stack(to_map.transform(xy[:, 0], xy[:, 1])))
    )
    if not mapped.intersects(shapely.box(*geobox.extent.geom.bounds)):
        raise NoOverlapError(_no_overlap_message(geom.bounds, geobox, "lies outside the area"))
    return mapped, aoi_km2


def _polygonal(geom: shapely.Geometry) -> shapely.Geometry:
    """Keep only the polygons of a (possibly mixed) geometry."""
    parts = [p for p in shapely.get_parts(geom) if p.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(parts) if parts else shapely.Polygon()


def _no_overlap_message(
    aoi_lonlat: tuple[float, float, float, float], geobox: GeoBox, found: str
) -> str:
    """One sentence with both extents in degrees (the AOI's as given, for a box)."""
    to_ll = pyproj.Transformer.from_crs(_crs(geobox), 4326, always_xy=True)
    grid_ll = to_ll.transform_bounds(*geobox.extent.geom.bounds)
    return (
        f"the AOI ({describe_lonlat(aoi_lonlat)}) {found} of the class map "
        f"({describe_lonlat(grid_ll)}): choose an AOI inside the mapped area, or check its "
        "CRS (a box is lon,lat order, in degrees)"
    )


def _read_aoi_file(path: Path) -> shapely.Geometry:
    try:
        gdf = gpd.read_file(path)
    except Exception as e:  # pyogrio raises several types for unreadable files
        raise UnreadableVectorError(
            f"AOI file {str(path)!r} cannot be read as GeoJSON/GeoPackage ({e}): "
            "check the file or give 'minx,miny,maxx,maxy' instead"
        ) from e
    if gdf.crs is None:
        raise GeoreferenceError(f"AOI file {str(path)!r} has no CRS: assign one and save again")
    geom = _polygonal(shapely.make_valid(gdf.to_crs(4326).union_all()))
    if geom.is_empty:
        raise UnreadableVectorError(
            f"AOI file {str(path)!r} holds no polygon ({len(gdf)} features): give an area"
        )
    return geom


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


def _laea_for(geobox: GeoBox) -> pyproj.CRS:
    """An ellipsoidal LAEA projection centred on the grid."""
    ny, nx = geobox.shape
    cx, cy = geobox.affine * (nx / 2, ny / 2)
    lon, lat = pyproj.Transformer.from_crs(_crs(geobox), 4326, always_xy=True).transform(cx, cy)
    if not (math.isfinite(lon) and math.isfinite(lat)):
        raise GeoreferenceError(f"grid centre ({cx}, {cy}) in {geobox.crs} has no lon/lat")
    return pyproj.CRS.from_proj4(f"+proj=laea +lat_0={lat} +lon_0={lon} +ellps=WGS84 +units=m")


def _crs(geobox: GeoBox) -> pyproj.CRS:
    if geobox.crs is None:
        raise GeoreferenceError("grid has no CRS: give the class map a spatial_ref")
    return geobox.crs.proj
