"""Generated class maps of any size, written tile by tile (for tests and benchmarks of the
products: COG, mosaic), with no cube or model.

Each pixel's class and confidence are a function of its grid position alone, so a tile is
computed on its own and a map of a country's size costs one tile of memory. Classes come
in blocks (patches of 8-40 px whose corners depend on ``seed``), confidence varies
along a ramp with a texture, and a band along the south-east corner is nodata.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from odc.geo.geobox import GeoBox

from eoseg.classes import DEMO_CLASSES, IGNORE_ID, ClassSchema
from eoseg.classmap import create_classmap
from eoseg.grid import Tile, iter_tiles
from eoseg.store import publish, write_tile


def synthetic_tile(
    tile: Tile, n_classes: int, seed: int, shape: tuple[int, int]
) -> dict[str, np.ndarray]:
    """``class`` and ``confidence`` of one tile of a generated map of ``shape`` (y, x)."""
    yy, xx = np.mgrid[tile.ys, tile.xs]
    rows, cols = 8 + seed % 33, 8 + (7 * seed) % 33  # patch sizes, px
    patch = (yy // rows) * 7919 + (xx // cols) * 104729 + seed * 31
    cls = ((patch * 2654435761) % 4294967291 % n_classes).astype("uint8")
    # A ramp with a texture of 0..15 (a smooth field alone would compress unrealistically
    # well); 1..255: every valid pixel has a confidence.
    texture = ((yy * 73856093) ^ (xx * 19349663)) % 16
    conf = (1 + (yy * 3 + xx * 5 + seed + texture) % 255).astype("uint8")
    nodata = (yy + xx) > 1.8 * (shape[0] + shape[1]) / 2  # the south-east corner
    cls[nodata] = IGNORE_ID
    conf[nodata] = 0
    return {"class": cls, "confidence": conf}


def write_synthetic_classmap(
    out: Path,
    grid: GeoBox,
    *,
    tile_size: int = 512,
    classes: ClassSchema = DEMO_CLASSES,
    seed: int = 0,
    attrs: dict[str, str] | None = None,
) -> Path:
    """Write a generated ``(y, x)`` class map on ``grid`` (see the module docs).

    Args:
        out: The class map store to write (replaced when it exists).
        grid: Its grid.
        tile_size: Its tiles.
        classes: Its classes.
        seed: Varies the patches and the confidence.
        attrs: More store attributes (e.g. a ``date``).
    """
    key = f"{grid!r}{tile_size}{classes.to_dict()}{seed}{attrs}"
    signature = hashlib.sha256(key.encode()).hexdigest()[:16]
    doc = {"model_version": f"synthetic-{seed}", "run_id": "", **(attrs or {})}
    staging = create_classmap(out, grid, tile_size, classes, signature=signature, attrs=doc)
    shape = (grid.shape.y, grid.shape.x)
    for tile in iter_tiles(grid, tile_size):
        write_tile(staging, tile, synthetic_tile(tile, len(classes), seed, shape), {})
    return publish(out, overwrite=True)
