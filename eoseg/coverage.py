"""How much of each pixel of a tile a polygon covers: exact fractions from exactextract.

A pixel on the border of an area of interest counts with the fraction of its area inside
it, not all or nothing by its centre, so class areas inside an AOI add up to the AOI's
own area (to ~1e-6 on a smooth border, against ~1e-3 for centre-in counting on 10 m
pixels of a 1 km square). exactextract computes the fractions in the map's CRS; within
one pixel the map's scale is constant to ~1e-7, so a fraction of the pixel's planar area
is the same fraction of its area on the ellipsoid (`eoseg.stats.pixel_areas`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import shapely
from exactextract import exact_extract
from exactextract.raster import NumPyRasterSource
from odc.geo.geobox import GeoBox

from eoseg.aoi import grid_crs
from eoseg.errors import GeoreferenceError


@dataclass(frozen=True, slots=True)
class Cover:
    """The pixels of a tile a polygon touches, and the covered fraction of each.

    Attributes:
        index: Flat (row-major) indices of the touched pixels in the tile.
        fraction: Covered fraction of each, in (0, 1].
    """

    index: np.ndarray
    fraction: np.ndarray


def tile_covers(tile: GeoBox, shapes: list[shapely.Geometry]) -> list[Cover]:
    """The cover of each polygon (in the tile's CRS) over one tile.

    Polygons are clipped to the tile first, so a national region costs what its part
    in the tile costs.

    Raises:
        GeoreferenceError: The tile's grid is rotated or south-up (exactextract reads
            north-up grids only).
    """
    a = tile.affine
    if a.b != 0 or a.d != 0 or a.e >= 0 or a.a <= 0:
        raise GeoreferenceError(
            f"areas inside an AOI need a north-up grid without rotation; found {tuple(a)[:6]}: "
            "warp the class map onto a north-up grid first"
        )
    left, bottom, right, top = tile.extent.geom.bounds
    # Snapped to a millionth of a pixel: a border that reprojection moved by 1e-7 m off
    # a tile edge leaves a sliver that exactextract would count as whole pixels.
    grid_size = 1e-6 * min(a.a, -a.e)
    clipped = [
        shapely.set_precision(shapely.clip_by_rect(s, left, bottom, right, top), grid_size)
        for s in shapes
    ]
    covers = [Cover(np.empty(0, np.int64), np.empty(0, np.float64)) for _ in shapes]
    keep = [i for i, g in enumerate(clipped) if not g.is_empty and g.area > 0]
    if not keep:
        return covers
    ny, nx = tile.shape
    raster = NumPyRasterSource(
        np.zeros((ny, nx), np.uint8), left, bottom, right, top, srs_wkt=grid_crs(tile).to_wkt()
    )
    features = gpd.GeoDataFrame(geometry=[clipped[i] for i in keep], crs=grid_crs(tile).to_wkt())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exactextract warns on CRS spellings it compares
        table = exact_extract(raster, features, ["cell_id", "coverage"], output="pandas")
    for i, (cells, frac) in zip(
        keep, zip(table["cell_id"], table["coverage"], strict=True), strict=True
    ):
        covers[i] = Cover(np.asarray(cells, np.int64), np.asarray(frac, np.float64))
    return covers
