"""What changed between two versions of a product: tiles, and per-class pixels and areas.

Tiles whose pixel digests (`eoseg.version_publish.DIGEST_KEY`) are equal in both versions
are not read; the others are read from both snapshots and counted class against class.
Areas are on the ellipsoid (`eoseg.stats.pixel_areas`), whatever the grid's CRS. Over a
fixed grid every pixel is counted once on each side, so the changes of all classes plus
nodata sum to zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from odc.geo.geobox import GeoBox

from eoseg.classes import IGNORE_ID, ClassSchema
from eoseg.dates import DateChoice, select_date
from eoseg.errors import InvalidParameterError
from eoseg.grid import Tile, grid_of, iter_tiles
from eoseg.stats import pixel_areas
from eoseg.version_tiles import DIGEST_KEY
from eoseg.versions import open_repository, read_dataset, resolve_version, tile_records

_CODES = 256
"""uint8 class ids (255 = nodata)."""


@dataclass(frozen=True, slots=True)
class VersionDiff:
    """Per-class changes from version ``before`` to version ``after``.

    Attributes:
        before: Snapshot id of the earlier version.
        after: Snapshot id of the later version.
        tiles: Tiles of the map.
        changed_tiles: Names of the tiles whose pixels differ.
        class_names: Names by class id, then ``"nodata"``.
        pixels: ``(len(class_names), len(class_names))`` pixel counts over the changed
            tiles, row = class before, column = class after (nodata last).
        km2: The same in km² on the ellipsoid.
    """

    before: str
    after: str
    tiles: int
    changed_tiles: tuple[str, ...]
    class_names: tuple[str, ...]
    pixels: np.ndarray
    km2: np.ndarray

    def pixel_change(self) -> np.ndarray:
        """Pixels gained minus pixels lost, per class (sums to zero)."""
        return self.pixels.sum(axis=0) - self.pixels.sum(axis=1)

    def km2_change(self) -> np.ndarray:
        """km² gained minus km² lost, per class (sums to zero, up to rounding)."""
        return self.km2.sum(axis=0) - self.km2.sum(axis=1)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: one row per class and the transitions between classes."""
        gained, lost = self.pixels.sum(axis=0), self.pixels.sum(axis=1)
        rows = [
            {
                "class": name,
                "pixels_before": int(lost[i]),
                "pixels_after": int(gained[i]),
                "pixels_change": int(gained[i] - lost[i]),
                "km2_change": float(self.km2[:, i].sum() - self.km2[i, :].sum()),
            }
            for i, name in enumerate(self.class_names)
        ]
        moves = [
            {
                "from": self.class_names[i],
                "to": self.class_names[j],
                "pixels": int(self.pixels[i, j]),
                "km2": float(self.km2[i, j]),
            }
            for i, j in zip(*np.nonzero(self.pixels), strict=True)
            if i != j
        ]
        return {
            "before": self.before,
            "after": self.after,
            "tiles": self.tiles,
            "changed_tiles": list(self.changed_tiles),
            "classes": rows,
            "transitions": moves,
        }


def diff_versions(
    location: str | Path, before: str, after: str = "latest", *, date: DateChoice = None
) -> VersionDiff:
    """Compare two versions of a product (ids, tags, numbers or ``latest``).

    Args:
        location: The product repository.
        before: The earlier version.
        after: The later version.
        date: For a per-date class map, the date to compare (see `eoseg.dates.select_date`).

    Raises:
        InvalidParameterError: No such version, versions on different grids, or a
            multi-date map without ``date``.
    """
    repo = open_repository(location)
    ids = resolve_version(repo, before, "BEFORE"), resolve_version(repo, after, "AFTER")
    sessions = [repo.readonly_session(snapshot_id=i) for i in ids]
    a, b = (read_dataset(s) for s in sessions)
    grid = _same_grid(a, b, ids)
    recs_a, recs_b = (tile_records(s) for s in sessions)
    tiles = list(iter_tiles(grid, int(b.attrs["tile_size"])))
    changed = [t for t in tiles if _digest(recs_a, t) != _digest(recs_b, t)]
    purpose = "the versions are compared on one date"
    class_a = select_date(a, date, purpose=purpose)["class"]
    class_b = select_date(b, date, purpose=purpose)["class"]
    pixels = np.zeros(_CODES * _CODES, dtype=np.int64)
    km2 = np.zeros(_CODES * _CODES, dtype=np.float64)
    for tile in changed:
        codes = _codes(class_a, class_b, tile)
        pixels += np.bincount(codes, minlength=_CODES * _CODES)
        area = pixel_areas(tile.geobox(grid)).ravel() / 1e6
        km2 += np.bincount(codes, weights=area, minlength=_CODES * _CODES)
    names = ClassSchema.from_dict(b.attrs["classes"]).names
    keep = [*range(len(names)), IGNORE_ID]
    return VersionDiff(
        before=ids[0],
        after=ids[1],
        tiles=len(tiles),
        changed_tiles=tuple(t.name for t in changed),
        class_names=(*names, "nodata"),
        pixels=pixels.reshape(_CODES, _CODES)[np.ix_(keep, keep)],
        km2=km2.reshape(_CODES, _CODES)[np.ix_(keep, keep)],
    )


def _same_grid(a: xr.Dataset, b: xr.Dataset, ids: tuple[str, str]) -> GeoBox:
    grid_a, grid_b = grid_of(a, f"version {ids[0]}"), grid_of(b, f"version {ids[1]}")
    if grid_a != grid_b or a.attrs.get("tile_size") != b.attrs.get("tile_size"):
        raise InvalidParameterError(
            f"versions {ids[0]} and {ids[1]} lie on different grids or tilings ({grid_a} "
            f"vs {grid_b}): a diff compares versions of one grid; compare their area "
            "statistics instead (eoseg query)"
        )
    return grid_b


def _digest(records: dict[str, dict[str, Any]], tile: Tile) -> str | None:
    return records.get(tile.name, {}).get(DIGEST_KEY)


def _codes(before: xr.DataArray, after: xr.DataArray, tile: Tile) -> np.ndarray:
    """``before * 256 + after`` for every pixel of a tile, flat."""
    window = {"y": tile.ys, "x": tile.xs}
    old = np.asarray(before.isel(window).values, dtype=np.int64).ravel()
    new = np.asarray(after.isel(window).values, dtype=np.int64).ravel()
    return old * _CODES + new
