"""Label sources: the files `eoseg.labels` burns onto a grid, checked before any tile runs.

A source is one of three kinds:

* ``vector``: GeoJSON, GeoPackage, GeoParquet, Shapefile or FlatGeobuf (any CRS) with a
  class field: integer class ids, or codes and names a code map translates
  (`eoseg.code_map`); a text field without a code map holds class names of the
  schema;
* ``raster``: a single-band GeoTIFF of class ids, or of codes a code map translates;
* ``osm``: an OSM extract (``.osm.pbf``, ``.osm``, ...) or a vector file with OSM tag
  columns, classified by a class schema's tag rules (`eoseg.osm`).

Which kind a file is: an OSM extract is always ``osm`` (it needs a schema). With a schema,
a vector file is ``osm`` when it lacks the class-id field and ``vector`` when it has it;
``osm=True``/``False`` overrides the guess. Without a schema, vector files need the field.
A code map is for class fields and rasters only: with one, a vector file is ``vector``.

An ``osm`` source is read once: its features within the grid's footprint (plus a margin
for buffered lines) are written as GeoParquet with a bbox covering column into the
staging store, and tiles then read them by bounding box like any vector source.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyproj
import rasterio
import shapely
from odc.geo.geobox import GeoBox
from odc.geo.geom import BoundingBox

from eoseg.classes import IGNORE_ID, ClassSchema
from eoseg.code_map import CodeMap
from eoseg.errors import (
    EosegError,
    InputNotFoundError,
    InvalidParameterError,
    NoOverlapError,
    UnreadableRasterError,
    UnreadableVectorError,
)
from eoseg.grid import crs_of
from eoseg.label_values import check_class_ids
from eoseg.osm import OSM_SUFFIXES, BBox, osm_features
from eoseg.vector_io import count_features, is_text_field, vector_info
from eoseg.vectorize import write_polygons

log = logging.getLogger(__name__)

VECTOR_SUFFIXES = {".geojson", ".json", ".gpkg", ".parquet", ".geoparquet", ".shp", ".fgb"}

OSM_FEATURES = "_eoseg_osm_features.parquet"
"""File in a labels staging store holding the classified OSM features of the run."""

_MARGIN_M = 50.0
"""Slack in metres around the grid's footprint (on top of the widest buffer rule)."""


@dataclass(frozen=True, slots=True)
class LabelSource:
    """A validated label input, as the tile function reads it.

    Attributes:
        path: File the tiles read (for ``osm`` sources, the GeoParquet of its features).
        kind: ``"vector"`` or ``"raster"`` (what the tiles read).
        crs: CRS of ``path`` as WKT.
        class_field: Vector field holding class ids.
        origin: The file the user gave (recorded in the tiles' provenance).
        num_classes: Class ids must be below this (the schema's size, else 255).
        code_map: Translates the field's values or the raster's codes to class ids;
            ``None`` when they are class ids.
    """

    path: str
    kind: str
    crs: str
    class_field: str
    origin: str = ""
    num_classes: int = IGNORE_ID
    code_map: CodeMap | None = None


def source_kind(
    path: Path,
    class_field: str,
    schema: ClassSchema | None,
    osm: bool | None,
    code_map: CodeMap | None = None,
) -> str:
    """``"osm"``, ``"vector"`` or ``"raster"``: how ``path`` is read (see the module docs).

    Raises:
        InputNotFoundError: No such file.
        InvalidParameterError: An OSM source without a schema (or one without OSM rules),
            ``osm=False`` for an OSM extract, or a code map for OSM features.
        UnreadableVectorError: A vector file with neither ``class_field`` nor OSM tags.
    """
    if not path.exists():
        raise InputNotFoundError(f"label file {path} does not exist: check the path")
    extract = path.name.lower().endswith(OSM_SUFFIXES)
    if code_map is not None:
        if extract or osm:
            raise InvalidParameterError(
                f"a code map translates the values of a class field or the codes of a "
                f"raster, but {path} is read as OSM features, which the schema's tag rules "
                "classify: drop --code-map (or --osm)"
            )
        return "vector" if path.suffix.lower() in VECTOR_SUFFIXES else "raster"
    if extract and osm is False:
        raise InvalidParameterError(
            f"{path} is an OSM extract, which has no class-id field: drop --no-osm and pass "
            "--classes with a schema of OSM tag rules"
        )
    vector = path.suffix.lower() in VECTOR_SUFFIXES
    if not (extract or osm or (osm is None and schema is not None and vector)):
        return "vector" if vector else "raster"
    guessed = not (extract or osm)
    fields = vector_info(path)[1] if guessed else []
    if guessed and class_field in fields:
        return "vector"  # a schema names the classes of the ids; no OSM rules needed
    if schema is None:
        raise InvalidParameterError(
            f"{path} is read as OSM features, which need a class schema to become class "
            "ids: pass --classes schema.toml (classes with osm = [...] tag rules)"
        )
    if not schema.osm_keys:
        raise InvalidParameterError(
            f"the class schema {schema.names} has no OSM tag rules, so no OSM feature of "
            f"{path} can be classified: add osm = [...] rules to its classes"
        )
    if not guessed:
        return "osm"
    if "other_tags" in fields or set(schema.osm_keys) & set(fields):
        return "osm"
    raise UnreadableVectorError(
        f"{path} has neither the class-id field {class_field!r} nor any of the OSM tag "
        f"columns the schema uses ({list(schema.osm_keys)}); its fields are {fields}: pass "
        "--class-field with the field holding class ids, or export the features with "
        "their OSM tags as columns"
    )


def check_label_source(
    path: Path,
    class_field: str,
    grid: GeoBox,
    *,
    schema: ClassSchema | None = None,
    code_map: CodeMap | None = None,
) -> LabelSource:
    """Open a vector or raster label file's metadata and check it overlaps the grid.

    Without ``code_map``, a text ``class_field`` maps by the class names of ``schema``.

    Raises:
        InputNotFoundError: No such file.
        UnreadableVectorError: Not a vector file, no ``class_field``, or a text field
            with neither a schema nor a code map.
        UnreadableRasterError: A raster that cannot be read.
        InvalidParameterError: A code map for a raster lists values that are no codes.
        NoOverlapError: The labels do not overlap the grid.
    """
    if not path.exists():
        raise InputNotFoundError(f"label file {path} does not exist: check the path")
    n = len(schema) if schema is not None else IGNORE_ID
    if path.suffix.lower() in VECTOR_SUFFIXES:
        crs, fields, source_bounds = vector_info(path)
        if count_features(path) == 0:
            raise UnreadableVectorError(
                f"{path} has no features: expected polygons with a class field "
                f"({class_field!r}); check that the file (and its first layer) holds the labels"
            )
        if crs is None:
            raise UnreadableVectorError(f"{path} has no CRS: assign one (e.g. with ogr2ogr -a_srs)")
        if class_field not in fields:
            raise UnreadableVectorError(
                f"{path} has no field {class_field!r}; its fields are {fields}: pass "
                "--class-field with the field holding integer class ids (or, for OSM "
                "tags, --classes with a schema of OSM tag rules)"
            )
        if code_map is None and is_text_field(path, class_field):
            code_map = _names_map(path, class_field, schema)
        kind = "vector"
    else:
        kind, crs, source_bounds = "raster", *_raster_info(path)
        if code_map is not None:
            code_map.check_codes(path)
    footprint = BoundingBox(*source_bounds, crs=crs).polygon.to_crs(crs_of(grid))
    if not footprint.intersects(grid.extent):
        b = grid.extent.to_crs("EPSG:4326").boundingbox
        raise NoOverlapError(
            f"labels {path} (bounds {tuple(round(v, 4) for v in source_bounds)} in their CRS) "
            f"do not overlap the cube (lon {b.left:.4f}..{b.right:.4f}, lat "
            f"{b.bottom:.4f}..{b.top:.4f}): check the labels' CRS and area"
        )
    if kind == "raster" and code_map is None:
        check_class_ids(path, grid, n)
    return LabelSource(str(path), kind, crs, class_field, str(path), n, code_map)


def _names_map(path: Path, class_field: str, schema: ClassSchema | None) -> CodeMap:
    """The schema's class names as the mapping of a text field."""
    if schema is None:
        raise UnreadableVectorError(
            f"field {class_field!r} of {path} holds text, not class ids: pass --classes "
            "with a schema whose class names these are (matched ignoring case), or "
            "--code-map 'Forest=1,Water=0' (value=class id or name)"
        )
    return CodeMap.from_schema(schema)


def prepare_osm_source(path: Path, schema: ClassSchema, grid: GeoBox, staging: Path) -> LabelSource:
    """Classify the OSM features over the grid once and store them in ``staging``.

    Reuses the features file of a resumed staging store.

    Raises:
        UnreadableVectorError: No feature of ``path`` matches the schema, or the file
            cannot be read.
        NoOverlapError: Features match, but none lies within the grid's footprint.
    """
    features = staging / OSM_FEATURES
    if not features.exists():
        margin = max((m for c in schema for _, m in c.buffer), default=0.0) + _MARGIN_M
        bbox = footprint_bbox(grid, margin)
        frame = osm_features(path, schema, bbox=bbox)
        if frame.empty:
            raise _no_features_error(path, schema, grid)
        geoms = _clip_polygons(frame.geometry.to_numpy(), bbox)
        keep = ~shapely.is_empty(geoms)
        frame = gpd.GeoDataFrame(
            {"class_id": frame["class_id"].to_numpy()[keep]},
            geometry=gpd.GeoSeries(geoms[keep], crs=4326),
        )
        write_polygons(frame, features, layer="labels")
        log.info("%s: %d OSM label polygons over the grid", path, len(frame))
    wgs84 = pyproj.CRS.from_epsg(4326).to_wkt()
    return LabelSource(str(features), "vector", wgs84, "class_id", str(path), len(schema))


def footprint_bbox(grid: GeoBox, margin_m: float = 0.0) -> BBox:
    """The grid's footprint as ``(west, south, east, north)`` degrees, grown by metres."""
    b = grid.extent.to_crs("EPSG:4326", resolution="auto").boundingbox
    lat = min(89.0, max(abs(b.bottom), abs(b.top)))
    dlat = margin_m / 110_574.0  # metres per degree of latitude (least, at the equator)
    dlon = margin_m / (111_320.0 * math.cos(math.radians(lat)))
    return (
        max(-180.0, b.left - dlon),
        max(-90.0, b.bottom - dlat),
        min(180.0, b.right + dlon),
        min(90.0, b.top + dlat),
    )


def _clip_polygons(geoms: np.ndarray, bbox: BBox) -> np.ndarray:
    """Cut polygons reaching beyond ``bbox`` to it (tiles then read less), keeping row order."""
    region = shapely.box(*bbox)
    out = geoms.copy()
    beyond = ~shapely.contains_properly(region, geoms)
    clipped = shapely.intersection(geoms[beyond], region)
    out[beyond] = [_polygonal(g) for g in clipped]
    return out


def _polygonal(geom: shapely.Geometry) -> shapely.Geometry:
    """The polygons of a clip result (dropping the lines and points a cut may leave)."""
    if geom.geom_type in {"Polygon", "MultiPolygon"}:
        return geom
    polys = [
        p
        for part in shapely.get_parts(geom)
        for p in shapely.get_parts(part)
        if p.geom_type == "Polygon"
    ]
    return shapely.MultiPolygon(polys)


def _no_features_error(path: Path, schema: ClassSchema, grid: GeoBox) -> EosegError:
    anywhere = osm_features(path, schema)  # read again only on this error path, to explain
    if anywhere.empty:
        rules = [r for c in schema for r in c.osm][:4]
        return UnreadableVectorError(
            f"no feature of {path} matches the class schema's OSM rules (e.g. {rules}; "
            f"keys {list(schema.osm_keys)}): check the rules' tags against the extract's "
            "tags, and that lines have a buffer rule"
        )
    w, s, e, n = footprint_bbox(grid)
    west, south, east, north = (float(v) for v in anywhere.total_bounds)
    return NoOverlapError(
        f"{path} has {len(anywhere)} features matching the class schema (lon "
        f"{west:.4f}..{east:.4f}, lat {south:.4f}..{north:.4f}), but none within the cube "
        f"(lon {w:.4f}..{e:.4f}, lat {s:.4f}..{n:.4f}): use an extract that covers the cube"
    )


def _raster_info(path: Path) -> tuple[str, tuple[float, float, float, float]]:
    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise UnreadableRasterError(f"label raster {path} has no CRS: assign one")
            if src.count != 1:
                raise UnreadableRasterError(
                    f"label raster {path} has {src.count} bands; expected one band of class ids"
                )
            b = src.bounds
            return src.crs.to_wkt(), (b.left, b.bottom, b.right, b.top)
    except rasterio.errors.RasterioIOError as exc:
        raise UnreadableRasterError(
            f"{path} is neither a known vector format nor a readable raster ({exc})"
        ) from exc
