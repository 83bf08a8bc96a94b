"""Labels: vector or raster class ids rasterized onto a cube's grid, tile by tile.

Vectors (GeoJSON, GeoPackage, GeoParquet, Shapefile; any CRS) are read per tile with a
bounding-box filter, reprojected to the grid CRS and burnt with the pixel-centre rule;
later features win where polygons overlap. A single-band GeoTIFF of class ids is
resampled with nearest neighbour. Unlabelled pixels are 255 (ignore).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import geopandas as gpd
import numpy as np
import pyarrow.parquet as pq
import pyogrio
import pyproj
import rasterio
import xarray as xr
from distributed import Client
from odc.geo.geobox import GeoBox
from odc.geo.geom import BoundingBox
from odc.geo.xr import xr_coords
from rasterio.enums import Resampling
from rasterio.features import rasterize
from rasterio.warp import reproject

from eoseg.classes import IGNORE_ID
from eoseg.cluster import ProgressFn, run_tiles
from eoseg.errors import (
    InputNotFoundError,
    NoOverlapError,
    UnreadableRasterError,
    UnreadableVectorError,
)
from eoseg.grid import Tile, crs_of, iter_tiles
from eoseg.store import (
    check_output,
    create_store,
    done_tiles,
    open_grid_store,
    open_product,
    publish,
    write_tile,
)

log = logging.getLogger(__name__)

VECTOR_SUFFIXES = {".geojson", ".json", ".gpkg", ".parquet", ".geoparquet", ".shp", ".fgb"}


@dataclass(frozen=True, slots=True)
class LabelSource:
    """A validated label input: its kind, CRS (WKT) and class field."""

    path: str
    kind: str  # "vector" or "raster"
    crs: str
    class_field: str


@dataclass(frozen=True, slots=True)
class LabelsResult:
    """What a rasterize run wrote."""

    path: Path
    labelled_fraction: float
    class_counts: dict[int, int]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (what ``eoseg rasterize --json`` prints)."""
        return {
            "labels": str(self.path),
            "labelled_fraction": self.labelled_fraction,
            "class_pixels": self.class_counts,
            "seconds": round(self.seconds, 2),
        }


def check_label_source(path: Path, class_field: str, grid: GeoBox) -> LabelSource:
    """Open a label file's metadata and check it overlaps the grid.

    Raises:
        InputNotFoundError: No such file.
        UnreadableVectorError: Not a vector file, or no ``class_field``.
        UnreadableRasterError: A raster that cannot be read.
        NoOverlapError: The labels do not overlap the grid.
    """
    if not path.exists():
        raise InputNotFoundError(f"label file {path} does not exist: check the path")
    if path.suffix.lower() in VECTOR_SUFFIXES:
        source = _check_vector(path, class_field)
        source_bounds = _vector_bounds(path)
    else:
        source, source_bounds = _check_raster(path, class_field)
    footprint = BoundingBox(*source_bounds, crs=source.crs).polygon.to_crs(crs_of(grid))
    if not footprint.intersects(grid.extent):
        b = grid.extent.to_crs("EPSG:4326").boundingbox
        raise NoOverlapError(
            f"labels {path} (bounds {tuple(round(v, 4) for v in source_bounds)} in their CRS) "
            f"do not overlap the cube (lon {b.left:.4f}..{b.right:.4f}, lat "
            f"{b.bottom:.4f}..{b.top:.4f}): check the labels' CRS and area"
        )
    return source


def _check_vector(path: Path, class_field: str) -> LabelSource:
    crs, fields, _ = _vector_info(path)
    if crs is None:
        raise UnreadableVectorError(f"{path} has no CRS: assign one (e.g. with ogr2ogr -a_srs)")
    if class_field not in fields:
        raise UnreadableVectorError(
            f"{path} has no field {class_field!r}; its fields are {fields}: "
            "pass --class-field with the field holding integer class ids"
        )
    return LabelSource(str(path), "vector", crs, class_field)


def _vector_bounds(path: Path) -> tuple[float, float, float, float]:
    return _vector_info(path)[2]


def _vector_info(path: Path) -> tuple[str | None, list[str], tuple[float, float, float, float]]:
    """CRS (WKT), fields and bounds of a vector file."""
    try:
        if path.suffix.lower() in {".parquet", ".geoparquet"}:
            # GeoParquet through pyarrow: GDAL's Parquet driver is optional and missing from
            # some builds (the wheels here lack it).
            return _parquet_info(path)
        info = pyogrio.read_info(path, force_total_bounds=True)
    except Exception as exc:
        raise UnreadableVectorError(
            f"{path} is not a vector file GDAL/OGR can read ({exc}): expected GeoJSON, "
            "GeoPackage, GeoParquet or Shapefile"
        ) from exc
    crs = str(info["crs"]) if info.get("crs") is not None else None
    bounds = tuple(float(v) for v in info["total_bounds"])
    return crs, list(info.get("fields", [])), bounds  # type: ignore[return-value]


def _parquet_info(path: Path) -> tuple[str | None, list[str], tuple[float, float, float, float]]:
    """CRS, fields and bounds of a GeoParquet file from its metadata, reading no rows when
    the file declares its bbox (else only the geometry column)."""
    schema = pq.read_schema(path)
    geo = json.loads((schema.metadata or {}).get(b"geo", b"{}"))
    column = geo.get("primary_column", "geometry")
    meta = geo.get("columns", {}).get(column, {})
    # GeoParquet: a missing "crs" means OGC:CRS84; an explicit null means unknown.
    crs_value = meta.get("crs", "OGC:CRS84")
    crs = None if crs_value is None else pyproj.CRS.from_user_input(crs_value).to_wkt()
    fields = [n for n in schema.names if n != column and n != "bbox"]
    bbox = meta.get("bbox")
    if bbox is None or len(bbox) != 4:
        bbox = gpd.read_parquet(path, columns=[column]).total_bounds
    return crs, fields, tuple(float(v) for v in bbox)  # type: ignore[return-value]


def _check_raster(
    path: Path, class_field: str
) -> tuple[LabelSource, tuple[float, float, float, float]]:
    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise UnreadableRasterError(f"label raster {path} has no CRS: assign one")
            if src.count != 1:
                raise UnreadableRasterError(
                    f"label raster {path} has {src.count} bands; expected one band of class ids"
                )
            b = src.bounds
            return LabelSource(str(path), "raster", src.crs.to_wkt(), class_field), (
                b.left,
                b.bottom,
                b.right,
                b.top,
            )
    except rasterio.errors.RasterioIOError as exc:
        raise UnreadableRasterError(
            f"{path} is neither a known vector format nor a readable raster ({exc})"
        ) from exc


def rasterize_labels(
    source_path: Path,
    grid_path: Path,
    out: Path,
    *,
    class_field: str = "class_id",
    client: Client | None = None,
    overwrite: bool = False,
    run_id: str = "",
    progress: ProgressFn | None = None,
) -> LabelsResult:
    """Rasterize labels onto the grid of a store (a cube or a class map) and publish them.

    Args:
        source_path: Vector file (any CRS, integer ``class_field``) or class-id GeoTIFF.
        grid_path: The cube (or class map) whose grid and tiles the labels take.
        out: Path of the labels store to publish.
        class_field: Vector field holding class ids 0..254.
        client: Dask client; ``None`` runs the tiles in this process.
        overwrite: Replace an existing store at ``out``.
        run_id: Run id recorded in the store.
        progress: Called after each tile.
    """
    start = time.perf_counter()
    check_output(out, overwrite)
    cube = open_grid_store(grid_path)
    grid: GeoBox = cube.odc.geobox
    tile_size = int(cube.attrs["tile_size"])
    source = check_label_source(source_path, class_field, grid)
    tiles = list(iter_tiles(grid, tile_size))
    signature = hashlib.sha256(
        json.dumps(
            [
                source.path,
                Path(source.path).stat().st_mtime,
                class_field,
                cube.attrs["eoseg_signature"],
                tile_size,
            ]
        ).encode()
    ).hexdigest()[:16]
    coords = xr_coords(grid, crs_coord_name="spatial_ref")
    template = xr.Dataset(
        {"labels": (("y", "x"), da.zeros(grid.shape.yx, chunks=tile_size, dtype="uint8"))},
        coords=coords,
    )
    template["labels"].attrs.update(long_name="class id, 255 = ignore", grid_mapping="spatial_ref")
    attrs = {
        "run_id": run_id,
        "tile_size": tile_size,
        "source": source.path,
        "class_field": class_field,
        "grid_store": str(grid_path),
    }
    staging = create_store(out, template, product="labels", signature=signature, attrs=attrs)
    todo = [t for t in tiles if t.name not in done_tiles(staging)]
    counts_per_tile = run_tiles(
        client, rasterize_tile, todo, progress=progress, source=source, grid=grid, staging=staging
    )
    publish(out, overwrite=overwrite)
    counts = np.zeros(256, dtype="int64")
    for c in counts_per_tile:
        counts += np.asarray(c, dtype="int64")
    total = grid.shape.y * grid.shape.x
    labelled = int(counts[:IGNORE_ID].sum())
    return LabelsResult(
        path=out,
        labelled_fraction=labelled / total if total else 0.0,
        class_counts={i: int(n) for i, n in enumerate(counts[:IGNORE_ID]) if n},
        seconds=time.perf_counter() - start,
    )


def rasterize_tile(tile: Tile, *, source: LabelSource, grid: GeoBox, staging: Path) -> list[int]:
    """Burn the labels of one tile and write it; returns the tile's class histogram."""
    box = tile.geobox(grid)
    out = _burn_vector(source, box) if source.kind == "vector" else _resample_raster(source, box)
    write_tile(staging, tile, {"labels": out}, {"source": source.path})
    return np.bincount(out.ravel(), minlength=256).tolist()


def _burn_vector(source: LabelSource, box: GeoBox) -> np.ndarray:
    bbox = box.extent.to_crs(source.crs).boundingbox
    frame = _read_vector(Path(source.path), tuple(bbox))
    out = np.full(box.shape.yx, IGNORE_ID, dtype="uint8")
    if frame.empty:
        return out
    frame = frame.to_crs(crs_of(box).wkt)
    values = frame[source.class_field]
    ok = values.notna() & frame.geometry.notna() & ~frame.geometry.is_empty
    ids = values[ok].astype("int64")
    bad = ids[(ids < 0) | (ids >= IGNORE_ID)]
    if len(bad):
        raise UnreadableVectorError(
            f"{source.path}: field {source.class_field!r} must hold class ids 0..254; "
            f"found {sorted(set(bad.tolist()))[:5]}: map them to class ids first"
        )
    shapes = zip(frame.geometry[ok], ids, strict=True)
    return rasterize(
        shapes, out_shape=box.shape.yx, transform=box.affine, fill=IGNORE_ID, dtype="uint8"
    )


def _read_vector(path: Path, bbox: tuple[float, ...]) -> gpd.GeoDataFrame:
    try:
        if path.suffix.lower() in {".parquet", ".geoparquet"}:
            try:
                return gpd.read_parquet(path, bbox=bbox)
            except ValueError:
                # No bbox covering column (GeoParquet < 1.1): read all, then filter. Writers
                # of large label files should add one (to_parquet(write_covering_bbox=True)).
                minx, miny, maxx, maxy = bbox
                return gpd.read_parquet(path).cx[minx:maxx, miny:maxy]
        return gpd.read_file(path, bbox=bbox, engine="pyogrio")
    except Exception as exc:
        raise UnreadableVectorError(f"could not read {path} ({exc})") from exc


def _resample_raster(source: LabelSource, box: GeoBox) -> np.ndarray:
    out = np.full(box.shape.yx, IGNORE_ID, dtype="uint8")
    with rasterio.open(source.path) as src:
        reproject(
            source=rasterio.band(src, 1),
            destination=out,
            src_nodata=src.nodata if src.nodata is not None else IGNORE_ID,
            dst_transform=box.affine,
            dst_crs=crs_of(box).wkt,
            dst_nodata=IGNORE_ID,
            resampling=Resampling.nearest,
        )
    return out


def open_labels(path: Path | str) -> xr.DataArray:
    """Open a labels store lazily as a ``(y, x)`` uint8 DataArray (255 = ignore)."""
    ds = open_product(path, "labels")
    labels: xr.DataArray = ds["labels"]
    labels.attrs.update({k: v for k, v in ds.attrs.items() if k.startswith("eoseg_")})
    return labels


def open_truth(
    source: Path, grid_path: Path, *, class_field: str = "class_id", workdir: Path
) -> xr.DataArray:
    """Reference labels on the grid of ``grid_path``.

    ``source`` may be a labels store, a class-id GeoTIFF or a vector file; the latter two
    are rasterized into a store inside ``workdir``.
    """
    if (source / "zarr.json").exists():
        return open_labels(source)
    out = workdir / f"truth-{hashlib.sha1(str(source).encode()).hexdigest()[:8]}.zarr"
    rasterize_labels(source, grid_path, out, class_field=class_field, overwrite=True)
    return open_labels(out)
