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
import os
import uuid
import warnings
from collections import defaultdict
from pathlib import Path

import dask
import dask.array
import geopandas as gpd
import numpy as np
import odc.geo.xr  # noqa: F401  (registers the .odc accessor)
import rasterio.errors
import rasterio.features
import scipy.sparse
import scipy.sparse.csgraph
import shapely
import xarray as xr
from rasterio.transform import Affine

from eoseg.classes import IGNORE_ID, ClassSchema
from eoseg.dates import check_one_date
from eoseg.errors import InvalidParameterError
from eoseg.grid import raster_tiles
from eoseg.outputs import PRODUCT_KEY, check_replaceable

log = logging.getLogger(__name__)

_DRIVERS = {".parquet": None, ".geoparquet": None, ".gpkg": "GPKG", ".geojson": "GeoJSON"}
"""Polygon formats by suffix (``None``: GeoParquet, written by pyarrow)."""


def vectorize(
    classmap: xr.DataArray,
    *,
    schema: ClassSchema,
    simplify_tolerance: float | None = None,
) -> gpd.GeoDataFrame:
    """Polygons of each class of a class map, without seams at tile borders.

    Args:
        classmap: ``(y, x)`` uint8 class ids, 255 = nodata (no polygon), georeferenced
            (``.odc.geobox``); a Dask-backed map is vectorised one chunk per task.
        schema: The classes of the map (gives ``class_name``).
        simplify_tolerance: If given, simplify the whole coverage with
            ``shapely.coverage_simplify`` (map CRS units; roughly the square root of the
            area of the triangles removed). Shared edges stay shared: no gaps.

    Returns:
        GeoDataFrame with ``class_id`` (int32), ``class_name`` and ``geometry`` (one
        Polygon per row), in the map's CRS, sorted by class and position.

    Raises:
        GeoreferenceError: The map has no CRS/transform.
        InvalidParameterError: ``simplify_tolerance`` is negative.
    """
    check_one_date(classmap, "vectorize")
    if simplify_tolerance is not None and simplify_tolerance < 0:
        raise InvalidParameterError(f"simplify_tolerance must be >= 0; found {simplify_tolerance}")
    geobox, data, slices = raster_tiles(classmap)
    ny, nx = geobox.shape
    tasks = [
        dask.delayed(_vectorize_tile)(block, ys.start, xs.start, (ny, nx))
        for (ys, xs), block in zip(slices, data.to_delayed().ravel(), strict=True)
    ]
    ids: list[int] = []
    geoms: list[shapely.Geometry] = []
    seam_pieces: dict[int, list[shapely.Geometry]] = defaultdict(list)
    for final, on_seam in dask.compute(*tasks):
        for cid, g in final:
            ids.append(cid)
            geoms.append(g)
        for cid, g in on_seam:
            seam_pieces[cid].append(g)
    for cid, pieces in seam_pieces.items():
        merged = _merge_touching(pieces)
        ids.extend([cid] * len(merged))
        geoms.extend(merged)
    log.debug("vectorised %d tiles into %d polygons", len(tasks), len(geoms))

    geometry = np.array(geoms, dtype=object)
    if simplify_tolerance:
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
    if simplify_tolerance:
        geometry = shapely.coverage_simplify(geometry, simplify_tolerance)
    gdf = gpd.GeoDataFrame(
        {"class_id": np.array(ids, dtype=np.int32), "class_name": _names(ids, schema)},
        geometry=gpd.GeoSeries(geometry),
        crs=geobox.crs.proj if geobox.crs is not None else None,
    )
    gdf = gdf[~gdf.geometry.is_empty]
    bounds = gdf.geometry.bounds
    order = np.lexsort((bounds["minx"].to_numpy(), -bounds["maxy"].to_numpy(), gdf["class_id"]))
    return gdf.iloc[order].reset_index(drop=True)


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
    block: np.ndarray, row0: int, col0: int, grid_shape: tuple[int, int]
) -> tuple[list[tuple[int, shapely.Geometry]], list[tuple[int, shapely.Geometry]]]:
    """Polygons of one tile in grid pixel coordinates (x = column, y = row).

    Returns the final polygons and, apart, those reaching an inner tile edge (a side of
    the tile that is not the grid's border), to be merged with their neighbours.
    """
    block = np.asarray(block)
    final: list[tuple[int, shapely.Geometry]] = []
    on_seam: list[tuple[int, shapely.Geometry]] = []
    mask = block != IGNORE_ID
    if not mask.any():
        return final, on_seam
    h, w = block.shape
    ny, nx = grid_shape
    edges = (
        col0 if col0 > 0 else None,
        row0 if row0 > 0 else None,
        col0 + w if col0 + w < nx else None,
        row0 + h if row0 + h < ny else None,
    )
    offset = Affine.translation(col0, row0)
    with warnings.catch_warnings():
        # Pixel coordinates are intended here: the map transform is applied once at the end.
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        shapes = list(rasterio.features.shapes(block, mask=mask, connectivity=4, transform=offset))
    for geojson, value in shapes:
        geom = shapely.make_valid(shapely.geometry.shape(geojson))
        b = geom.bounds  # (minx, miny, maxx, maxy): (col, row, col, row)
        seam = any(e is not None and b[i] == e for i, e in enumerate(edges))
        for part in _polygons(geom):
            (on_seam if seam else final).append((int(value), part))
    return final, on_seam


def _merge_touching(pieces: list[shapely.Geometry]) -> list[shapely.Geometry]:
    """Union the pieces (one class) that touch, returned as single polygons."""
    tree = shapely.STRtree(pieces)
    left, right = tree.query(pieces, predicate="intersects")
    n = len(pieces)
    graph = scipy.sparse.coo_matrix((np.ones(len(left)), (left, right)), shape=(n, n))
    n_groups, labels = scipy.sparse.csgraph.connected_components(graph, directed=False)
    out: list[shapely.Geometry] = []
    for group in range(n_groups):
        members = [pieces[i] for i in np.flatnonzero(labels == group)]
        merged = members[0] if len(members) == 1 else shapely.union_all(members)
        # Pieces meeting at a corner only stay apart (4-connectivity): explode.
        out.extend(_polygons(merged))
    return out


def _polygons(geom: shapely.Geometry) -> list[shapely.Geometry]:
    return [p for p in shapely.get_parts(geom) if p.geom_type == "Polygon" and not p.is_empty]


def _names(ids: list[int], schema: ClassSchema) -> list[str]:
    names = schema.names
    unknown = sorted({i for i in ids if i >= len(names)})
    if unknown:
        log.warning("class ids %s are not in the schema; naming them class_<id>", unknown)
    return [names[i] if i < len(names) else f"class_{i}" for i in ids]
