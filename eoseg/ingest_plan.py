"""Planning an ingest: the cube's grid and encoding, its time steps, which scenes each tile reads.

Pure functions of the scenes' metadata (no pixel is read): `eoseg.cube.ingest` calls them
before it creates the store, so a bad combination of scenes fails before any work.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyproj
import shapely
from odc.geo import CRS
from odc.geo.geobox import GeoBox

from eoseg.catalog import Scene
from eoseg.composite import TileJob
from eoseg.errors import BandMismatchError, GeoreferenceError, InvalidParameterError
from eoseg.grid import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_TILE_SIZE,
    Tile,
    crs_name,
    crs_of,
    describe_lonlat,
    lonlat_bounds,
    make_grid,
    parse_crs,
    unit_symbol,
)
from eoseg.sensors import same_band

MAX_TILES = 1_000_000
"""Most tiles an ingest schedules: each is a task and a provenance record."""

MAX_CRS_REACH_DEG = 20.0
"""How far (degrees) scenes may reach beyond the area of use of the grid's CRS. Countries
stretch a UTM zone by a zone or two (Norway maps 4-31°E in zone 33N, 13° beyond it); 20°
beyond a zone the scale error passes 8%, and a CRS so far from the data is most likely a
typo (EPSG:32610 for 32632)."""


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
    *,
    tile_size: int = DEFAULT_TILE_SIZE,
    max_pixels: float = DEFAULT_MAX_PIXELS,
    allow_distant_crs: bool = False,
) -> GeoBox:
    """The grid of a cube: the first scene's CRS and pixel grid unless given.

    Without ``resolution``, a grid in the first scene's CRS keeps that scene's pixels
    exactly (their corner and x and y sizes, non-square ones too), so a single scene
    ingests without resampling and lines up with other rasters on its grid (labels);
    the grid extends over the other scenes by whole such pixels. A ``resolution``, or
    another CRS, gives square pixels of that size (default: the first scene's x size).

    The grid is only described here (no tile listed, no pixel read), and refused when it
    is too large (`check_grid_size`) or its CRS is meant for an area far from the scenes
    (`check_crs_reach`, unless ``allow_distant_crs``).

    Raises:
        InvalidParameterError: The grid has more than ``max_pixels`` pixels, or more
            tiles than `MAX_TILES`.
        GeoreferenceError: A scene lies far outside the area of use of the grid's CRS.
    """
    first = scenes[0]
    grid_crs = parse_crs(crs) if crs else first.crs
    if crs and not resolution and grid_crs.units != first.crs.units:
        raise InvalidParameterError(
            f"--crs {crs} has units {grid_crs.units} but the sources are in "
            f"{first.crs.units}: give --resolution in the grid's units"
        )
    if not allow_distant_crs:
        check_crs_reach(grid_crs, scenes, given=crs is not None)
    same_crs = grid_crs == first.crs
    res: float | tuple[float, float] = float(resolution or first.resolution)
    t = first.transform
    if not resolution and same_crs and t is not None and t.b == t.d == 0 and t.a > 0 > t.e:
        res = (t.a, -t.e)  # north-up: the scene's own pixel sizes
    origin = (first.bounds[0], first.bounds[3]) if same_crs else (0.0, 0.0)
    grid = make_grid([s.footprint for s in scenes], grid_crs, res, bbox, origin)
    check_grid_size(grid, tile_size, max_pixels, scenes, resolution)
    return grid


def check_grid_size(
    grid: GeoBox,
    tile_size: int,
    max_pixels: float,
    scenes: Sequence[Scene],
    resolution: float | None,
) -> None:
    """Refuse a grid larger than ``max_pixels``, or cut into more than `MAX_TILES` tiles,
    naming its size and the likely cause (a fine --resolution, scenes far apart).

    Raises:
        InvalidParameterError: The grid is too large.
    """
    ny, nx = grid.shape.y, grid.shape.x
    pixels = ny * nx
    if pixels > max_pixels:
        raise InvalidParameterError(
            f"the grid would be {ny:,} x {nx:,} px ({_count(pixels)} px), more than "
            f"--max-pixels {_count(max_pixels)}: {_size_cause(grid, scenes, resolution)}. "
            "Give a coarser --resolution, clip with --bbox or leave out far-away scenes; if "
            "a grid this large is intended, raise --max-pixels"
        )
    tiles = math.ceil(ny / tile_size) * math.ceil(nx / tile_size)
    if tiles > MAX_TILES:
        raise InvalidParameterError(
            f"--tile-size {tile_size} cuts the {ny:,} x {nx:,} px grid into {tiles:,} tiles, "
            f"more than the {MAX_TILES:,} a run can schedule: raise --tile-size (default "
            f"{DEFAULT_TILE_SIZE})"
        )


def _count(n: float) -> str:
    """A pixel count as people write it: ``24,000`` or ``2.4e12``."""
    return f"{n:,.0f}" if n < 1e6 else f"{n:.2g}".replace("e+", "e")


def _size_cause(grid: GeoBox, scenes: Sequence[Scene], resolution: float | None) -> str:
    first = scenes[0]
    grid_crs = crs_of(grid)
    span = describe_lonlat(lonlat_bounds(grid.extent), digits=2)
    units = unit_symbol(grid_crs)
    res = abs(grid.resolution.x)
    causes = [f"it spans {span} at {res:g}{'' if units == '°' else ' '}{units} pixels"]
    if resolution is not None and grid_crs.units == first.crs.units:
        finer = first.resolution / resolution
        if finer >= 2:
            causes.append(
                f"--resolution {resolution:g} is {finer:,.0f} times finer than the pixels of "
                f"scene {first.id} ({first.resolution:g} {units})"
            )
    crss = sorted({crs_name(s.crs) for s in scenes})
    if len(crss) > 1:
        causes.append(f"the scenes are in {len(crss)} CRSs ({', '.join(crss[:4])}) far apart")
    return "; ".join(causes)


def check_crs_reach(grid_crs: CRS, scenes: Sequence[Scene], *, given: bool) -> None:
    """Refuse a grid CRS meant for an area far from a scene (e.g. a UTM zone 100° away).

    Raises:
        GeoreferenceError: A scene reaches more than `MAX_CRS_REACH_DEG` beyond the area
            of use of ``grid_crs`` (CRSs without a declared area of use pass).
    """
    # A CRS read from a file's WKT1 lacks its area of use; its EPSG entry has it.
    area = (pyproj.CRS.from_epsg(grid_crs.epsg) if grid_crs.epsg else grid_crs.proj).area_of_use
    if area is None:
        return
    reach = [(_degrees_beyond(lonlat_bounds(s.footprint), area.bounds), s) for s in scenes]
    beyond, scene = max(reach, key=lambda r: r[0])
    if beyond <= MAX_CRS_REACH_DEG:
        return
    where = lonlat_bounds(scene.footprint)
    whose = "--crs" if given else "the first scene's CRS"
    fix = (
        "give a CRS of the scenes' area with --crs"
        if given
        else "ingest far-apart scenes into separate cubes, or give a CRS covering all with --crs"
    )
    raise GeoreferenceError(
        f"scene {scene.id} ({describe_lonlat(where, 2)}) lies {beyond:.0f}° beyond the area "
        f"{whose} {crs_name(grid_crs)} is meant for ({describe_lonlat(area.bounds, 2)}), where its "
        f"grid would be badly distorted: {fix} (its UTM zone is {_utm_zone(where)}), or "
        "pass --allow-distant-crs if this CRS is intended"
    )


def _degrees_beyond(
    data: tuple[float, float, float, float], area: tuple[float, float, float, float]
) -> float:
    """How many degrees lon/lat bounds reach outside an area of use (0 inside)."""
    w, s, e, n = data
    aw, a_s, ae, an = area
    if ae < aw:  # an area across the antimeridian
        ae += 360.0
    shift = 360.0 * round(((w + e) / 2 - (aw + ae) / 2) / 360.0)  # compare on one side
    return max(aw - (w - shift), (e - shift) - ae, a_s - s, n - an, 0.0)


def _utm_zone(bounds: tuple[float, float, float, float]) -> str:
    lon, lat = (bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2
    zone = min(60, max(1, int((lon + 180.0) // 6.0) + 1))
    return f"EPSG:{(32600 if lat >= 0 else 32700) + zone}"


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
