"""Planning an ingest: the cube's grid and encoding, its time steps, which scenes each tile reads.

Pure functions of the scenes' metadata (no pixel is read): `eoseg.cube.ingest` calls them
before it creates the store, so a bad combination of scenes fails before any work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from odc.geo.geobox import GeoBox

from eoseg.catalog import Scene
from eoseg.composite import TileJob
from eoseg.errors import BandMismatchError, InvalidParameterError
from eoseg.grid import Tile, crs_of, make_grid, parse_crs
from eoseg.sensors import same_band


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
    """The grid of a cube: the first scene's CRS and pixel grid unless given.

    Without ``resolution``, a grid in the first scene's CRS keeps that scene's pixels
    exactly (their corner and x and y sizes, non-square ones too), so a single scene
    ingests without resampling and lines up with other rasters on its grid (labels);
    the grid extends over the other scenes by whole such pixels. A ``resolution``, or
    another CRS, gives square pixels of that size (default: the first scene's x size).
    """
    first = scenes[0]
    grid_crs = parse_crs(crs) if crs else first.crs
    if crs and not resolution and grid_crs.units != first.crs.units:
        raise InvalidParameterError(
            f"--crs {crs} has units {grid_crs.units} but the sources are in "
            f"{first.crs.units}: give --resolution in the grid's units"
        )
    same_crs = grid_crs == first.crs
    res: float | tuple[float, float] = float(resolution or first.resolution)
    t = first.transform
    if not resolution and same_crs and t is not None and t.b == t.d == 0 and t.a > 0 > t.e:
        res = (t.a, -t.e)  # north-up: the scene's own pixel sizes
    origin = (first.bounds[0], first.bounds[3]) if same_crs else (0.0, 0.0)
    return make_grid([s.footprint for s in scenes], grid_crs, res, bbox, origin)


def plan_jobs(
    scenes: Sequence[Scene],
    steps: Sequence[tuple[str, Sequence[Scene]]],
    grid: GeoBox,
    tiles: Sequence[Tile],
) -> tuple[list[TileJob], list[Scene]]:
    """Which scenes touch which tile, per time step; and the scenes touching no tile.

    Footprints go through a spatial index once, so planning costs O(scenes + tiles).
    """
    grid_crs = crs_of(grid)
    index = shapely.STRtree([s.footprint.to_crs(grid_crs).geom for s in scenes])
    position = {s.id: i for i, s in enumerate(scenes)}
    touching = {
        t.name: {int(h) for h in index.query(t.geobox(grid).extent.geom, predicate="intersects")}
        for t in tiles
    }
    jobs = [
        TileJob(
            tile,
            tuple(
                tuple(s for s in members if position[s.id] in touching[tile.name])
                for _, members in steps
            ),
        )
        for tile in tiles
    ]
    hit = set().union(*touching.values())
    return jobs, [s for i, s in enumerate(scenes) if i not in hit]


def time_steps(scenes: Sequence[Scene], by_date: bool) -> list[tuple[str, list[Scene]]]:
    """``(date, scenes)`` per time step: one composite (first date), or one per date."""
    if not by_date:
        dates = sorted(s.datetime[:10] for s in scenes if s.datetime)
        return [(dates[0] if dates else "", list(scenes))]
    undated = [s for s in scenes if not s.datetime]
    if undated:
        why = "; ".join(f"{s.id}: {s.datetime_source or 'none'}" for s in undated[:3])
        raise InvalidParameterError(
            f"--by-date needs acquisition dates; {len(undated)} scene(s) have none ({why}): "
            "expected an acquisition tag (ACQUISITION_TIME, DATE_ACQUIRED, SENSING_TIME) or "
            "a date in the file name (x_20240612.tif); rename the files, tag them "
            "('gdal_edit.py -mo ACQUISITION_TIME=2024-06-12 x.tif'), give STAC items with "
            "datetime, or ingest one composite without --by-date"
        )
    steps: dict[str, list[Scene]] = {}
    for s in scenes:
        steps.setdefault(str(s.datetime)[:10], []).append(s)
    return sorted(steps.items())


def check_bands(scenes: Sequence[Scene]) -> tuple[str, ...]:
    """The bands of the scenes, the same in each.

    Raises:
        BandMismatchError: Scenes with other bands, or sensors numbering bands differently.
    """
    first = scenes[0]
    bands = first.band_names
    for s in scenes[1:]:
        if s.band_names != bands:
            raise BandMismatchError(
                f"scene {s.id} has bands {s.band_names}; scene {first.id} has {bands}: "
                "a cube needs the same bands from every scene — ingest them separately or "
                "select matching scenes"
            )
        odd = [b for b in bands if not same_band(first.sensor, s.sensor, b)]
        if odd:
            raise BandMismatchError(
                f"band {odd[0]} of scene {s.id} ({s.sensor}) is another band than {odd[0]} "
                f"of scene {first.id} ({first.sensor}): the sensors number their bands "
                "differently; ingest each sensor into its own cube (--sensor)"
            )
    return bands
