"""Scale without a country: a Brazil-sized predict plan through a real cluster, pixels skipped.

`benchmarks/predict.py --plan-only` builds the grid of a country (default about 20,000
tiles of 2048 px at 10 m, Brazil's 85 Gpx), lists its tiles as `eoseg.predict` does
(`eoseg.grid.iter_tiles`) and runs them through `eoseg.cluster.run_tiles` on a real
process `LocalCluster`, with a tile function that takes a predict task's arguments and
does no pixel work. What is left is the cost of the plan itself: building it, the graph
the scheduler holds, submitting, and the per-task overhead of client, scheduler and
workers. The overhead is compared with the compute of one default tile measured on this
machine (`predict.py`'s model-only figure): it must stay under 5 %.
"""

from __future__ import annotations

import math
import pickle
import time
from pathlib import Path
from typing import Any

import psutil
from affine import Affine
from odc.geo.geobox import GeoBox

from benchmarks.predict_setup import TreeMemory
from eoseg.cluster import connect, in_flight_limit, run_tiles
from eoseg.grid import Tile, iter_tiles

BRAZIL_TILES = 20_000
"""Brazil at 10 m is about 85 Gpx: 20,000 tiles of 2048 x 2048 px."""
BRAZIL_CRS = "EPSG:5880"  # SIRGAS 2000 / Brazil Polyconic


def country_grid(tiles: int, tile_size: int, resolution: float = 10.0) -> GeoBox:
    """A near-square grid of at least ``tiles`` whole tiles (a country's pixel count; the
    shape does not matter to the scheduler)."""
    cols = math.ceil(math.sqrt(tiles))
    rows = math.ceil(tiles / cols)
    affine = Affine(resolution, 0.0, 2_500_000.0, 0.0, -resolution, 10_500_000.0)
    return GeoBox((rows * tile_size, cols * tile_size), affine, BRAZIL_CRS)


def skip_tile(tile: Tile, *, cube_path: str, model_dir: str, staging: Path) -> int:
    """A predict task's signature and result (the tile's pixel count), no pixel work."""
    return tile.height * tile.width


def run_plan(
    n_tiles: int,
    tile_size: int,
    *,
    workers: int | None,
    max_in_flight: int | None,
    dask_dir: Path,
    unbounded: bool = False,
) -> dict[str, Any]:
    """Build the plan and run it with pixels skipped; its figures. ``unbounded`` submits
    every tile at once (what `run_tiles` did before it bounded the tiles in flight).

    Returns:
        ``tiles``, ``gigapixels``, ``plan_seconds`` (grid and tile list), ``task_bytes``
        (one task's pickled function and arguments) and ``graph_mb`` (times the tiles),
        ``in_flight`` (the limit used) and ``max_client_futures`` (the most futures the
        client held, sampled at each finished tile), ``first_result_seconds`` (submit to
        the first finished tile), ``seconds`` (all tiles), ``per_task_ms``, client memory
        (``client_mb_before``, ``client_mb_peak``: the process holding the client and the
        local scheduler) and ``tree_mb_peak`` (with the workers).
    """
    start = time.perf_counter()
    grid = country_grid(n_tiles, tile_size)
    tiles = list(iter_tiles(grid, tile_size))
    plan_seconds = time.perf_counter() - start
    kwargs = {"cube_path": "/data/cube.zarr", "model_dir": "/models/unet", "staging": Path("/x")}
    task_bytes = len(pickle.dumps((skip_tile, tiles[0], kwargs)))
    me = psutil.Process()
    with connect(None, n_workers=workers, local_directory=dask_dir) as client:
        limit = len(tiles) if unbounded else max_in_flight or in_flight_limit(client)
        held = {"max": 0, "first": 0.0}
        with TreeMemory() as tree, TreeMemory(tree=False) as client_memory:
            before = me.memory_info().rss
            started = time.perf_counter()

            def progress(done: int, total: int) -> None:
                held["max"] = max(held["max"], len(client.futures))
                if done == 1:
                    held["first"] = time.perf_counter() - started

            pixels = run_tiles(
                client, skip_tile, tiles, progress=progress, max_in_flight=limit, **kwargs
            )
            seconds = time.perf_counter() - started
        n_workers = len(client.nthreads())
    if sum(pixels) != grid.shape.y * grid.shape.x:
        raise RuntimeError(f"{sum(pixels)} px came back of {grid.shape.y * grid.shape.x}")
    return {
        "tiles": len(tiles),
        "tile_size": tile_size,
        "gigapixels": grid.shape.y * grid.shape.x / 1e9,
        "workers": n_workers,
        "plan_seconds": plan_seconds,
        "task_bytes": task_bytes,
        "graph_mb": task_bytes * len(tiles) / 2**20,
        "in_flight": limit,
        "max_client_futures": held["max"],
        "first_result_seconds": held["first"],
        "seconds": seconds,
        "per_task_ms": 1e3 * seconds / len(tiles),
        "client_mb_before": before / 2**20,
        "client_mb_peak": client_memory.peak / 2**20,
        "tree_mb_peak": tree.peak / 2**20,
    }


def format_plan(doc: dict[str, Any]) -> str:
    """The plan figures as lines of text."""
    lines = [
        f"plan: {doc['tiles']:,} tiles of {doc['tile_size']} px ({doc['gigapixels']:.1f} Gpx) "
        f"built in {doc['plan_seconds']:.2f} s; one task {doc['task_bytes']} B pickled, "
        f"{doc['graph_mb']:.1f} MB for the whole graph",
    ]
    for run in doc["runs"]:
        lines.append(
            f"  {run['in_flight']:>6} in flight (client held at most {run['max_client_futures']} "
            f"futures): first result {run['first_result_seconds']:.2f} s, all "
            f"{run['seconds']:.1f} s on {run['workers']} workers = {run['per_task_ms']:.2f} ms "
            f"per tile; client {run['client_mb_before']:.0f} -> {run['client_mb_peak']:.0f} MB "
            f"peak, process tree {run['tree_mb_peak']:.0f} MB"
        )
    if doc.get("tile_seconds"):
        lines.append(
            f"compute of one {doc['tile_size']} px tile: {doc['tile_seconds']:.1f} s "
            f"({doc['tile_seconds_from']}); scheduler overhead "
            f"{100 * doc['overhead_fraction']:.3f} % of it (target < 5 %)"
        )
    return "\n".join(lines)
