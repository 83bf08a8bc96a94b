"""The polygon product on disk: partitioned GeoParquet, GeoPackage or GeoJSON.

- ``.parquet`` / ``.geoparquet``: a folder of GeoParquet files, one per tile row, in a
  hive layout (``polygons.parquet/tile_row=0003/part.parquet``), written in parallel (one
  Dask task per tile row, on the cluster when a ``distributed`` client is current). Each
  file has a GeoParquet 1.1 ``bbox`` covering column, so readers can skip row groups by
  bounding box. A polygon belongs to the tile row of its top pixel row (``tile_row`` from
  `eoseg.vectorize.vectorize`): exactly one partition, even when it spans several tile
  rows. ``gpd.read_parquet(folder)``, ``pyarrow.dataset`` and DuckDB's
  ``read_parquet('folder/**/*.parquet', hive_partitioning = true)`` read the folder as one
  table (``tile_row`` comes back from the folder names).
- ``.gpkg``: a GeoPackage written by one writer (SQLite allows no other), partition by
  partition (tile row by tile row) into one layer.
- ``.geojson``: one GeoJSON file, for small areas (a warning above `GEOJSON_WARN` polygons).

Every product is written aside and moved into place when complete; the folder carries a
marker file (``_eoseg.json``, which Parquet readers skip as a ``_`` name) that makes it
recognisable (`eoseg.outputs.identify`) and replaceable by a new export.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from pathlib import Path

import dask
import geopandas as gpd

from eoseg.errors import InvalidParameterError
from eoseg.outputs import POLYGONS_MARKER, PRODUCT_KEY, check_replaceable

log = logging.getLogger(__name__)

PARTITION = "tile_row"
"""The hive partition key of the partitioned GeoParquet."""
GEOJSON_WARN = 100_000
"""Polygon count above which GeoJSON (one text file) is discouraged in the log."""
_SUFFIXES = (".parquet", ".geoparquet", ".gpkg", ".geojson")


def write_polygon_product(
    gdf: gpd.GeoDataFrame, path: str | os.PathLike[str], *, layer: str = "polygons"
) -> Path:
    """Write the polygons of a class map in the format named by the suffix (module docs).

    Args:
        gdf: Polygons from `eoseg.vectorize.vectorize` (with ``tile_row``).
        path: Output folder (``.parquet``/``.geoparquet``) or file (``.gpkg``,
            ``.geojson``); replaced if it holds a polygon product.
        layer: Layer name in a GeoPackage.

    Returns:
        The path written.

    Raises:
        InvalidParameterError: The suffix is not one of the formats above.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _SUFFIXES:
        raise InvalidParameterError(
            f"--polygons {str(path)!r} has suffix {path.suffix!r}; expected one of "
            f"{list(_SUFFIXES)}: rename the output"
        )
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.tmp{suffix}")
    marker = {PRODUCT_KEY: "polygons"}
    try:
        if suffix in (".parquet", ".geoparquet"):
            _write_partitions(gdf, tmp, marker)
        elif suffix == ".gpkg":
            _write_geopackage(gdf, tmp, layer, marker)
        else:
            if len(gdf) > GEOJSON_WARN:
                log.warning(
                    "writing %d polygons as GeoJSON (one text file): prefer .parquet or .gpkg "
                    "for large areas",
                    len(gdf),
                )
            gdf.to_file(tmp, driver="GeoJSON", FOREIGN_MEMBERS_COLLECTION=json.dumps(marker))
        _move_into_place(tmp, path)
    finally:
        _remove(tmp)
    return path


def _write_partitions(gdf: gpd.GeoDataFrame, folder: Path, marker: dict[str, str]) -> None:
    """One GeoParquet file per tile row, written in parallel, then the marker file."""
    folder.mkdir()
    groups = _partitions(gdf)
    attrs = {**gdf.attrs, **marker}
    tasks = [
        dask.delayed(_write_part)(part, folder / f"{PARTITION}={row:04d}", attrs)
        for row, part in groups
    ]
    dask.compute(*tasks)
    doc = {**marker, "partitioning": PARTITION, "partitions": len(groups), "rows": len(gdf)}
    (folder / POLYGONS_MARKER).write_text(json.dumps(doc) + "\n")
    log.debug("wrote %d polygons in %d partitions to %s", len(gdf), len(groups), folder)


def _write_part(part: gpd.GeoDataFrame, folder: Path, attrs: dict[str, str]) -> None:
    """One partition's file (the partition key lives in the folder name only)."""
    folder.mkdir(exist_ok=True)  # a task run twice rewrites the same file
    frame = part.drop(columns=[PARTITION], errors="ignore")
    frame.attrs = attrs  # kept in the Parquet metadata
    frame.to_parquet(folder / "part.parquet", write_covering_bbox=True, index=False)


def _write_geopackage(
    gdf: gpd.GeoDataFrame, path: Path, layer: str, marker: dict[str, str]
) -> None:
    """One writer, one tile row (partition) after the other, into one layer."""
    for i, (_, part) in enumerate(_partitions(gdf)):
        if i == 0:
            part.to_file(path, driver="GPKG", layer=layer, metadata=marker)
        else:
            part.to_file(path, driver="GPKG", layer=layer, mode="a")


def _partitions(gdf: gpd.GeoDataFrame) -> list[tuple[int, gpd.GeoDataFrame]]:
    """The polygons by tile row, in row order (one partition 0 without ``tile_row``; an
    empty one for no polygons, so the product still reads as an empty table)."""
    if PARTITION not in gdf.columns or len(gdf) == 0:
        return [(0, gdf)]
    return [(int(row), part) for row, part in gdf.groupby(PARTITION, sort=True)]


def _move_into_place(new: Path, path: Path) -> None:
    """Replace ``path`` (a file or folder holding a polygon product) with ``new``."""
    check_replaceable(path, new)
    if not path.exists():
        os.replace(new, path)
        return
    old = path.with_name(f".{path.name}.{uuid.uuid4().hex}.old")
    os.replace(path, old)
    try:
        os.replace(new, path)
    except OSError:
        os.replace(old, path)  # put the old product back
        raise
    _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
