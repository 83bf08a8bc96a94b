"""Area tables: km² of each class per region and date, and the files they are written to.

``eoseg query`` answers "km² of each class inside this AOI" for one AOI or for every
region of a regions layer, for one date or every date of a multi-date class map (like a
monthly burned-area table per biome). One pass over the tiles the shapes touch fills the
whole table (`eoseg.stats.shape_sums`). The table is long: one row per region, date and
class, as CSV, Parquet or JSON.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr

from eoseg.aoi import MapShape, aoi_on_grid, read_aoi, read_regions, regions_on_grid
from eoseg.classes import ClassSchema
from eoseg.dates import date_labels
from eoseg.errors import InvalidParameterError
from eoseg.grid import raster_tiles
from eoseg.stats import ClassAreas, areas_of, shape_sums

TABLE_SUFFIXES = (".csv", ".parquet", ".json")


@dataclass(frozen=True, slots=True)
class AreaTable:
    """Class areas per region and date.

    Attributes:
        regions: Region names (``("aoi",)`` for one AOI, ``("all",)`` for the whole map).
        dates: ISO days of the map's dates (``("",)`` for a map without dates).
        areas: ``areas[r][d]``: the class areas of region ``r`` at date ``d``.
        tiles: Map tiles read.
    """

    regions: tuple[str, ...]
    dates: tuple[str, ...]
    areas: tuple[tuple[ClassAreas, ...], ...]
    tiles: int

    def get(self, region: str, date: str = "") -> ClassAreas:
        """The class areas of one region and date."""
        return self.areas[self.regions.index(region)][self.dates.index(date)]

    def to_frame(self) -> pd.DataFrame:
        """One row per region, date and class (and a nodata row, class id 255)."""
        rows = []
        for region, by_date in zip(self.regions, self.areas, strict=True):
            for date, a in zip(self.dates, by_date, strict=True):
                base = {"region": region, "date": date or None}
                for i, (name, km2) in enumerate(zip(a.class_names, a.class_km2, strict=True)):
                    frac = km2 / a.valid_km2 if a.valid_km2 > 0 else None
                    rows.append(
                        {**base, "class_id": i, "class_name": name, "km2": km2, "fraction": frac}
                    )
                rows.append(
                    {
                        **base,
                        "class_id": 255,
                        "class_name": "nodata",
                        "km2": a.nodata_km2,
                        "fraction": None,
                    }
                )
        return pd.DataFrame(rows)

    def to_markdown(self) -> str:
        """A Markdown table: one row per region and date, km² of each class and nodata."""
        names = self.areas[0][0].class_names
        head = ["region", "date", *names, "nodata", "total km²"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for region, row in zip(self.regions, self.areas, strict=True):
            for date, a in zip(self.dates, row, strict=True):
                cells = [f"{v:.4f}" for v in (*a.class_km2, a.nodata_km2, a.total_km2)]
                lines.append("| " + " | ".join([region, date or "-", *cells]) + " |")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: regions, each with its dates, each the `ClassAreas` dict."""
        return {
            "tiles": self.tiles,
            "regions": {
                region: {d or "all": a.to_dict() for d, a in zip(self.dates, row, strict=True)}
                for region, row in zip(self.regions, self.areas, strict=True)
            },
        }


def area_table(
    classmap: xr.DataArray,
    schema: ClassSchema,
    *,
    aoi: str | None = None,
    regions: str | Path | None = None,
    region_field: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> AreaTable:
    """Class areas of every date of a class map inside an AOI, each region, or everywhere.

    Args:
        classmap: ``(y, x)`` or ``(time, y, x)`` class ids, georeferenced.
        schema: The classes of the map.
        aoi: A GeoJSON/GeoPackage path or ``minx,miny,maxx,maxy`` in EPSG:4326.
        regions: A regions layer (vector file); exclusive with ``aoi``.
        region_field: The attribute naming the regions (required with ``regions``).
        progress: Called with ``(tiles done, tiles to read)``.

    Raises:
        InvalidParameterError: Both ``aoi`` and ``regions``, or regions without a field.
        NoOverlapError: The AOI or every region misses the map.
    """
    if aoi is not None and regions is not None:
        raise InvalidParameterError(
            "give either --aoi or --regions, not both: one AOI, or a table of regions"
        )
    if regions is not None and not region_field:
        raise InvalidParameterError(
            "--regions needs --region-field, the attribute that names each region"
        )
    dated = "time" in classmap.dims
    geobox, _, _ = raster_tiles(classmap.isel(time=0) if dated else classmap)
    shapes: list[MapShape] | None = None
    if aoi is not None:
        shapes = [aoi_on_grid(read_aoi(aoi), geobox)]
    elif regions is not None:
        shapes = regions_on_grid(read_regions(regions, str(region_field)), geobox)
    sums, tiles = shape_sums(classmap, schema, shapes, progress)
    names = ("all",) if shapes is None else tuple(s.name for s in shapes)
    km2s = [None] * len(names) if shapes is None else [s.km2 for s in shapes]
    return AreaTable(
        regions=names,
        dates=date_labels(classmap) or ("",),
        areas=tuple(
            tuple(
                areas_of(sums[r, d], schema, tiles=tiles, aoi_km2=km2s[r])
                for d in range(sums.shape[1])
            )
            for r in range(len(names))
        ),
        tiles=tiles,
    )


def write_table(table: AreaTable, path: str | os.PathLike[str]) -> Path:
    """Write an area table as CSV, Parquet or JSON (by suffix), atomically.

    Raises:
        InvalidParameterError: Another suffix.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise InvalidParameterError(
            f"area table {str(path)!r}: expected a {', '.join(TABLE_SUFFIXES)} file, found "
            f"{suffix or 'no suffix'}: change --out"
        )
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        if suffix == ".json":
            tmp.write_text(json.dumps(table.to_dict(), indent=2))
        elif suffix == ".csv":
            table.to_frame().to_csv(tmp, index=False, float_format="%.6f")
        else:
            table.to_frame().to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
