"""Compositing the scenes that cover one tile, and writing the tile.

A `TileJob` names a tile and, for each time step of the cube, the scenes that touch it —
only those, so a task's size and memory do not grow with the number of scenes in the run.
`ingest_tile` is the pure per-tile function the cluster runs.

Methods: ``first`` takes, per pixel, the first valid (clear, not nodata) value in source
order — scenes are read only until every pixel is filled; ``median`` takes the per-band
median of all valid values (robust to residual clouds and shadows).

A scene that gives no pixel to the cube is reported with the true reason: outside the
grid, covered by earlier scenes (``first``), or without a valid pixel.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
from odc.geo.geobox import GeoBox

from eoseg.grid import Tile
from eoseg.scene import Scene
from eoseg.store import write_tile
from eoseg.warp import read_scene

log = logging.getLogger(__name__)

Composite = Literal["first", "median"]
COMPOSITES: tuple[Composite, ...] = ("first", "median")
# (values (band, y, x) NaN = invalid, valid (y, x), ids of scenes used, ids covered)
_Result = tuple[np.ndarray, np.ndarray, list[str], list[str]]

OUTSIDE = "outside the grid"
COVERED = (
    "covered by earlier scenes: with --composite first each pixel keeps the first valid "
    "value in source order; give this scene earlier, use --composite median, or --by-date "
    "to keep every date (one time step each)"
)
EMPTY = "no valid pixel on the grid (all nodata or clouded)"


@dataclass(frozen=True, slots=True)
class TileJob:
    """One tile and the scenes touching it, per time step of the cube, and the digest of
    those inputs (`eoseg.input_signature`) its record keeps."""

    tile: Tile
    steps: tuple[tuple[Scene, ...], ...]
    signature: str = ""


def composite_first(scenes: Sequence[Scene], box: GeoBox, n_bands: int) -> _Result:
    """First valid value per pixel, in scene order; stops reading once the tile is full.

    Returns:
        ``(values (band, y, x) NaN = invalid, valid (y, x), ids of scenes used, ids of
        scenes covered)``: a covered scene had valid pixels only where earlier scenes
        had given one, or was not read because they had filled the tile.
    """
    ny, nx = box.shape.y, box.shape.x
    out = np.full((n_bands, ny, nx), np.nan, dtype="float32")
    missing = np.ones((ny, nx), dtype=bool)
    used: list[str] = []
    covered: list[str] = []
    for scene in scenes:
        if not missing.any():
            covered.append(scene.id)
            continue
        values, ok = read_scene(scene, box)
        take = missing & ok
        if take.any():
            out[:, take] = values[:, take]
            missing &= ~take
            used.append(scene.id)
        elif ok.any():
            covered.append(scene.id)
    return out, ~missing, used, covered


def composite_median(scenes: Sequence[Scene], box: GeoBox, n_bands: int) -> _Result:
    """Per-band median of the valid values of all scenes (NaN where none is valid); no
    scene is covered."""
    ny, nx = box.shape.y, box.shape.x
    stack = []
    used = []
    for scene in scenes:
        values, ok = read_scene(scene, box)
        if ok.any():
            values[:, ~ok] = np.nan
            stack.append(values)
            used.append(scene.id)
    if not stack:
        return (
            np.full((n_bands, ny, nx), np.nan, dtype="float32"),
            np.zeros((ny, nx), dtype=bool),
            used,
            [],
        )
    cube = np.stack(stack)
    valid = ~np.isnan(cube).any(axis=1).all(axis=0)
    median = np.full((n_bands, ny, nx), np.nan, dtype="float32")
    # Only pixels with a valid scene: no all-NaN slice, so no warning to silence (and
    # warnings.catch_warnings is not thread-safe on threaded workers).
    median[:, valid] = np.nanmedian(cube[:, :, valid], axis=0)
    return median, valid, used, []


_METHODS = {"first": composite_first, "median": composite_median}


def ingest_tile(
    job: TileJob,
    *,
    grid: GeoBox,
    n_bands: int,
    encode: Any,
    staging: Path | str,
    method: Composite = "first",
) -> dict[str, Any]:
    """Composite every time step of one tile and write it; returns its provenance record.

    Args:
        job: The tile and its scenes per time step.
        grid: The cube's grid.
        n_bands: Bands per scene.
        encode: Callable turning physical float values (NaN = nodata) into stored values.
        staging: The staging store to write into.
        method: ``"first"`` or ``"median"``.
    """
    tile = job.tile
    box = tile.geobox(grid)
    steps = len(job.steps)
    data = np.full((steps, n_bands, tile.height, tile.width), np.nan, dtype="float32")
    valid = np.zeros((steps, tile.height, tile.width), dtype="uint8")
    used: list[list[str]] = []
    covered: set[str] = set()
    # One GDAL environment for the tile's reads: without it every open and reproject
    # enters its own, and with AWS credentials in the environment each builds a boto3
    # session (a fifth of an ingest's time on object storage).
    with rasterio.Env():
        for t, scenes in enumerate(job.steps):
            values, ok, ids, hidden = _METHODS[method](scenes, box, n_bands)
            data[t], valid[t] = values, ok
            used.append(ids)
            covered.update(hidden)
    dates = {s.id: s.datetime for scenes in job.steps for s in scenes}
    record = {
        "scenes": sorted({i for ids in used for i in ids}),
        "scenes_per_step": used,
        "covered": sorted(covered),
        "dates": {i: dates[i] for ids in used for i in ids},
        "valid_fraction": float(valid.mean()),
        "pixels": tile.height * tile.width,
        # What decides a class map's tile to be recomputed (eoseg.regenerate); the key is
        # eoseg.input_signature.INPUT_KEY (not imported: that module imports this one).
        "input_signature": job.signature,
    }
    write_tile(staging, tile, {"data": encode(data), "valid": valid}, record)
    return record


def unused_scenes(
    scenes: Sequence[Scene], records: Sequence[dict[str, Any]], outside: Sequence[Scene]
) -> list[tuple[str, str]]:
    """``(scene id, reason)`` for each scene that gave no pixel to the cube.

    Args:
        scenes: The scenes of the run.
        records: The tiles' provenance records (`ingest_tile`'s return values).
        outside: Scenes touching no tile of the grid.
    """
    used = {i for r in records for i in r["scenes"]}
    covered = {i for r in records for i in r.get("covered", ())}
    far = {s.id for s in outside}
    return [(s.id, OUTSIDE) for s in outside] + [
        (s.id, COVERED if s.id in covered else EMPTY)
        for s in scenes
        if s.id not in used and s.id not in far
    ]
