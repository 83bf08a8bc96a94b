"""OSM labels: OpenStreetMap features classified by a schema's tag rules, as polygons.

Sources are OSM extracts read with pyosmium (``.osm.pbf``, ``.osm``, ``.osm.bz2``,
``.osm.gz``, ``.o5m``, ``.opl``) or vector files (GeoJSON, GeoPackage, GeoParquet, ...)
holding OSM tags as columns (``natural``, ``landuse``, ``highway``, ...; GDAL's
``other_tags`` hstore column is read too).

Rules (see `eoseg.classes`):

* A feature takes the first class, in schema order, with a matching ``osm`` rule;
  ``key=*`` matches any value except ``no``. Unmatched features are dropped.
* Areas (closed ways and multipolygon relations from OSM; polygons from vector files)
  are kept as they are. A closed way whose class has a buffer rule for it (a roundabout)
  is a line, unless tagged ``area=yes``.
* Lines with a buffer rule become polygons reaching that many metres on each side
  (round caps), buffered in the feature's UTM zone, not in degrees. Lines and points
  without a buffer rule are dropped: a line has no width to burn.

Burn order (the row order of the result; `eoseg.labels` burns later rows on top):
areas first, largest first, so smaller features sit on top of the larger ones they lie
in (a lake mapped without an inner ring in a forest, a meadow in a farmland); then the
buffered lines in schema order, so roads (usually the last class) are drawn on top.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import shapely
from shapely.geometry import box

from eoseg.classes import ClassSchema
from eoseg.errors import (
    InputNotFoundError,
    InvalidParameterError,
    UnreadableVectorError,
)
from eoseg.outputs import check_output
from eoseg.vector_io import read_vector, vector_info
from eoseg.vectorize import write_polygons

log = logging.getLogger(__name__)

OSM_SUFFIXES = (".osm.pbf", ".pbf", ".osm", ".osm.bz2", ".osm.gz", ".o5m", ".opl")
"""File name endings read with pyosmium; anything else is read as a vector file."""

BBox = tuple[float, float, float, float]
"""``(west, south, east, north)`` in degrees (EPSG:4326)."""

_BATCH = 100_000
"""OSM features decoded (and filtered by bbox) at a time."""

_HSTORE = re.compile(r'"((?:[^"\\]|\\.)*)"=>"((?:[^"\\]|\\.)*)"')


def osm_features(
    source: Path | str, schema: ClassSchema, *, bbox: BBox | None = None
) -> gpd.GeoDataFrame:
    """Classify the OSM features of a file into label polygons.

    Args:
        source: An OSM extract (``.osm.pbf``, ``.osm``, ...) or a vector file with OSM
            tags as columns.
        schema: Classes with ``osm`` (and, for lines, ``buffer``) rules.
        bbox: Keep only features intersecting ``(west, south, east, north)`` degrees.

    Returns:
        Polygons with a ``class_id`` column in EPSG:4326, in burn order (see the module
        docstring); empty when nothing matches.

    Raises:
        InputNotFoundError: No such file.
        InvalidParameterError: The schema has no ``osm`` rules, or a bad ``bbox``.
        UnreadableVectorError: The file cannot be read.
    """
    path = Path(source)
    if not path.exists():
        raise InputNotFoundError(f"OSM source {path} does not exist: check the path")
    if not schema.osm_keys:
        raise InvalidParameterError(
            f"the class schema {schema.names} has no OSM tag rules: add osm = [...] rules "
            "to its classes (see eoseg.classes.load_schema)"
        )
    if bbox is not None and not (bbox[0] < bbox[2] and bbox[1] < bbox[3]):
        raise InvalidParameterError(
            f"bbox must be (west, south, east, north) with west < east and south < north; "
            f"found {bbox}"
        )
    if path.name.lower().endswith(OSM_SUFFIXES):
        frame = _read_osm(path, schema, bbox)  # filtered by bbox while reading
    else:
        frame = _read_tagged_vector(path, schema, bbox)
        if bbox is not None and len(frame):
            frame = frame[frame.geometry.intersects(box(*bbox))]
    return _to_polygons(frame, schema)


def write_osm_labels(
    source: Path | str,
    schema: ClassSchema,
    out_path: Path | str,
    *,
    bbox: BBox | None = None,
    overwrite: bool = False,
) -> Path:
    """Write `osm_features` as a vector file that ``eoseg rasterize`` burns onto a grid.

    (``eoseg rasterize SOURCE --classes schema.toml`` also reads OSM sources directly,
    over the cube's footprint only; this file is for inspecting or reusing the polygons.)

    Args:
        source: As for `osm_features`.
        schema: As for `osm_features`.
        out_path: ``.parquet``/``.geoparquet`` (GeoParquet), ``.gpkg`` or ``.geojson``.
        bbox: As for `osm_features`.
        overwrite: Replace an existing file.

    Returns:
        ``out_path``; its rows are in burn order, ``class_id`` holds the class ids.

    Raises:
        OutputExistsError: ``out_path`` exists and ``overwrite`` is false.
        UnreadableVectorError: No feature of the source matches the schema.
        InvalidParameterError: ``out_path`` has an unsupported suffix.
    """
    out = Path(out_path)
    check_output(out, "polygons", overwrite=overwrite, inputs={"source": source})
    frame = osm_features(source, schema, bbox=bbox)
    if frame.empty:
        raise UnreadableVectorError(
            f"no feature of {source} matches the schema's OSM rules (keys "
            f"{list(schema.osm_keys)}{'' if bbox is None else f', bbox {bbox}'}): check the "
            "rules' tags and the extract's area"
        )
    write_polygons(frame, out, layer="labels")
    log.info("wrote %d OSM label polygons to %s", len(frame), out)
    return out


def _frame(
    ids: Sequence[int], geoms: Sequence[object], widths: Sequence[float]
) -> gpd.GeoDataFrame:
    """The intermediate frame: class id, raw geometry, buffer metres (NaN = an area)."""
    return gpd.GeoDataFrame(
        {"class_id": np.asarray(ids, dtype="int32"), "buffer_m": np.asarray(widths, "float64")},
        geometry=gpd.GeoSeries(list(geoms), crs="EPSG:4326"),
    )


def _read_osm(path: Path, schema: ClassSchema, bbox: BBox | None = None) -> gpd.GeoDataFrame:
    """Matching ways and areas of an extract; with ``bbox``, only those intersecting it
    are kept (in batches, so memory follows the features kept, not the extract's size)."""
    try:
        import osmium
        import osmium.filter
        import osmium.geom
    except ImportError as exc:  # pragma: no cover - osmium is a declared dependency
        raise UnreadableVectorError(
            f"reading {path} needs pyosmium: pip install osmium (or convert the extract "
            "to GeoPackage with ogr2ogr)"
        ) from exc
    factory = osmium.geom.WKBFactory()
    keys = schema.osm_keys
    processor = (
        osmium.FileProcessor(str(path))
        .with_areas(osmium.filter.KeyFilter(*keys))
        .with_filter(osmium.filter.EntityFilter(osmium.osm.WAY | osmium.osm.AREA))
        .with_filter(osmium.filter.KeyFilter(*keys))
    )
    ids: list[int] = []
    wkbs: list[str] = []
    widths: list[float] = []
    kept: list[gpd.GeoDataFrame] = []

    def flush() -> None:
        frame = _frame(ids, list(shapely.from_wkb(wkbs)) if wkbs else [], widths)
        if bbox is not None:
            frame = frame[frame.geometry.intersects(box(*bbox))]
        kept.append(frame)
        ids.clear()
        wkbs.clear()
        widths.clear()

    skipped = {"bad geometry": 0, "line without buffer rule": 0}
    try:
        for obj in processor:
            tags = {t.k: t.v for t in obj.tags}
            cls = schema.classify(tags)
            if cls is None:
                continue
            metres = cls.buffer_for(tags)
            is_area = tags.get("area") == "yes"
            try:
                if isinstance(obj, osmium.osm.Area):
                    if obj.from_way() and metres is not None and not is_area:
                        continue  # a closed line (roundabout): taken as a way
                    wkb, width = factory.create_multipolygon(obj), float("nan")
                elif isinstance(obj, osmium.osm.Way):
                    if metres is None or (is_area and obj.is_closed()):
                        skipped["line without buffer rule"] += not obj.is_closed()
                        continue  # a closed way comes again as an area
                    wkb, width = factory.create_linestring(obj), metres
                else:
                    continue
            except (osmium.InvalidLocationError, RuntimeError):
                skipped["bad geometry"] += 1  # nodes outside a clipped extract
                continue
            wkbs.append(wkb)
            ids.append(cls.id)
            widths.append(width)
            if len(wkbs) >= _BATCH:
                flush()
    except RuntimeError as exc:
        raise UnreadableVectorError(
            f"{path} is not an OSM file pyosmium can read ({exc}): expected .osm.pbf or .osm XML"
        ) from exc
    for why, n in skipped.items():
        if n:
            log.info("%s: skipped %d matching features (%s)", path, n, why)
    flush()
    return pd.concat(kept, ignore_index=True) if len(kept) > 1 else kept[0]


def _read_tagged_vector(
    path: Path, schema: ClassSchema, bbox: BBox | None = None
) -> gpd.GeoDataFrame:
    """Matching features of a vector file with OSM tag columns; with ``bbox``, only those
    whose envelope meets it are read (and only the tag columns the schema uses)."""
    try:
        crs, fields, _ = vector_info(path, bounds=False)
    except UnreadableVectorError as exc:
        raise UnreadableVectorError(
            f"{path} is not a vector file GDAL/OGR can read ({exc.__cause__}): expected an "
            "OSM extract (.osm.pbf, .osm) or GeoJSON/GeoPackage/GeoParquet with OSM tag columns"
        ) from exc
    wanted = {*schema.osm_keys, "other_tags"}
    columns = [f for f in fields if f in wanted]
    box = None
    if bbox is not None and crs is not None:
        box = pyproj.Transformer.from_crs(4326, crs, always_xy=True).transform_bounds(
            *bbox, densify_pts=21
        )
    data = read_vector(path, box, columns=columns)
    if data.crs is None:
        raise UnreadableVectorError(f"{path} has no CRS: assign one (e.g. ogr2ogr -a_srs)")
    tags = _tag_columns(data, schema.osm_keys)
    if not tags:
        raise UnreadableVectorError(
            f"{path} has none of the OSM tag columns the schema uses ({list(schema.osm_keys)}); "
            f"its columns are {[c for c in data.columns if c != data.geometry.name]}: export "
            "the extract with its tags as columns"
        )
    n = len(data)
    class_ids = np.full(n, -1, dtype="int32")
    widths = np.full(n, np.nan)
    for cls in schema:  # first matching class in schema order wins
        for rule in cls.osm_rules:
            if rule.key in tags:
                class_ids[(class_ids < 0) & _mask(tags[rule.key], rule.value)] = cls.id
        for rule, metres in cls.buffer_rules:  # exact values before key=*
            if rule.key in tags:
                hit = (class_ids == cls.id) & np.isnan(widths) & _mask(tags[rule.key], rule.value)
                widths[hit] = metres
    geoms = data.geometry.to_crs("EPSG:4326")
    kind = geoms.geom_type.fillna("")
    area = kind.str.contains("Polygon").to_numpy()
    line = kind.str.contains("LineString").to_numpy() & ~np.isnan(widths)
    keep = (class_ids >= 0) & (area | line)
    widths[area] = np.nan
    return _frame(class_ids[keep], list(geoms[keep]), widths[keep])


def _tag_columns(data: pd.DataFrame, keys: Sequence[str]) -> dict[str, pd.Series]:
    """Tag values per key, from plain columns or GDAL's ``other_tags`` hstore column."""
    tags = {k: data[k] for k in keys if k in data.columns}
    if "other_tags" in data.columns:
        parsed = data["other_tags"].map(
            lambda s: dict(_HSTORE.findall(s)) if isinstance(s, str) else {}
        )
        for k in keys:
            if k not in tags:
                values = parsed.map(lambda d, k=k: d.get(k))
                if values.notna().any():
                    tags[k] = values
    return tags


def _mask(values: pd.Series, value: str | None) -> np.ndarray:
    """Same semantics as `TagRule.matches_value`, over a column."""
    text = values.astype("string")
    hit = text.notna() & (text != "") & (text != "no" if value is None else text == value)
    return hit.fillna(False).to_numpy(dtype=bool)


def _utm_epsg(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    zone = (np.floor((lon + 180.0) / 6.0).astype("int64") % 60) + 1
    return np.where(lat >= 0, 32600, 32700) + zone


def _to_polygons(frame: gpd.GeoDataFrame, schema: ClassSchema) -> gpd.GeoDataFrame:
    """Buffer lines in metres, order rows for burning, keep ``class_id`` and geometry."""
    frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty].reset_index(drop=True)
    if frame.empty:
        return gpd.GeoDataFrame({"class_id": np.zeros(0, "int32")}, geometry=[], crs=4326)
    centre = frame.geometry.representative_point()
    epsg = _utm_epsg(centre.x.to_numpy(), centre.y.to_numpy())
    geoms = frame.geometry.to_numpy().copy()
    area_m2 = np.zeros(len(frame))
    is_line = frame["buffer_m"].notna().to_numpy()
    for code in np.unique(epsg):  # one projection per UTM zone the features fall in
        rows = np.flatnonzero(epsg == code)
        local = frame.geometry.iloc[rows].to_crs(int(code))
        lines = is_line[rows]
        buffered = local[lines].buffer(frame["buffer_m"].to_numpy()[rows][lines])
        geoms[rows[lines]] = buffered.to_crs(4326).to_numpy()
        area_m2[rows] = local.area.to_numpy()
    geoms = np.where(shapely.is_valid(geoms), geoms, shapely.make_valid(geoms))
    # Areas largest first, then lines in schema order (ids are schema positions).
    order = np.lexsort((-area_m2, np.where(is_line, frame["class_id"], -1), is_line))
    out = gpd.GeoDataFrame(
        {"class_id": frame["class_id"].to_numpy()[order]},
        geometry=gpd.GeoSeries(geoms[order], crs=4326),
    )
    log.debug("%d OSM label polygons over %d classes", len(out), out["class_id"].nunique())
    return out
