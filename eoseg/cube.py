"""Cubes: scenes from any CRS composited onto one grid in a chunked Zarr store.

`ingest` plans the grid, creates the store, and runs `ingest_tile` for each tile on the
cluster. `ingest_tile` is a pure per-tile function: it reprojects every scene that touches
the tile (bilinear for reflectance, average when the scene is much finer than the grid,
nearest for masks), masks nodata and clouds, composites first-valid in source order, and
writes the tile. Peak memory per task is one tile, whatever the area.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from distributed import Client
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords

from eoseg.catalog import Scene, discover_scenes
from eoseg.cluster import ProgressFn, run_tiles
from eoseg.errors import BandMismatchError, NoOverlapError
from eoseg.grid import Tile, crs_of, describe_grid, iter_tiles, make_grid, parse_crs
from eoseg.store import (
    check_output,
    create_store,
    done_tiles,
    open_product,
    publish,
    write_tile,
)
from eoseg.warp import read_scene

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CubeEncoding:
    """How the cube stores values: the dtype on disk and the CF decoding attributes."""

    dtype: str
    scale: float
    offset: float
    fill: float

    def encode(self, values: np.ndarray) -> np.ndarray:
        """Physical float values (NaN = nodata) to stored values."""
        if np.dtype(self.dtype).kind == "f":
            return values.astype(self.dtype)
        info = np.iinfo(self.dtype)
        raw = np.rint((values - self.offset) / self.scale)
        raw = np.clip(np.nan_to_num(raw, nan=self.fill), info.min, info.max)
        raw[np.isnan(values)] = self.fill
        return raw.astype(self.dtype)

    def xarray_encoding(self) -> dict[str, Any]:
        """Encoding for the ``data`` variable of the template."""
        enc: dict[str, Any] = {"dtype": self.dtype, "_FillValue": self.fill}
        if self.scale != 1.0:
            enc["scale_factor"] = np.float32(self.scale)
        if self.offset != 0.0:
            enc["add_offset"] = np.float32(self.offset)
        return enc


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What an ingest wrote."""

    path: Path
    grid: dict[str, Any]
    bands: tuple[str, ...]
    scenes: tuple[str, ...]
    tiles: int
    valid_fraction: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (what ``eoseg ingest --json`` prints)."""
        return {
            "cube": str(self.path),
            "grid": self.grid,
            "bands": list(self.bands),
            "scenes": list(self.scenes),
            "tiles": self.tiles,
            "valid_fraction": self.valid_fraction,
            "seconds": round(self.seconds, 2),
        }


def choose_encoding(scenes: Sequence[Scene]) -> CubeEncoding:
    """Keep the scenes' integer dtype and scaling when they agree; else float32."""
    first = scenes[0]
    same = all(
        (s.dtype, s.scale, s.offset) == (first.dtype, first.scale, first.offset) for s in scenes
    )
    kind = np.dtype(first.dtype).kind
    if not same or kind not in "ui":
        return CubeEncoding("float32", 1.0, 0.0, float("nan"))
    info = np.iinfo(first.dtype)
    if first.nodata is not None and info.min <= first.nodata <= info.max:
        fill = float(first.nodata)
    else:
        # No declared nodata: reserve the value least likely to be real data.
        fill = float(info.max if kind == "u" else info.min)
    return CubeEncoding(first.dtype, first.scale, first.offset, fill)


def plan_grid(
    scenes: Sequence[Scene],
    crs: str | None = None,
    resolution: float | None = None,
    bbox: tuple[float, float, float, float] | None = None,
) -> GeoBox:
    """The grid of a cube: the first scene's CRS and resolution unless given."""
    grid_crs = parse_crs(crs) if crs else scenes[0].crs
    res = resolution or scenes[0].resolution
    if crs and not resolution and grid_crs.units != scenes[0].crs.units:
        raise NoOverlapError(
            f"--crs {crs} has units {grid_crs.units} but the sources are in "
            f"{scenes[0].crs.units}: give --resolution in the grid's units"
        )
    first = scenes[0]
    origin = (first.bounds[0], first.bounds[3]) if grid_crs == first.crs else (0.0, 0.0)
    return make_grid([s.footprint for s in scenes], grid_crs, float(res), bbox, origin)


def _check_bands(scenes: Sequence[Scene]) -> tuple[str, ...]:
    bands = scenes[0].band_names
    for s in scenes[1:]:
        if s.band_names != bands:
            raise BandMismatchError(
                f"scene {s.id} has bands {s.band_names}; scene {scenes[0].id} has {bands}: "
                "a cube needs the same bands from every scene — ingest them separately or "
                "select matching scenes"
            )
    return bands


def ingest(
    sources: Sequence[str | Path],
    out: Path,
    *,
    crs: str | None = None,
    resolution: float | None = None,
    bbox: tuple[float, float, float, float] | None = None,
    tile_size: int = 2048,
    client: Client | None = None,
    overwrite: bool = False,
    run_id: str = "",
    progress: ProgressFn | None = None,
) -> IngestResult:
    """Ingest scenes into a cube on one grid.

    Args:
        sources: GeoTIFF/COG files, folders, or STAC catalog/collection/item JSON files.
        out: Path of the cube store to publish.
        crs: Grid CRS (default: the first scene's).
        resolution: Grid pixel size in grid CRS units (default: the first scene's).
        bbox: ``minx,miny,maxx,maxy`` in EPSG:4326 to clip the grid to.
        tile_size: Tile (and chunk) size in pixels.
        client: Dask client; ``None`` runs the tiles in this process.
        overwrite: Replace an existing cube at ``out``.
        run_id: Run id recorded in the store.
        progress: Called after each tile.

    Raises:
        EosegError: Unreadable or mismatched sources (see `eoseg.errors`).
    """
    start = time.perf_counter()
    check_output(out, overwrite)
    scenes = discover_scenes(sources)
    bands = _check_bands(scenes)
    grid = plan_grid(scenes, crs, resolution, bbox)
    tiles = list(iter_tiles(grid, tile_size))
    encoding = choose_encoding(scenes)
    signature = _signature(scenes, grid, tile_size, encoding)
    template = _template(grid, bands, tile_size, encoding, scenes)
    attrs = {
        "run_id": run_id,
        "tile_size": tile_size,
        "bands": list(bands),
        "scenes": [s.id for s in scenes],
        "sensor": scenes[0].sensor,
        "grid": describe_grid(grid),
    }
    staging = create_store(out, template, product="cube", signature=signature, attrs=attrs)
    done = done_tiles(staging)
    todo = [t for t in tiles if t.name not in done]
    log.info("ingest: %d scenes, %d tiles (%d already done)", len(scenes), len(tiles), len(done))
    run_tiles(
        client,
        ingest_tile,
        todo,
        progress=progress,
        scenes=scenes,
        grid=grid,
        encoding=encoding,
        staging=staging,
    )
    publish(out, overwrite=overwrite)
    valid = _valid_fraction(out)
    return IngestResult(
        path=out,
        grid=describe_grid(grid),
        bands=bands,
        scenes=tuple(s.id for s in scenes),
        tiles=len(tiles),
        valid_fraction=valid,
        seconds=time.perf_counter() - start,
    )


def ingest_tile(
    tile: Tile, *, scenes: Sequence[Scene], grid: GeoBox, encoding: CubeEncoding, staging: Path
) -> float:
    """Composite all scenes touching one tile and write it; returns its valid fraction."""
    tile_box = tile.geobox(grid)
    out = np.full((len(scenes[0].bands), tile.height, tile.width), np.nan, dtype="float32")
    missing = np.ones((tile.height, tile.width), dtype=bool)
    used = []
    tile_poly = tile_box.extent
    for scene in scenes:
        if not missing.any():
            break
        if not scene.footprint.to_crs(crs_of(grid)).intersects(tile_poly):
            continue
        values, ok = read_scene(scene, tile_box)
        take = missing & ok
        if take.any():
            out[:, take] = values[:, take]
            missing &= ~take
            used.append(scene.id)
    valid = ~missing
    write_tile(
        staging,
        tile,
        {"data": encoding.encode(out)[None], "valid": valid.astype("uint8")[None]},
        {"scenes": used, "valid_fraction": float(valid.mean())},
    )
    return float(valid.mean())


def _template(
    grid: GeoBox, bands: tuple[str, ...], tile: int, enc: CubeEncoding, scenes: Sequence[Scene]
) -> xr.Dataset:
    ny, nx = grid.shape.y, grid.shape.x
    coords = xr_coords(grid, crs_coord_name="spatial_ref")
    times = [s.datetime for s in scenes if s.datetime]
    when = np.array(
        [np.datetime64(min(times)[:19]) if times else np.datetime64("NaT")], dtype="datetime64[ns]"
    )
    data = da.zeros((1, len(bands), ny, nx), chunks=(1, len(bands), tile, tile), dtype="float32")
    valid = da.zeros((1, ny, nx), chunks=(1, tile, tile), dtype="uint8")
    ds = xr.Dataset(
        {
            "data": (("time", "band", "y", "x"), data),
            "valid": (("time", "y", "x"), valid),
        },
        coords={**coords, "band": np.array(bands, dtype=object), "time": when},
    )
    ds["data"].encoding.update(enc.xarray_encoding())
    ds["data"].attrs.update(long_name="band values", grid_mapping="spatial_ref")
    ds["valid"].attrs.update(
        long_name="1 where every band is valid and cloud-free", grid_mapping="spatial_ref"
    )
    return ds


def _signature(scenes: Sequence[Scene], grid: GeoBox, tile: int, enc: CubeEncoding) -> str:
    parts = {
        "scenes": [(s.id, [b.href for b in s.bands], _mtime(s)) for s in scenes],
        "grid": describe_grid(grid),
        "tile": tile,
        "encoding": [enc.dtype, enc.scale, enc.offset, str(enc.fill)],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _mtime(scene: Scene) -> float:
    return max(Path(b.href).stat().st_mtime for b in scene.bands)


def _valid_fraction(path: Path) -> float:
    ds = open_product(path, "cube")
    return float(ds["valid"].mean().compute())


def open_cube(path: Path | str) -> xr.Dataset:
    """Open a cube lazily: ``data`` as float32 physical values (NaN = nodata), ``valid``.

    Raises:
        InputNotFoundError: Nothing at ``path``.
        InvalidStoreError: Not a complete eoseg cube.
    """
    ds = open_product(path, "cube")
    # Zarr JSON attributes read back as float64 scale factors; reflectance needs no more
    # than float32, and halving the bytes matters for every reader downstream.
    ds["data"] = ds["data"].astype("float32")
    return ds
