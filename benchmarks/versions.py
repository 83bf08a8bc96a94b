"""Storage growth and timings of versioned products (`eoseg.version_publish`).

Writes a class map the way ``eoseg predict`` does (template, tiles, per-tile records) on a
UTM grid, publishes it as version 1, then a regenerated map in which ``--fraction`` of
the tiles were recomputed (new pixels, new model and run in their records) as version 2,
then rolls back to version 1 and diffs the versions. Reports the repository's bytes on
disk after each step, the growth of each step relative to version 1, and the class map
store's own size (what a copy per version would cost).

Pixels are a blocky landscape (classes constant over 16-px blocks, 3% speckle) with a
smooth confidence, which compresses about like a real class map; uniform noise (the
tests' worst case) would make every figure larger but not change the ratios much.

Usage::

    .venv/bin/python benchmarks/versions.py [--workdir /tmp/eoseg-bench-versions] \\
        [--side 5120] [--tile-size 512] [--fraction 0.1] [--small]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from odc.geo.geobox import GeoBox

from eoseg import __version__
from eoseg.classes import generic_schema
from eoseg.classmap import classmap_template
from eoseg.grid import Tile, grid_coords, iter_tiles
from eoseg.store import create_store, publish, write_tile
from eoseg.version_diff import diff_versions
from eoseg.version_publish import publish_classmap, rollback

SCHEMA = generic_schema(6)


def landscape(shape: tuple[int, int], seed: int) -> dict[str, np.ndarray]:
    """Blocky classes with speckle, and a smooth confidence."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, len(SCHEMA), (shape[0] // 16 + 1, shape[1] // 16 + 1))
    cls = np.kron(blocks, np.ones((16, 16), dtype=np.int64))[: shape[0], : shape[1]]
    speckle = rng.random(shape) < 0.03
    cls[speckle] = rng.integers(0, len(SCHEMA), int(speckle.sum()))
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    conf = 160 + 80 * np.sin(yy / 37.0 + seed) * np.cos(xx / 53.0)
    return {"class": cls.astype("uint8"), "confidence": conf.astype("uint8")}


def write_map(
    path: Path,
    grid: GeoBox,
    tiles: list[Tile],
    pixels: dict[str, np.ndarray],
    records: dict[str, dict[str, Any]],
    run: str,
) -> Path:
    """A class map as ``eoseg predict`` writes one."""
    tile_size = tiles[0].height
    template = classmap_template(
        xr.Dataset(coords=grid_coords(grid)), ("y", "x"), tile_size, SCHEMA
    )
    attrs = {"run_id": run, "tile_size": tile_size, "classes": SCHEMA.to_dict()}
    staging = create_store(path, template, product="classmap", signature=run, attrs=attrs)
    for tile in tiles:
        arrays = {k: v[tile.ys, tile.xs] for k, v in pixels.items()}
        write_tile(staging, tile, arrays, records[tile.name])
    return publish(path, overwrite=True)


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def record(model: str, run: str) -> dict[str, Any]:
    return {"model": model, "cube": "cube-1", "run_id": run, "eoseg_version": __version__}


def run(workdir: Path, side: int, tile_size: int, fraction: float) -> dict[str, Any]:
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    grid = GeoBox.from_bbox(
        (500000, 5300000, 500000 + side * 10, 5300000 + side * 10), "EPSG:32632", resolution=10
    )
    tiles = list(iter_tiles(grid, tile_size))
    rng = np.random.default_rng(0)
    changed = sorted(rng.choice(len(tiles), round(fraction * len(tiles)), replace=False))
    px1 = landscape(grid.shape.yx, 1)
    new = landscape(grid.shape.yx, 2)
    px2 = {k: v.copy() for k, v in px1.items()}
    rec1 = {t.name: record("m1", "r1") for t in tiles}
    rec2 = dict(rec1)
    for i in changed:
        t = tiles[i]
        for k in px2:
            px2[k][t.ys, t.xs] = new[k][t.ys, t.xs]
        rec2[t.name] = record("m2", "r2")
    map1 = write_map(workdir / "map1.zarr", grid, tiles, px1, rec1, "r1")
    map2 = write_map(workdir / "map2.zarr", grid, tiles, px2, rec2, "r2")
    repo = workdir / "product"
    doc: dict[str, Any] = {
        "megapixels": grid.shape.y * grid.shape.x / 1e6,
        "tiles": len(tiles),
        "tiles_recomputed": len(changed),
        "classmap_store_bytes": du(map1),
    }
    steps = [
        ("v1", lambda: publish_classmap(map1, repo, tag="v1")),
        ("v2", lambda: publish_classmap(map2, repo)),
        ("rollback", lambda: rollback(repo, "v1")),
    ]
    base = 0
    for name, step in steps:
        before = du(repo) if repo.exists() else 0
        start = time.perf_counter()
        result = step()
        seconds = time.perf_counter() - start
        after = du(repo)
        base = base or after
        doc[name] = {
            "seconds": round(seconds, 2),
            "tiles_written": result.tiles_written,
            "repo_bytes": after,
            "added_bytes": after - before,
            "added_vs_v1": round((after - before) / base, 4),
        }
    start = time.perf_counter()
    diff = diff_versions(repo, "1", "2")
    doc["diff"] = {
        "seconds": round(time.perf_counter() - start, 2),
        "changed_tiles": len(diff.changed_tiles),
        "pixel_change_sum": int(diff.pixel_change().sum()),
    }
    return doc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/eoseg-bench-versions"))
    parser.add_argument("--side", type=int, default=5120, help="grid side in px (10 m)")
    parser.add_argument("--tile-size", type=int, default=512)
    parser.add_argument("--fraction", type=float, default=0.1, help="tiles recomputed")
    parser.add_argument("--small", action="store_true", help="2048 px, 256 px tiles")
    args = parser.parse_args()
    side, tile = (2048, 256) if args.small else (args.side, args.tile_size)
    print(json.dumps(run(args.workdir, side, tile, args.fraction), indent=2))


if __name__ == "__main__":
    main()
