"""Cubes: scenes from any CRS composited onto one grid in a chunked Zarr store.

`ingest` plans the grid and which scenes touch which tile (`eoseg.ingest_plan`), creates
the store, and runs `eoseg.composite.ingest_tile` for each tile on the cluster: every
scene touching the tile is reprojected onto it (bilinear for reflectance, average when the
scene is much finer than the grid, nearest for masks), nodata and clouds are masked, and
the scenes are composited (first valid, or median) per time step. A task carries only its
own scenes, so peak memory per task is one tile's worth, whatever the area or the number
of scenes. A tile with no valid data is written as nodata with ``valid = 0``, never as
zeros.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from distributed import Client
from odc.geo.geobox import GeoBox

from eoseg.catalog import Scene, scan_sources
from eoseg.cluster import ProgressFn, run_tiles
from eoseg.composite import COMPOSITES, Composite, ingest_tile, unused_scenes
from eoseg.errors import InputNotFoundError, InvalidParameterError
from eoseg.grid import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_TILE_SIZE,
    crs_of,
    describe_grid,
    grid_coords,
    iter_tiles,
)
from eoseg.ingest_plan import (
    CubeEncoding,
    check_bands,
    choose_encoding,
    plan_grid,
    plan_jobs,
    time_steps,
)
from eoseg.input_signature import input_signatures
from eoseg.locks import output_lock
from eoseg.outputs import check_output
from eoseg.storage import location, resolve
from eoseg.store import (
    create_store,
    done_tiles,
    open_product,
    publish,
    resumable,
    tile_provenance,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class IngestResult:
    """The run report of an ingest: what was written, what was skipped and why, and each
    scene's date with where it was read (``dates``: scene id, ISO date, source)."""

    path: Path | str
    grid: dict[str, Any]
    bands: tuple[str, ...]
    times: tuple[str, ...]
    scenes: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]
    dates: tuple[tuple[str, str | None, str | None], ...]
    tiles: int
    tiles_written: int
    valid_fraction: float
    bytes: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready report (what ``eoseg ingest --json`` prints)."""
        return {
            "cube": str(self.path),
            "grid": self.grid,
            "bands": list(self.bands),
            "times": list(self.times),
            "scenes": list(self.scenes),
            "scene_dates": [{"scene": s, "date": d, "from": f} for s, d, f in self.dates],
            "skipped": [{"scene": s, "reason": r} for s, r in self.skipped],
            "tiles": self.tiles,
            "tiles_written": self.tiles_written,
            "valid_fraction": self.valid_fraction,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 2),
        }


def _check_options(
    resolution: float | None,
    tile_size: int,
    chunk_size: int | None,
    composite: str,
    max_pixels: float,
) -> None:
    if composite not in COMPOSITES:
        raise InvalidParameterError(f"--composite must be one of {COMPOSITES}; found {composite!r}")
    if resolution is not None and not (math.isfinite(resolution) and resolution > 0):
        raise InvalidParameterError(
            f"--resolution must be a positive pixel size in the grid CRS's units (e.g. 10 "
            f"for 10 m); found {resolution}: give one, or leave --resolution out to keep "
            "the first scene's pixels"
        )
    for flag, size in (("--tile-size", tile_size), ("--chunk-size", chunk_size)):
        if size is not None and size < 1:
            raise InvalidParameterError(
                f"{flag} must be at least 1 px; found {size}: give e.g. 2048 for --tile-size, "
                "512 for --chunk-size, or leave it out"
            )
    if chunk_size is not None and tile_size % chunk_size:
        raise InvalidParameterError(
            f"--chunk-size {chunk_size} must divide --tile-size {tile_size}: tiles are "
            "shards made of whole chunks; give e.g. 512, or leave --chunk-size out"
        )
    if not (math.isfinite(max_pixels) and max_pixels >= 1):
        raise InvalidParameterError(
            f"--max-pixels must be a positive number of pixels; found {max_pixels}: give "
            f"e.g. 1e11, or leave it out for {DEFAULT_MAX_PIXELS:.0e}".replace("e+", "e")
        )


def ingest(
    sources: Sequence[str | Path],
    out: Path | str,
    *,
    crs: str | None = None,
    resolution: float | None = None,
    bbox: tuple[float, float, float, float] | None = None,
    tile_size: int = DEFAULT_TILE_SIZE,
    chunk_size: int | None = None,
    composite: Composite = "first",
    by_date: bool = False,
    sensors: Sequence[str] | None = None,
    max_pixels: float | None = None,
    allow_distant_crs: bool = False,
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
        tile_size: Tile size in pixels: the unit of parallel work, and the Zarr shard when
            ``chunk_size`` is smaller (else the chunk).
        chunk_size: Inner Zarr chunk size; smaller than ``tile_size`` makes a sharded store.
        composite: ``"first"`` valid value in source order, or ``"median"`` of valid values.
        by_date: One time step per acquisition date instead of one composite.
        sensors: Keep only scenes of these sensor profiles (others are reported skipped).
        max_pixels: Largest grid accepted, in pixels (a larger one is refused before any
            work, with its size and likely cause); default `DEFAULT_MAX_PIXELS`.
        allow_distant_crs: Accept a grid CRS whose area of use lies far from the scenes
            (refused by default: `eoseg.ingest_plan.check_crs_reach`).
        client: Dask client; ``None`` runs the tiles in this process.
        overwrite: Replace an existing cube at ``out``.
        run_id: Run id recorded in the store.
        progress: Called after each tile.

    Returns:
        The run report; scenes that contributed nothing are listed in ``skipped``.

    Raises:
        EosegError: No usable scene, options that cannot work, a grid too large or in a
            CRS far from the scenes, or scenes without a valid pixel (see `eoseg.errors`).
    """
    start = time.perf_counter()
    out = location(out)
    check_output(out, "cube", overwrite=overwrite, inputs={"SOURCES": sources})
    max_pixels = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    _check_options(resolution, tile_size, chunk_size, composite, max_pixels)
    scan = scan_sources(sources)
    if not scan.scenes:
        raise scan.skipped[0].error  # nothing usable: the first problem says what to fix
    scenes = [s for s in scan.scenes if not sensors or s.sensor in sensors]
    unwanted = [
        (s.id, f"sensor {s.sensor} not among {list(sensors or [])}")
        for s in scan.scenes
        if s not in scenes
    ]
    if not scenes:
        raise InvalidParameterError(
            f"no scene of sensors {list(sensors or [])}; found "
            f"{sorted({s.sensor for s in scan.scenes})}: choose among those"
        )
    bands = check_bands(scenes)
    grid = plan_grid(
        scenes,
        crs,
        resolution,
        bbox,
        tile_size=tile_size,
        max_pixels=max_pixels,
        allow_distant_crs=allow_distant_crs,
    )
    tiles = list(iter_tiles(grid, tile_size))
    steps = time_steps(scenes, by_date)
    jobs, outside = plan_jobs(scenes, steps, grid, tiles)
    encoding = choose_encoding(scenes)
    inputs = input_signatures(
        jobs,
        grid,
        encoding=encoding,
        composite=composite,
        dates=[d for d, _ in steps] if by_date else None,
    )
    jobs = [replace(j, signature=inputs[j.tile.name]) for j in jobs]
    signature = _signature(scenes, grid, tile_size, chunk_size, encoding, composite, by_date)
    template = _template(grid, bands, tile_size, chunk_size, encoding, [d for d, _ in steps])
    attrs = {
        "run_id": run_id,
        "tile_size": tile_size,
        "bands": list(bands),
        "scenes": [s.id for s in scenes],
        "sensor": scenes[0].sensor,
        "composite": composite,
        "by_date": by_date,  # models read such cubes date by date (eoseg.model_input)
        "grid": describe_grid(grid),
        **geozarr_attrs(grid),
    }
    with output_lock(out, run_id=run_id):
        staging = create_store(out, template, product="cube", signature=signature, attrs=attrs)
        done = done_tiles(staging)
        todo = [j for j in jobs if j.tile.name not in done]
        log.info("ingest: %d scenes, %d tiles (%d done)", len(scenes), len(tiles), len(done))
        with resumable(staging, len(tiles)):
            run_tiles(
                client,
                ingest_tile,
                todo,
                progress=progress,
                grid=grid,
                n_bands=len(bands),
                encode=encoding.encode,
                staging=staging,
                method=composite,
            )
        records = tile_provenance(staging)
        used = {i for r in records for i in r["scenes"]}
        skipped = [(k.id or k.source, k.reason) for k in scan.skipped] + unwanted
        skipped += unused_scenes(scenes, records, outside)
        _refuse_without_valid_pixel(records, staging, [s.id for s in scenes])
        for scene_id, reason in skipped:
            log.warning("scene %s contributed nothing: %s", scene_id, reason)
        publish(out, overwrite=overwrite)
    pixels = sum(r["pixels"] for r in records)
    return IngestResult(
        path=out,
        grid=describe_grid(grid),
        bands=bands,
        times=tuple(d for d, _ in steps),
        scenes=tuple(s.id for s in scenes if s.id in used),
        skipped=tuple(skipped),
        dates=tuple((s.id, s.datetime, s.datetime_source) for s in scenes),
        tiles=len(tiles),
        tiles_written=len(todo),
        valid_fraction=sum(r["valid_fraction"] * r["pixels"] for r in records) / pixels,
        bytes=_store_bytes(out),
        seconds=time.perf_counter() - start,
    )


def _refuse_without_valid_pixel(
    records: Sequence[dict[str, Any]], staging: Path | str, scene_ids: Sequence[str]
) -> None:
    """A cube holding no valid pixel is no product: drop its staging store and say why.

    Raises:
        InputNotFoundError: Every tile is nodata.
    """
    if any(r["valid_fraction"] > 0 for r in records):
        return
    shutil.rmtree(staging, ignore_errors=True)  # nothing to resume: it would stay empty
    names = ", ".join(scene_ids[:3]) + (", ..." if len(scene_ids) > 3 else "")
    raise InputNotFoundError(
        f"no scene holds a valid pixel on the grid ({len(scene_ids)} scene(s): {names}; "
        "every value is nodata or masked as cloud), so the cube would be empty: expected "
        "imagery with data; check the scenes' nodata value and cloud mask, and that they "
        "cover the grid (--bbox)"
    )


def geozarr_attrs(grid: GeoBox) -> dict[str, Any]:
    """Georeferencing for readers that do not speak CF: CRS, transform, shape, bbox."""
    crs = crs_of(grid)
    b = grid.boundingbox
    return {
        "proj:code": f"EPSG:{crs.epsg}" if crs.epsg else None,
        "proj:wkt2": crs.to_wkt(),
        "spatial:dimensions": ["y", "x"],
        "spatial:transform": list(grid.affine)[:6],
        "spatial:shape": [grid.shape.y, grid.shape.x],
        "spatial:bbox": [b.left, b.bottom, b.right, b.top],
    }


def _template(
    grid: GeoBox,
    bands: tuple[str, ...],
    tile: int,
    chunk: int | None,
    enc: CubeEncoding,
    times: Sequence[str],
) -> xr.Dataset:
    ny, nx, nt, nb = grid.shape.y, grid.shape.x, len(times), len(bands)
    coords = grid_coords(grid)
    when = np.array(
        [np.datetime64(t) if t else np.datetime64("NaT") for t in times], dtype="datetime64[ns]"
    )
    data = da.zeros((nt, nb, ny, nx), chunks=(1, nb, tile, tile), dtype="float32")
    valid = da.zeros((nt, ny, nx), chunks=(1, tile, tile), dtype="uint8")
    ds = xr.Dataset(
        {"data": (("time", "band", "y", "x"), data), "valid": (("time", "y", "x"), valid)},
        coords={**coords, "band": np.array(bands, dtype=object), "time": when},
    )
    ds["data"].encoding.update(enc.xarray_encoding())
    # Zarr's fill values are nodata: what is not written is not valid and has no value.
    ds["data"].encoding["fill_value"] = enc.fill
    ds["valid"].encoding["fill_value"] = 0
    if chunk and chunk < tile:
        # Tiles are shards: each task writes whole shards, so parallel writes never race.
        ds["data"].encoding.update(chunks=(1, nb, chunk, chunk), shards=(1, nb, tile, tile))
        ds["valid"].encoding.update(chunks=(1, chunk, chunk), shards=(1, tile, tile))
    ds["data"].attrs.update(long_name="band values", grid_mapping="spatial_ref")
    ds["valid"].attrs.update(
        long_name="1 where every band is valid and cloud-free", grid_mapping="spatial_ref"
    )
    return ds


def _signature(
    scenes: Sequence[Scene],
    grid: GeoBox,
    tile: int,
    chunk: int | None,
    enc: CubeEncoding,
    composite: str,
    by_date: bool,
) -> str:
    parts = {
        "scenes": [(s.id, [b.href for b in s.bands], _mtime(s)) for s in scenes],
        "grid": describe_grid(grid),
        "tiling": [tile, chunk, composite, by_date],
        "encoding": [enc.dtype, enc.scale, enc.offset, str(enc.fill)],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _mtime(scene: Scene) -> float:
    """Newest modification time of a scene's local files (remote assets count as 0)."""
    local = [Path(b.href) for b in scene.bands if "://" not in b.href]
    return max((p.stat().st_mtime for p in local if p.exists()), default=0.0)


def _store_bytes(out: Path | str) -> int:
    """The size of a published store (one listing on object storage)."""
    loc = resolve(out)
    return int(loc.fs.du(loc.path, total=True))


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
