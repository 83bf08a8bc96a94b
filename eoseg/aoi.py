"""Areas of interest and regions: read from files or boxes, brought onto a map's grid.

An AOI is one polygonal geometry in EPSG:4326; a regions layer is a vector file whose
features are named by one attribute (``--regions states.gpkg --region-field name``),
each region the union of its features. Both are densified before reprojection so their
edges stay faithful on any grid, and carry their geodesic area on the WGS84 ellipsoid,
the figure class areas are checked against.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyproj
import shapely
from odc.geo.geobox import GeoBox

from eoseg.errors import (
    GeoreferenceError,
    InputNotFoundError,
    InvalidParameterError,
    NoOverlapError,
    UnreadableVectorError,
)
from eoseg.grid import describe_lonlat, parse_bbox
from eoseg.storage import is_url, resolve

log = logging.getLogger(__name__)

_DENSIFY_DEG = 0.001
"""Longest edge, in degrees, of an AOI before it is projected (about 100 m)."""
_GEOD = pyproj.Geod(ellps="WGS84")


@dataclass(frozen=True, slots=True)
class MapShape:
    """An AOI or region on a map's grid.

    Attributes:
        name: The region's name (``"aoi"`` for a single AOI).
        geometry: The polygon in the map's CRS.
        km2: Geodesic area of the polygon on the WGS84 ellipsoid, in km².
    """

    name: str
    geometry: shapely.Geometry
    km2: float


def read_aoi(spec: str) -> shapely.Geometry:
    """Read an area of interest as one geometry in EPSG:4326.

    Args:
        spec: A path or fsspec URL (``s3://...``) of a GeoJSON/GeoPackage file (features
            are unioned, any CRS) or a ``"minx,miny,maxx,maxy"`` box in EPSG:4326 degrees.

    Returns:
        A valid polygonal shapely geometry in EPSG:4326.

    Raises:
        InputNotFoundError: ``spec`` is neither an existing file nor a box.
        InvalidParameterError: The box is malformed or outside lon/lat ranges.
        UnreadableVectorError: The file cannot be read or holds no polygon.
        GeoreferenceError: The file has no CRS.
    """
    if is_url(spec):  # a file on object storage, read from a downloaded copy
        with resolve(spec, "--aoi").reading() as local:
            return _read_aoi_file(local)
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


def read_regions(path: str | Path, field: str) -> dict[str, shapely.Geometry]:
    """Read a regions layer: one EPSG:4326 geometry per value of ``field``.

    Features sharing a value (a state made of several parts) are unioned.

    Raises:
        InputNotFoundError: The file does not exist.
        UnreadableVectorError: It cannot be read, lacks ``field`` or holds no polygon.
        GeoreferenceError: It has no CRS.
    """
    if is_url(path):  # a file on object storage, read from a downloaded copy
        with resolve(path, "--regions").reading() as local:
            return read_regions(local, field)
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputNotFoundError(f"regions file {str(path)!r} does not exist: check --regions")
    gdf = _read_vector(path, "regions")
    if field not in gdf.columns:
        fields = [c for c in gdf.columns if c != gdf.geometry.name]
        raise UnreadableVectorError(
            f"regions file {str(path)!r} has no field {field!r} (fields: {fields}): "
            "name one with --region-field"
        )
    regions: dict[str, shapely.Geometry] = {}
    gdf = gdf[gdf[field].notna()]
    for name, part in _to_lonlat(gdf).groupby(gdf[field].astype(str), sort=True):
        geom = _polygonal(shapely.make_valid(part.union_all()))
        if not geom.is_empty:
            regions[str(name)] = geom
    if not regions:
        raise UnreadableVectorError(f"regions file {str(path)!r} holds no polygon: give areas")
    return regions


def aoi_on_grid(
    aoi: shapely.Geometry | gpd.GeoDataFrame | gpd.GeoSeries, geobox: GeoBox, name: str = "aoi"
) -> MapShape:
    """An AOI (EPSG:4326 geometry, or a GeoDataFrame in any CRS) in the map's CRS.

    Raises:
        GeoreferenceError: A GeoDataFrame without CRS, or a grid without one.
        InvalidParameterError: The AOI holds no polygon.
        NoOverlapError: The AOI misses the grid.
    """
    if isinstance(aoi, gpd.GeoDataFrame | gpd.GeoSeries):
        if aoi.crs is None:
            raise GeoreferenceError("AOI has no CRS: set one (e.g. gdf.set_crs('EPSG:4326'))")
        geom = shapely.make_valid(_to_lonlat(aoi).union_all())
    else:
        geom = shapely.make_valid(aoi)
    geom = _polygonal(geom)
    if geom.is_empty:
        raise InvalidParameterError("AOI holds no polygon: give an area, not points or lines")
    geom = shapely.segmentize(geom, _DENSIFY_DEG)
    km2 = abs(_GEOD.geometry_area_perimeter(geom)[0]) / 1e6
    to_map = pyproj.Transformer.from_crs(4326, grid_crs(geobox), always_xy=True)
    mapped = shapely.make_valid(
        shapely.transform(geom, lambda xy: np.column_stack(to_map.transform(xy[:, 0], xy[:, 1])))
    )
    if not mapped.intersects(shapely.box(*geobox.extent.geom.bounds)):
        what = "AOI" if name == "aoi" else f"region {name!r}"
        raise NoOverlapError(no_overlap_message(geom.bounds, geobox, "lies outside", what))
    return MapShape(name=name, geometry=_polygonal(mapped), km2=km2)


def regions_on_grid(regions: dict[str, shapely.Geometry], geobox: GeoBox) -> list[MapShape]:
    """Every region that meets the grid, in the map's CRS (those that miss it are logged).

    Raises:
        NoOverlapError: No region meets the grid.
    """
    shapes = []
    for name, geom in regions.items():
        try:
            shapes.append(aoi_on_grid(geom, geobox, name=name))
        except NoOverlapError:
            log.info("region %r lies outside the class map: left out", name)
    if not shapes:
        bounds = shapely.union_all(list(regions.values())).bounds
        raise NoOverlapError(no_overlap_message(bounds, geobox, "lie outside", "regions"))
    return shapes


def grid_crs(geobox: GeoBox) -> pyproj.CRS:
    """The grid's CRS as pyproj's.

    Raises:
        GeoreferenceError: The grid has none.
    """
    if geobox.crs is None:
        raise GeoreferenceError("grid has no CRS: give the class map a spatial_ref")
    return geobox.crs.proj


def no_overlap_message(
    aoi_lonlat: tuple[float, float, float, float], geobox: GeoBox, found: str, what: str = "AOI"
) -> str:
    """One sentence with both extents in degrees (the AOI's as given, for a box)."""
    to_ll = pyproj.Transformer.from_crs(grid_crs(geobox), 4326, always_xy=True)
    grid_ll = to_ll.transform_bounds(*geobox.extent.geom.bounds)
    return (
        f"the {what} ({describe_lonlat(aoi_lonlat)}) {found} the area of the class map "
        f"({describe_lonlat(grid_ll)}): choose an AOI inside the mapped area, or check its "
        "CRS (a box is lon,lat order, in degrees)"
    )


def _polygonal(geom: shapely.Geometry) -> shapely.Geometry:
    """Keep only the polygons of a (possibly mixed) geometry."""
    parts = [p for p in shapely.get_parts(geom) if p.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(parts) if parts else shapely.Polygon()


def _to_lonlat(gdf: gpd.GeoDataFrame | gpd.GeoSeries) -> gpd.GeoSeries:
    """The geometries in EPSG:4326, densified in their own CRS first so that their
    straight edges there stay where they were (1/4096 of the extent: ~0.5 m in 2 km)."""
    minx, miny, maxx, maxy = gdf.total_bounds
    step = max(maxx - minx, maxy - miny) / 4096 or 1.0
    return gdf.geometry.segmentize(step).to_crs(4326)


def _read_vector(path: Path, what: str) -> gpd.GeoDataFrame:
    try:
        gdf = gpd.read_file(path)
    except Exception as e:  # pyogrio raises several types for unreadable files
        raise UnreadableVectorError(
            f"{what} file {str(path)!r} cannot be read as GeoJSON/GeoPackage ({e}): check the file"
        ) from e
    if gdf.crs is None:
        raise GeoreferenceError(f"{what} file {str(path)!r} has no CRS: assign one and save again")
    return gdf


def _read_aoi_file(path: Path) -> shapely.Geometry:
    gdf = _read_vector(path, "AOI")
    geom = _polygonal(shapely.make_valid(_to_lonlat(gdf).union_all()))
    if geom.is_empty:
        raise UnreadableVectorError(
            f"AOI file {str(path)!r} holds no polygon ({len(gdf)} features): give an area"
        )
    return geom
