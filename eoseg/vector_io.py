"""Reading vector files by bounding box: only the features and columns a grid needs.

GeoParquet is read through pyarrow (GDAL's Parquet driver is optional and missing from
some builds); everything else (GeoJSON, GeoPackage, Shapefile, FlatGeobuf, ...) through
pyogrio. A country-sized file is never read whole when a bbox is given: pyogrio filters
with the layer's spatial index, GeoParquet with its bbox covering column.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import geopandas as gpd
import pyarrow as pa
import pyarrow.parquet as pq
import pyogrio
import pyproj

from eoseg.errors import UnreadableVectorError

PARQUET_SUFFIXES = frozenset({".parquet", ".geoparquet"})
"""File name endings read as GeoParquet."""

Bounds = tuple[float, float, float, float]


def is_parquet(path: Path) -> bool:
    """Whether ``path`` is read as GeoParquet."""
    return path.suffix.lower() in PARQUET_SUFFIXES


def read_vector(
    path: Path, bbox: Sequence[float] | None = None, *, columns: Sequence[str] | None = None
) -> gpd.GeoDataFrame:
    """The features of a vector file within ``bbox`` (in the file's CRS).

    Args:
        path: The file.
        bbox: ``(minx, miny, maxx, maxy)`` in the file's CRS; None reads every feature.
        columns: Attribute columns to read (the geometry always comes); None reads all.

    Raises:
        UnreadableVectorError: If the file cannot be read.
    """
    cols = None if columns is None else list(columns)
    box: Bounds | None = None
    if bbox is not None:
        box = (float(bbox[0]), float(bbox[1]), float(bbox[2]), float(bbox[3]))
    try:
        if is_parquet(path):
            if box is None:
                return _read_parquet(path, cols)
            try:
                return _read_parquet(path, cols, bbox=box)
            except ValueError:
                # No bbox covering column (GeoParquet < 1.1): read all, then filter. Writers
                # of large label files should add one (to_parquet(write_covering_bbox=True)).
                minx, miny, maxx, maxy = box
                return _read_parquet(path, cols).cx[minx:maxx, miny:maxy]
        return gpd.read_file(path, bbox=box, columns=cols, engine="pyogrio")
    except Exception as exc:
        raise UnreadableVectorError(f"could not read {path} ({exc})") from exc


def _read_parquet(
    path: Path, columns: list[str] | None, bbox: Bounds | None = None
) -> gpd.GeoDataFrame:
    if columns is not None:
        columns = [*columns, _geo_metadata(path)[0]]
    return gpd.read_parquet(path, columns=columns, bbox=bbox)


def vector_info(path: Path, *, bounds: bool = True) -> tuple[str | None, list[str], Bounds]:
    """CRS (WKT or an authority code such as "EPSG:32633"; None when unknown), attribute
    fields and bounds of a vector file.

    Args:
        path: The file.
        bounds: Compute the total bounds (a scan of the geometries for formats that do not
            store them); False returns NaNs.

    Raises:
        UnreadableVectorError: If the file is not a vector file.
    """
    try:
        if is_parquet(path):
            return _parquet_info(path, bounds)
        info = pyogrio.read_info(path, force_total_bounds=bounds)
    except Exception as exc:
        raise UnreadableVectorError(
            f"{path} is not a vector file GDAL/OGR can read ({exc}): expected GeoJSON, "
            "GeoPackage, GeoParquet or Shapefile"
        ) from exc
    crs = str(info["crs"]) if info.get("crs") is not None else None
    box = info.get("total_bounds") if bounds else None
    nan = float("nan")
    total = tuple(float(v) for v in box) if box is not None else (nan, nan, nan, nan)
    return crs, list(info.get("fields", [])), total  # type: ignore[return-value]


def _geo_metadata(path: Path) -> tuple[str, dict[str, object]]:
    """The primary geometry column of a GeoParquet file and its ``geo`` metadata."""
    schema = pq.read_schema(path)
    geo = json.loads((schema.metadata or {}).get(b"geo", b"{}"))
    column = str(geo.get("primary_column", "geometry"))
    return column, geo.get("columns", {}).get(column, {})


def _parquet_info(path: Path, bounds: bool) -> tuple[str | None, list[str], Bounds]:
    """From the metadata, reading no rows when the file declares its bbox (else only the
    geometry column, and only when ``bounds``)."""
    names = pq.read_schema(path).names
    column, meta = _geo_metadata(path)
    # GeoParquet: a missing "crs" means OGC:CRS84; an explicit null means unknown.
    crs_value = meta.get("crs", "OGC:CRS84")
    crs = None if crs_value is None else pyproj.CRS.from_user_input(crs_value).to_wkt()
    fields = [n for n in names if n not in (column, "bbox")]
    box = meta.get("bbox")
    if not isinstance(box, list) or len(box) != 4:
        nan = float("nan")
        box = gpd.read_parquet(path, columns=[column]).total_bounds if bounds else [nan] * 4
    return crs, fields, tuple(float(v) for v in box)  # type: ignore[return-value]


def is_text_field(path: Path, field: str) -> bool:
    """Whether a field of a vector file holds strings."""
    if is_parquet(path):
        kind = pq.read_schema(path).field(field).type
        return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))
    info = pyogrio.read_info(path)
    return str(dict(zip(info["fields"], info["dtypes"], strict=True))[field]) == "object"


def count_features(path: Path) -> int | None:
    """Number of features of a vector file (its first layer), or None when the format
    cannot tell without reading every feature."""
    try:
        if is_parquet(path):
            return int(pq.read_metadata(path).num_rows)
        count = int(pyogrio.read_info(path, force_feature_count=True)["features"])
    except Exception as exc:
        raise UnreadableVectorError(
            f"{path} is not a vector file GDAL/OGR can read ({exc}): expected GeoJSON, "
            "GeoPackage, GeoParquet or Shapefile"
        ) from exc
    return count if count >= 0 else None
