"""The grid of a run and its tiles.

A grid is an `odc.geo.geobox.GeoBox` (CRS, resolution, extent); a tile is one chunk of it,
the unit of parallel work, resumability and provenance. Tiles are aligned to the store's
chunks, so writing one tile never touches another tile's chunk.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import dask.array
import numpy as np
import xarray as xr
from affine import Affine
from odc.geo import CRS
from odc.geo.geobox import GeoBox
from odc.geo.geom import BoundingBox, Geometry
from odc.geo.xr import xr_coords

from eoseg.errors import GeoreferenceError, InvalidParameterError, NoOverlapError

DEFAULT_TILE_SIZE = 2048

DEFAULT_MAX_PIXELS = 10**10
"""Largest grid (pixels) an ingest plans unless told more (``--max-pixels``): a country
of 1,000 km x 1,000 km at 10 m. A continent needs more, given explicitly; an absurd grid
(a --resolution of 0.001, scenes on two continents) is refused before any work."""


@dataclass(frozen=True, slots=True)
class Tile:
    """One chunk-aligned window of a grid.

    Attributes:
        row: Tile row index (north to south).
        col: Tile column index (west to east).
        y0: First pixel row of the tile in the grid.
        x0: First pixel column of the tile in the grid.
        height: Rows in the tile (the last row of tiles may be shorter).
        width: Columns in the tile.
    """

    row: int
    col: int
    y0: int
    x0: int
    height: int
    width: int

    @property
    def name(self) -> str:
        """Stable name used for provenance files and logs, e.g. ``"r0003_c0012"``."""
        return f"r{self.row:04d}_c{self.col:04d}"

    @property
    def ys(self) -> slice:
        """Row slice of the tile in the grid."""
        return slice(self.y0, self.y0 + self.height)

    @property
    def xs(self) -> slice:
        """Column slice of the tile in the grid."""
        return slice(self.x0, self.x0 + self.width)

    def geobox(self, grid: GeoBox) -> GeoBox:
        """The tile's own GeoBox within ``grid``."""
        return grid[self.ys, self.xs]


def parse_crs(value: str | int | CRS) -> CRS:
    """Parse a user CRS (``"EPSG:32632"``, ``32632``, WKT, PROJ string).

    Raises:
        GeoreferenceError: The value is not a CRS PROJ understands.
    """
    if isinstance(value, CRS):
        return value
    text = str(value).strip()
    if text.isdigit():
        text = f"EPSG:{text}"
    try:
        return CRS(text)
    except Exception as exc:  # pyproj raises several types for unparsable input
        raise GeoreferenceError(
            f"could not parse CRS {value!r} ({exc}): give an EPSG code like 'EPSG:32632', "
            "a WKT string or a PROJ string"
        ) from exc


def parse_bbox(text: str, flag: str = "--bbox") -> tuple[float, float, float, float]:
    """Parse a lon/lat box ``"minx,miny,maxx,maxy"`` (EPSG:4326 degrees) into four floats.

    Args:
        text: The box as the user wrote it.
        flag: The option it came from, named in errors.

    Raises:
        InvalidParameterError: Not four finite numbers, min >= max, or outside lon/lat ranges.
    """
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise InvalidParameterError(
            f"{flag} expects a box 'minx,miny,maxx,maxy' of four numbers; found {text!r}"
        )
    minx, miny, maxx, maxy = values
    if not (minx < maxx and miny < maxy):
        raise InvalidParameterError(
            f"{flag} {text!r} is an empty box: it needs minx < maxx and miny < maxy"
        )
    if not (-180 <= minx < maxx <= 180 and -90 <= miny < maxy <= 90):
        raise InvalidParameterError(
            f"{flag} {text!r} needs -180 <= minx < maxx <= 180 and -90 <= miny < maxy "
            "<= 90 (EPSG:4326 degrees, lon before lat)"
        )
    return minx, miny, maxx, maxy


def make_grid(
    footprints: Sequence[Geometry],
    crs: CRS,
    resolution: float | tuple[float, float],
    bbox: tuple[float, float, float, float] | None = None,
    origin: tuple[float, float] = (0.0, 0.0),
) -> GeoBox:
    """Build the north-up grid covering the union of footprints, snapped to its pixels.

    Args:
        footprints: Scene footprints in any CRS.
        crs: CRS of the grid.
        resolution: Pixel size in CRS units: one number for square pixels, or the
            ``(x, y)`` sizes of non-square ones (both positive).
        bbox: Optional ``minx,miny,maxx,maxy`` in EPSG:4326 that the grid is clipped to.
        origin: The top-left corner of a pixel of the grid (the first scene's corner keeps
            its pixels intact): edges are snapped outward to ``origin + k * size``.

    Raises:
        NoOverlapError: The bbox misses every footprint.
        InvalidParameterError: Non-positive resolution.
    """
    sx, sy = resolution if isinstance(resolution, tuple) else (resolution, resolution)
    if not (sx > 0 and sy > 0):
        raise InvalidParameterError(f"resolution must be positive; found {resolution}")
    if not footprints:
        raise GeoreferenceError("no scene footprints to build a grid from: give at least one")
    union = footprints[0].to_crs(crs)
    for fp in footprints[1:]:
        union = union.union(fp.to_crs(crs))
    if bbox is not None:
        box = BoundingBox(*bbox, crs="EPSG:4326").polygon.to_crs(crs)
        clipped = union.intersection(box)
        if clipped.is_empty or clipped.area == 0:
            raise NoOverlapError(
                f"--bbox {bbox} (EPSG:4326) does not overlap the sources, which cover "
                f"{_lonlat_bounds(union)}: choose a box inside the sources' extent"
            )
        union = clipped
    minx, miny, maxx, maxy = union.boundingbox
    if not all(math.isfinite(v) for v in (minx, miny, maxx, maxy)):
        raise GeoreferenceError(
            f"the sources do not project into {crs} (their bounds there are "
            f"{(minx, miny, maxx, maxy)}): they lie outside where that CRS is defined; "
            "choose a CRS for the sources' area with --crs"
        )
    ox, oy = origin
    # Snap outward to whole pixels counted from the origin (columns east, rows south);
    # the epsilon absorbs float noise from reprojection. Counting in pixels keeps the
    # origin's own corner exact: a single scene's grid is its pixel grid, bit for bit.
    eps = 1e-6
    col0 = math.floor((minx - ox) / sx + eps)
    col1 = math.ceil((maxx - ox) / sx - eps)
    row0 = math.floor((oy - maxy) / sy + eps)
    row1 = math.ceil((oy - miny) / sy - eps)
    affine = Affine(sx, 0.0, ox + col0 * sx, 0.0, -sy, oy - row0 * sy)
    return GeoBox((row1 - row0, col1 - col0), affine, crs)


def _lonlat_bounds(geom: Geometry) -> str:
    return describe_lonlat(lonlat_bounds(geom))


def lonlat_bounds(geom: Geometry) -> tuple[float, float, float, float]:
    """``(west, south, east, north)`` of a geometry in degrees (EPSG:4326)."""
    b = geom.to_crs("EPSG:4326").boundingbox
    return b.left, b.bottom, b.right, b.top


def describe_lonlat(bounds: tuple[float, float, float, float], digits: int = 4) -> str:
    """Degree bounds as people read them: ``"lon 11.9822..12.0189, lat 47.9925..48.0075"``."""
    w, s, e, n = bounds
    return f"lon {w:.{digits}f}..{e:.{digits}f}, lat {s:.{digits}f}..{n:.{digits}f}"


def iter_tiles(grid: GeoBox, tile_size: int) -> Iterator[Tile]:
    """Yield the tiles of a grid in row-major order.

    Raises:
        InvalidParameterError: ``tile_size`` is not positive.
    """
    if tile_size <= 0:
        raise InvalidParameterError(f"tile size must be positive; found {tile_size}")
    height, width = grid.shape.y, grid.shape.x
    for row, y0 in enumerate(range(0, height, tile_size)):
        for col, x0 in enumerate(range(0, width, tile_size)):
            yield Tile(row, col, y0, x0, min(tile_size, height - y0), min(tile_size, width - x0))


def crs_of(grid: GeoBox) -> CRS:
    """The CRS of a grid.

    Raises:
        GeoreferenceError: The grid has none (a store written without georeferencing).
    """
    if grid.crs is None:
        raise GeoreferenceError(
            "the grid has no CRS: expected a georeferenced store (spatial_ref); re-create it"
        )
    return grid.crs


def grid_coords(grid: GeoBox) -> dict[str, xr.DataArray]:
    """Coordinates of a grid for a store: ``y`` and ``x`` pixel centres and ``spatial_ref``.

    One dimension name per axis whatever the CRS: odc-geo names geographic axes
    ``latitude``/``longitude``, and a store whose variables use ``(y, x)`` beside such
    coordinates is not georeferenced for rioxarray (it then sees pixel indices). The
    coordinates keep their CF attributes (units, ``standard_name`` on geographic grids).
    """
    coords = xr_coords(grid, crs_coord_name="spatial_ref")
    names = {"latitude": "y", "longitude": "x"}
    out: dict[str, xr.DataArray] = {}
    for name, coord in coords.items():
        new = names.get(str(name), str(name))
        if new != name:
            coord = coord.rename({name: new})
            coord.attrs["standard_name"] = str(name)
        out[new] = coord
    return out


def raster_tiles(
    raster: xr.DataArray,
) -> tuple[GeoBox, dask.array.Array, list[tuple[slice, slice]]]:
    """A georeferenced ``(y, x)`` raster as its grid, its Dask blocks and their slices.

    A numpy-backed raster becomes one block. Slices are in C order, the order of
    ``data.to_delayed().ravel()``.

    Raises:
        GeoreferenceError: The raster has no CRS/transform.
    """
    import odc.geo.xr  # noqa: F401  (registers the .odc accessor)

    geobox = raster.odc.geobox
    if geobox is None:
        raise GeoreferenceError(
            "raster has no CRS/transform: open it with decode_coords='all' "
            "or give it rioxarray-style x/y coordinates and a spatial_ref"
        )
    data = raster.data
    if not isinstance(data, dask.array.Array):
        data = dask.array.from_array(np.asarray(data), chunks=-1)
    ys = np.cumsum((0, *data.chunks[0]))
    xs = np.cumsum((0, *data.chunks[1]))
    slices = [
        (slice(int(ys[i]), int(ys[i + 1])), slice(int(xs[j]), int(xs[j + 1])))
        for i in range(len(data.chunks[0]))
        for j in range(len(data.chunks[1]))
    ]
    return geobox, data, slices


def describe_grid(grid: GeoBox) -> dict[str, object]:
    """A JSON-friendly summary of a grid (CRS, resolution, shape, bounds).

    The resolution is one number for square pixels, ``[x, y]`` sizes for non-square ones.
    """
    b = grid.boundingbox
    crs = crs_of(grid)
    sx, sy = abs(grid.resolution.x), abs(grid.resolution.y)
    return {
        "crs": f"EPSG:{crs.epsg}" if crs.epsg else crs.to_wkt(),
        "resolution": sx if sx == sy else [sx, sy],
        "shape": [grid.shape.y, grid.shape.x],
        "bounds": [b.left, b.bottom, b.right, b.top],
    }


def grid_of(raster: xr.DataArray | xr.Dataset, what: str) -> GeoBox:
    """The grid of a georeferenced raster read from a store.

    Raises:
        GeoreferenceError: ``raster`` has no CRS/transform (``what`` names it).
    """
    import odc.geo.xr  # noqa: F401  (registers the .odc accessor)

    geobox = raster.odc.geobox
    if not isinstance(geobox, GeoBox) or geobox.crs is None:
        raise GeoreferenceError(
            f"{what} has no CRS/transform: expected a georeferenced eoseg store; re-create it"
        )
    return geobox


def check_same_grid(expected: GeoBox, found: GeoBox, *, what: str, on: str, fix: str) -> None:
    """Refuse two rasters that must share one grid (CRS, pixel size, origin and shape) and
    do not: labels and their cube, a class map and its truth.

    Args:
        expected: The grid of the reference raster (``on``).
        found: The grid of the raster checked (``what``).
        what: The raster checked, for the message (``"labels labels.zarr"``).
        on: The reference raster (``"the cube cube.zarr"``).
        fix: How to put ``what`` on the grid (the command to run).

    Raises:
        GeoreferenceError: The grids differ.
    """
    same_crs = expected.crs == found.crs
    # Float noise from reprojection and JSON: a thousandth of a pixel is the same grid.
    tolerance = 1e-3 * min(abs(expected.resolution.x), abs(expected.resolution.y))
    same_pixels = expected.affine.almost_equals(found.affine, precision=tolerance)
    if same_crs and same_pixels and expected.shape == found.shape:
        return
    raise GeoreferenceError(
        f"{what} lies on another grid ({_grid_text(found)}) than {on} "
        f"({_grid_text(expected)}): {fix}"
    )


def _grid_text(grid: GeoBox) -> str:
    crs = grid.crs
    name = "no CRS" if crs is None else crs_name(crs)
    unit = "" if crs is None else f" {unit_symbol(crs)}"
    a = grid.affine
    size = f"{abs(a.a):g}" if abs(a.a) == abs(a.e) else f"{abs(a.a):g} x {abs(a.e):g}"
    shape = f"{grid.shape.y} x {grid.shape.x} px"
    return f"{name}, {size}{unit} pixels, {shape} from ({a.c:.2f}, {a.f:.2f})"


def crs_name(crs: CRS) -> str:
    """A CRS as messages name it: ``"EPSG:32632"``, else its name (never its WKT)."""
    return f"EPSG:{crs.epsg}" if crs.epsg else str(crs.proj.name)


def unit_symbol(crs: CRS) -> str:
    """The symbol of a CRS's units for messages: ``"m"``, ``"°"``, else their name."""
    units = crs.units[0] if crs.units else ""
    return "°" if units.startswith("degree") else {"metre": "m"}.get(units, units)
