"""Polygons from a class map: vectorised tile by tile, merged across tile seams.

Each tile (Dask chunk) is vectorised with 4-connectivity (8 makes invalid polygons), in
pixel coordinates of the whole grid: integers, so pieces from neighbouring tiles meet
exactly, and the affine transform to the map CRS is applied once at the end.
Pieces that reach an inner tile edge are merged with the same-class pieces they touch
in neighbouring tiles, so no polygon is cut at a tile border; pieces inside a tile are
final as they are. The polygons of a class map form a coverage (no gaps, no overlaps),
which ``shapely.coverage_simplify`` keeps when simplifying.
"""

from __future__ import annotations

import json
import logging
import math
import os
import uuid
import warnings
from pathlib import Path

import dask
import dask.array
import geopandas as gpd
import numpy as np
import odc.geo.xr  # noqa: F401  (registers the .odc accessor)
import pyproj
import rasterio.errors
import rasterio.features
import scipy.ndimage
import scipy.sparse
import scipy.sparse.csgraph
import shapely
import xarray as xr
from odc.geo.geobox import GeoBox
from rasterio.transform import Affine

from eoseg.aoi import grid_crs
from eoseg.classes import IGNORE_ID, ClassSchema
from eoseg.dates import check_one_date
from eoseg.errors import InvalidParameterError
from eoseg.grid import raster_tiles
from eoseg.outputs import PRODUCT_KEY, check_replaceable
from eoseg.polygon_merge import Pieces, combine, concat, empty, merge_small
from eoseg.stats import pixel_areas

log = logging.getLogger(__name__)

_DRIVERS = {".parquet": None, ".geoparquet": None, ".gpkg": "GPKG", ".geojson": "GeoJSON"}
"""Polygon formats by suffix (``None``: GeoParquet, written by pyarrow)."""


def vectorize(
    classmap: xr.DataArray,
    *,
    schema: ClassSchema,
    confidence: xr.DataArray | None = None,
    simplify_m: float | None = None,
    min_area_m2: float | None = None,
) -> gpd.GeoDataFrame:
    """Polygons of each class of a class map, without seams at tile borders.

    Args:
        classmap: ``(y, x)`` uint8 class ids, 255 = nodata (no polygon), georeferenced
            (``.odc.geobox``); a Dask-backed map is vectorised one chunk (tile) per task.
        schema: The classes of the map (gives ``class_name``).
        confidence: The map's ``confidence`` (top-class probability x 255) on the same
            grid; gives the ``confidence`` column (mean over each polygon's pixels, 0-1).
        simplify_m: If given, simplify the whole coverage with ``shapely.coverage_simplify``
            with this tolerance in metres (`map_tolerance` converts it to the map's units;
            roughly the square root of the area of the triangles removed). Shared edges stay
            shared: no gaps, no overlaps. None keeps the pixel outlines.
        min_area_m2: If given, polygons smaller than this (m², on the ellipsoid) are merged
            into a neighbour (`eoseg.polygon_merge.merge_small`); the coverage stays
            gap-free.

    Returns:
        GeoDataFrame with ``class_id`` (int32), ``class_name``, ``area_m2`` (float64, the
        area of the polygon's pixels on the WGS84 ellipsoid: exact for the pixel outlines,
        and kept as it is after simplification), ``confidence`` (float32, with
        ``confidence``), ``tile_row`` (int32, the tile row of the polygon's top pixel row:
        its partition) and ``geometry`` (one Polygon per row), in the map's CRS, sorted
        by class and position.

    Raises:
        GeoreferenceError: The map has no CRS/transform.
        InvalidParameterError: ``simplify_m`` or ``min_area_m2`` is negative.
    """
    check_one_date(classmap, "vectorize")
    for name, value in (("simplify_m", simplify_m), ("min_area_m2", min_area_m2)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise InvalidParameterError(f"{name} must be a number >= 0; found {value}")
    geobox, data, slices = raster_tiles(classmap)
    pieces = _tile_pieces(geobox, data, slices, confidence)
    if min_area_m2:
        pieces = merge_small(pieces, min_area_m2)
    tile_rows = (shapely.bounds(pieces.geometry)[:, 1] // data.chunks[0][0]).astype(np.int32)
    geometry = pieces.geometry
    if simplify_m:
        # A coverage must be edge-matched: put a vertex on every pixel corner along each
        # edge (exact in pixel units), so neighbours share every vertex, T-junctions too.
        geometry = shapely.segmentize(geometry, 1.0)
    a = geobox.affine
    geometry = shapely.transform(
        geometry,
        lambda c: np.column_stack(
            (a.a * c[:, 0] + a.b * c[:, 1] + a.c, a.d * c[:, 0] + a.e * c[:, 1] + a.f)
        ),
    )
    if simplify_m:
        geometry = shapely.coverage_simplify(geometry, map_tolerance(geobox, simplify_m))
    columns: dict[str, object] = {
        "class_id": pieces.class_id.astype(np.int32),
        "class_name": _names(pieces.class_id.tolist(), schema),
        "area_m2": pieces.area_m2.astype(np.float64),
    }
    if confidence is not None:
        mean = pieces.confidence / np.maximum(pieces.pixels, 1) / 255.0
        columns["confidence"] = mean.astype(np.float32)
    columns["tile_row"] = tile_rows
    gdf = gpd.GeoDataFrame(
        columns,
        geometry=gpd.GeoSeries(geometry),
        crs=geobox.crs.proj if geobox.crs is not None else None,
    )
    gdf = gdf[~gdf.geometry.is_empty]
    bounds = gdf.geometry.bounds
    order = np.lexsort((bounds["minx"].to_numpy(), -bounds["maxy"].to_numpy(), gdf["class_id"]))
    return gdf.iloc[order].reset_index(drop=True)


def map_tolerance(geobox: GeoBox, metres: float) -> float:
    """A length in metres in the units of the map's CRS.

    Projected CRSs convert by their axis unit (1 for metres). On a geographic CRS (e.g.
    EPSG:4326) a degree is a different length north-south and east-west; the tolerance of
    ``coverage_simplify`` bounds an area (triangles of about ``tolerance²``), so metres are
    divided by the geometric mean of the lengths of a degree of latitude and of longitude
    at the map's centre, on the CRS's ellipsoid.
    """
    crs = grid_crs(geobox)
    if not crs.is_geographic:
        return metres / crs.axis_info[0].unit_conversion_factor
    lon, lat = geobox.extent.centroid.points[0]
    geod = crs.get_geod() or pyproj.Geod(ellps="WGS84")
    lat = min(max(lat, -89.0), 89.0)
    m_lat = geod.inv(lon, lat - 0.5, lon, lat + 0.5)[2]
    m_lon = geod.inv(lon - 0.5, lat, lon + 0.5, lat)[2]
    return metres / math.sqrt(m_lat * m_lon)


def _tile_pieces(
    geobox: GeoBox,
    data: dask.array.Array,
    slices: list[tuple[slice, slice]],
    confidence: xr.DataArray | None,
) -> Pieces:
    """Vectorise every tile (one task each), then merge the pieces across tile seams."""
    ny, nx = geobox.shape
    if confidence is None:
        conf_blocks = [None] * len(slices)
    else:
        conf = confidence.data
        if not isinstance(conf, dask.array.Array):
            conf = dask.array.from_array(np.asarray(conf))
        conf_blocks = list(conf.rechunk(data.chunks).to_delayed().ravel())
    tasks = [
        dask.delayed(_vectorize_tile)(block, cblock, geobox[ys, xs], ys.start, xs.start, (ny, nx))
        for (ys, xs), block, cblock in zip(
            slices, data.to_delayed().ravel(), conf_blocks, strict=True
        )
    ]
    finals: list[Pieces] = []
    seams: list[Pieces] = []
    for final, on_seam in dask.compute(*tasks):
        finals.append(final)
        seams.append(on_seam)
    seam = concat(seams)
    merged = [_merge_touching(seam.take(seam.class_id == cid)) for cid in np.unique(seam.class_id)]
    log.debug("vectorised %d tiles", len(tasks))
    return concat(finals + merged)


def write_polygons(
    gdf: gpd.GeoDataFrame, path: str | os.PathLike[str], *, layer: str = "polygons"
) -> Path:
    """Write polygons atomically, in the format named by the suffix.

    ``.parquet``/``.geoparquet`` is GeoParquet (with a bbox covering column), ``.gpkg``
    GeoPackage (layer ``layer``), ``.geojson`` GeoJSON. The file is written aside and
    renamed into place, so a crash never leaves a half-written product under ``path``.

    Args:
        gdf: The polygons (e.g. from `vectorize`).
        path: Output file; replaced if it exists.
        layer: Layer name in a GeoPackage.

    Returns:
        The path written.

    Raises:
        InvalidParameterError: The suffix is not one of the formats above.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _DRIVERS:
        raise InvalidParameterError(
            f"polygon output {str(path)!r} has suffix {path.suffix!r}; expected one of "
            f"{sorted(_DRIVERS)}: rename the output"
        )
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.tmp{suffix}")
    marker = {PRODUCT_KEY: "polygons"}  # what makes the file replaceable by a new export
    try:
        driver = _DRIVERS[suffix]
        if driver is None:
            frame = gdf.copy(deep=False)
            frame.attrs = {**gdf.attrs, **marker}  # kept in the Parquet metadata
            frame.to_parquet(tmp, write_covering_bbox=True)  # readers can filter by bbox
        elif driver == "GPKG":
            gdf.to_file(tmp, driver=driver, layer=layer, metadata=marker)
        else:  # GeoJSON: a member of the feature collection
            gdf.to_file(tmp, driver=driver, FOREIGN_MEMBERS_COLLECTION=json.dumps(marker))
        check_replaceable(path, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _vectorize_tile(
    block: np.ndarray,
    conf: np.ndarray | None,
    tile: GeoBox,
    row0: int,
    col0: int,
    grid_shape: tuple[int, int],
) -> tuple[Pieces, Pieces]:
    """Polygons of one tile in grid pixel coordinates (x = column, y = row), with their
    pixel counts, ellipsoidal areas and confidence sums.

    Each class's 4-connected components are labelled first (the polygons
    ``rasterio.features.shapes`` makes with 4-connectivity, one label each), so the
    statistics of each polygon are sums over its label. Returns the final pieces and,
    apart, those reaching an inner tile edge (a side of the tile that is not the grid's
    border), to be merged with their neighbours.
    """
    block = np.asarray(block)
    labels = np.zeros(block.shape, np.int32)
    label_class = [IGNORE_ID]
    for cid in np.unique(block[block != IGNORE_ID]):
        lab, n = scipy.ndimage.label(block == cid)  # default structure: 4-connectivity
        labels[lab > 0] = lab[lab > 0] + len(label_class) - 1
        label_class.extend([int(cid)] * n)
    if len(label_class) == 1:
        return empty(), empty()
    flat = labels.ravel()
    pixels = np.bincount(flat, minlength=len(label_class))
    area = np.bincount(flat, weights=pixel_areas(tile).ravel(), minlength=len(label_class))
    conf_sum: np.ndarray = np.zeros(len(label_class))
    if conf is not None:
        weights = np.asarray(conf).ravel().astype(np.float64)
        conf_sum = np.bincount(flat, weights=weights, minlength=len(label_class))
    offset = Affine.translation(col0, row0)
    with warnings.catch_warnings():
        # Pixel coordinates are intended here: the map transform is applied once at the end.
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        shapes = rasterio.features.shapes(labels, mask=labels > 0, connectivity=4, transform=offset)
        found = [(int(v), shapely.geometry.shape(g)) for g, v in shapes]
    index = np.array([v for v, _ in found])
    geoms = shapely.make_valid(np.array([g for _, g in found], dtype=object))
    pieces = Pieces(
        geoms, np.asarray(label_class)[index], pixels[index], area[index], conf_sum[index]
    )
    h, w = block.shape
    ny, nx = grid_shape
    b = shapely.bounds(geoms)  # (minx, miny, maxx, maxy): (col, row, col, row)
    seam = (
        ((b[:, 0] == col0) & (col0 > 0))
        | ((b[:, 1] == row0) & (row0 > 0))
        | ((b[:, 2] == col0 + w) & (col0 + w < nx))
        | ((b[:, 3] == row0 + h) & (row0 + h < ny))
    )
    return pieces.take(~seam), pieces.take(seam)


def _merge_touching(pieces: Pieces) -> Pieces:
    """Union the pieces (one class) that share an edge, adding up their statistics.

    Pieces meeting at a corner only stay apart (4-connectivity).
    """
    geoms = pieces.geometry
    n = len(geoms)
    left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    keep = left < right
    left, right = left[keep], right[keep]
    shared = shapely.length(shapely.intersection(geoms[left], geoms[right])) > 0
    left, right = left[shared], right[shared]
    graph = scipy.sparse.coo_matrix((np.ones(len(left)), (left, right)), shape=(n, n))
    n_groups, group = scipy.sparse.csgraph.connected_components(graph, directed=False)
    return combine(pieces, group, n_groups)


def _names(ids: list[int], schema: ClassSchema) -> list[str]:
    names = schema.names
    unknown = sorted({i for i in ids if i >= len(names)})
    if unknown:
        log.warning("class ids %s are not in the schema; naming them class_<id>", unknown)
    return [names[i] if i < len(names) else f"class_{i}" for i in ids]
