"""Regions layers (states, biomes, zones): read them, and put them on a class map's grid.

A regions layer is a vector file with one name field; features sharing a name form one
region. Pixels belong to the region whose polygon holds their centre (as
`rasterio.features.rasterize` burns them), so every pixel is in at most one region and
per-region figures add up to those of the regions' union. The regions raster is built
lazily, tile by tile on the map's chunks, never for the whole grid at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import dask.array
import numpy as np
import rasterio.features
import shapely
from odc.geo.geobox import GeoBox

from eoseg.aoi import read_regions as read_regions_lonlat
from eoseg.aoi import regions_on_grid

log = logging.getLogger(__name__)

OUTSIDE = -1
"""Region index of pixels outside every region."""


@dataclass(frozen=True, slots=True)
class Regions:
    """A regions layer in a map's CRS.

    Attributes:
        names: Region names, in index order (sorted as text).
        geometries: One (multi)polygon per region, in the map's CRS, in index order.
        source: The file read.
        field: The name field.
    """

    names: tuple[str, ...]
    geometries: tuple[shapely.Geometry, ...]
    source: str
    field: str


def read_regions(path: Path, field: str, geobox: GeoBox) -> Regions:
    """Read a regions layer (`eoseg.aoi.read_regions`) and bring it to the grid's CRS.

    Regions that miss the grid are left out.

    Args:
        path: A vector file (GeoPackage, GeoJSON, Shapefile, GeoParquet).
        field: The field naming each feature's region.
        geobox: The grid of the class map the regions divide.

    Raises:
        InputNotFoundError: No file at ``path``.
        UnreadableVectorError: The file cannot be read, lacks ``field``, or has no polygon.
        GeoreferenceError: The file has no CRS.
        NoOverlapError: No region touches the grid.
    """
    shapes = regions_on_grid(read_regions_lonlat(path, field), geobox)
    log.info("read %d regions from %s", len(shapes), path)
    return Regions(
        tuple(s.name for s in shapes), tuple(s.geometry for s in shapes), str(path), field
    )


def regions_raster(
    regions: Regions, geobox: GeoBox, chunks: tuple[tuple[int, ...], ...]
) -> dask.array.Array:
    """The region index (``int32``, `OUTSIDE` elsewhere) of every pixel, lazily.

    Args:
        regions: The regions, in the grid's CRS.
        geobox: The grid.
        chunks: Dask chunks of the raster (the class map's), ``(ys, xs)``.

    Returns:
        A Dask array of ``geobox.shape`` with those chunks.
    """
    ys = np.cumsum((0, *chunks[0]))
    xs = np.cumsum((0, *chunks[1]))
    rows = []
    for i in range(len(chunks[0])):
        row = []
        for j in range(len(chunks[1])):
            tile = geobox[int(ys[i]) : int(ys[i + 1]), int(xs[j]) : int(xs[j + 1])]
            block = dask.delayed(_tile_regions)(regions.geometries, tile)
            row.append(dask.array.from_delayed(block, tile.shape.yx, dtype=np.int32))
        rows.append(row)
    return dask.array.block(rows)


def _tile_regions(geometries: tuple[shapely.Geometry, ...], tile: GeoBox) -> np.ndarray:
    """Region index of each pixel of one tile (pixel centre inside the region)."""
    box = shapely.box(*tile.extent.geom.bounds)
    shapes = [(g, k) for k, g in enumerate(geometries) if g.intersects(box)]
    if not shapes:
        return np.full(tile.shape.yx, OUTSIDE, dtype=np.int32)
    return rasterio.features.rasterize(
        shapes, out_shape=tile.shape.yx, transform=tile.affine, fill=OUTSIDE, dtype="int32"
    )
