"""Stratified random reference samples of a class map: allocate, draw, write, read back.

The strata are the mapped classes (Olofsson et al. 2014, section 4.1). Points are pixel
centres drawn at random, without replacement, within each stratum, in two passes over
the map's tiles: the first counts each class per tile, the second reads only the tiles
holding a drawn point. The same map, seed and allocation give the same points.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import dask
import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import xarray as xr
from odc.geo.geobox import GeoBox

from eoseg.classes import ClassSchema
from eoseg.errors import InputNotFoundError, InvalidParameterError, UnreadableVectorError
from eoseg.grid import crs_of, raster_tiles

log = logging.getLogger(__name__)

REFERENCE_FIELD = "reference"
"""The column a labeller fills: the reference class (name or id) of each point."""

SampleFormat = Literal["csv", "gpkg"]


@dataclass(frozen=True, slots=True)
class SampleDesign:
    """How many points each mapped class gets.

    Attributes:
        n: Total points for a proportional allocation.
        min_per_class: Least points of each mapped class (a class with fewer pixels gets
            them all).
        counts: Points per class name, given; overrides ``n`` and ``min_per_class``.
        seed: Seed of the random draw.
    """

    n: int = 500
    min_per_class: int = 50
    counts: tuple[tuple[str, int], ...] = ()
    seed: int = 0


def parse_counts(text: str | None) -> tuple[tuple[str, int], ...]:
    """``"forest=50,water=100"`` as ``(("forest", 50), ("water", 100))``."""
    if not text:
        return ()
    out = []
    for part in text.split(","):
        name, sep, value = part.partition("=")
        if not sep or not value.strip().isdigit():
            raise InvalidParameterError(
                f"--counts {text!r}: expected CLASS=POINTS pairs, e.g. 'forest=50,water=100'; "
                f"found {part!r}"
            )
        out.append((name.strip(), int(value)))
    return tuple(out)


def allocate(pixels: np.ndarray, schema: ClassSchema, design: SampleDesign) -> np.ndarray:
    """Points per class: given counts, or proportional to the mapped pixels with a minimum.

    The proportional allocation gives each mapped class ``max(min_per_class, share)``
    points and shares the rest of ``n`` among the larger classes by largest remainder;
    no class gets more points than it has pixels.

    Raises:
        InvalidParameterError: A named class is unknown, or ``n`` cannot hold the minimum.
    """
    if design.counts:
        return _given_counts(pixels, schema, design.counts)
    mapped = pixels > 0
    floor = np.minimum(pixels, design.min_per_class) * mapped
    if design.n < floor.sum():
        raise InvalidParameterError(
            f"--n {design.n} points cannot give each of the {int(mapped.sum())} mapped classes "
            f"--min-per-class {design.min_per_class}: raise --n to {int(floor.sum())} or more, "
            "or lower --min-per-class"
        )
    out = floor.astype(np.int64)
    fixed = ~mapped | (out >= pixels)
    for _ in range(len(pixels) + 1):  # each round fixes at least one class or stops
        free = ~fixed
        budget = design.n - out[fixed].sum()
        share = _largest_remainder(pixels * free, budget)
        low = free & (share < floor)
        high = free & (share > pixels)
        if not (low.any() or high.any()):
            out[free] = share[free]
            break
        out[low] = floor[low]
        out[high] = pixels[high]
        fixed |= low | high
    return out


def draw_sample(
    classmap: xr.DataArray, schema: ClassSchema, design: SampleDesign
) -> gpd.GeoDataFrame:
    """Draw a stratified random sample of pixel centres from a ``(y, x)`` class map.

    Returns:
        One row per point: ``id``, ``map_class`` (id), ``map_class_name``, an empty
        ``reference`` column, ``x``/``y`` (map CRS), ``lon``/``lat`` (EPSG:4326), and
        point geometries in the map's CRS; sorted by class then position.
    """
    geobox, data, slices = raster_tiles(classmap)
    blocks = list(data.to_delayed().ravel())
    per_tile = np.stack(dask.compute(*[dask.delayed(_count)(b) for b in blocks]))  # (tiles, 256)
    n = len(schema)
    pixels = per_tile[:, :n].sum(axis=0)
    take = allocate(pixels, schema, design)
    rng = np.random.default_rng(design.seed)
    picks: dict[int, list[tuple[int, np.ndarray]]] = {}
    for k in np.flatnonzero(take):
        ranks = np.sort(rng.choice(int(pixels[k]), size=int(take[k]), replace=False))
        edges = np.cumsum(per_tile[:, k])
        tiles = np.searchsorted(edges, ranks, side="right")
        for t in np.unique(tiles):
            local = ranks[tiles == t] - (edges[t] - per_tile[t, k])
            picks.setdefault(int(t), []).append((int(k), local))
    found = dask.compute(*[dask.delayed(_locate)(blocks[t], p) for t, p in picks.items()])
    rows, cols, classes = [], [], []
    for t, (r, c, k) in zip(picks, found, strict=True):
        ys, xs = slices[t]
        rows.append(r + ys.start)
        cols.append(c + xs.start)
        classes.append(k)
    return _points(
        geobox, schema, np.concatenate(rows), np.concatenate(cols), np.concatenate(classes)
    )


def write_sample(sample: gpd.GeoDataFrame, path: Path) -> Path:
    """Write a sample as CSV (no geometry column) or GeoPackage (layer ``sample``)."""
    kind = sample_format(path)
    if kind == "csv":
        pd.DataFrame(sample.drop(columns=sample.geometry.name)).to_csv(path, index=False)
    else:
        sample.to_file(path, layer="sample", driver="GPKG")
    log.info("wrote %d sample points to %s", len(sample), path)
    return path


def sample_format(path: Path) -> SampleFormat:
    """``csv`` or ``gpkg`` from the file's extension."""
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix == ".gpkg":
        return "gpkg"
    raise InvalidParameterError(
        f"--out {path}: a sample is written as .csv or .gpkg; found {suffix or 'no extension'}"
    )


def read_sample(
    path: Path, field: str, crs: pyproj.CRS
) -> tuple[np.ndarray, np.ndarray, list[object]]:
    """Positions (in ``crs``) and reference labels of a labelled sample file.

    A GeoPackage gives its point geometries; a CSV its ``x``/``y`` columns (in the map's
    CRS, as `write_sample` wrote them) or else ``lon``/``lat`` (EPSG:4326).

    Returns:
        ``x``, ``y`` and the raw values of ``field`` (one per point).

    Raises:
        InputNotFoundError: No file.
        UnreadableVectorError: Unreadable, no positions, or no ``field`` column.
    """
    if not Path(path).is_file():
        raise InputNotFoundError(f"--reference {path}: no such file; give the labelled sample")
    try:
        if sample_format(path) == "csv":
            table = pd.read_csv(path, dtype={field: object}, keep_default_na=False)
        else:
            table = gpd.read_file(path)
    except (OSError, ValueError) as e:
        raise UnreadableVectorError(f"--reference {path} cannot be read ({e})") from e
    if field not in table.columns:
        raise UnreadableVectorError(
            f"--reference {path} has no column {field!r} (columns: {list(table.columns)}): "
            "name the column of reference labels with --reference-field"
        )
    x, y = _positions(table, path, crs)
    return x, y, list(table[field])


def _positions(table: pd.DataFrame, path: Path, crs: pyproj.CRS) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(table, gpd.GeoDataFrame) and table.crs is not None:
        pts = table.geometry.to_crs(crs)
        return np.asarray(pts.x, dtype=np.float64), np.asarray(pts.y, dtype=np.float64)
    if {"x", "y"} <= set(table.columns):
        return table["x"].to_numpy(np.float64), table["y"].to_numpy(np.float64)
    if {"lon", "lat"} <= set(table.columns):
        to_map = pyproj.Transformer.from_crs(4326, crs, always_xy=True)
        x, y = to_map.transform(
            table["lon"].to_numpy(np.float64), table["lat"].to_numpy(np.float64)
        )
        return np.asarray(x), np.asarray(y)
    raise UnreadableVectorError(
        f"--reference {path} holds no point positions: give a GeoPackage of points, or a "
        "CSV with x,y (the map's CRS) or lon,lat columns (as eoseg sample writes them)"
    )


def _given_counts(
    pixels: np.ndarray, schema: ClassSchema, counts: tuple[tuple[str, int], ...]
) -> np.ndarray:
    out = np.zeros(len(pixels), dtype=np.int64)
    for name, value in counts:
        if name not in schema.names:
            raise InvalidParameterError(
                f"--counts names class {name!r}; the map's classes are {list(schema.names)}"
            )
        k = schema.names.index(name)
        out[k] = min(value, int(pixels[k]))
    return out


def _largest_remainder(weights: np.ndarray, total: int) -> np.ndarray:
    """Integers proportional to ``weights`` summing to ``total`` (Hamilton's method)."""
    if weights.sum() == 0 or total <= 0:
        return np.zeros(len(weights), dtype=np.int64)
    exact = weights / weights.sum() * total
    out = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - out), kind="stable")
    out[order[: total - out.sum()]] += 1
    return out


def _count(block: np.ndarray) -> np.ndarray:
    return np.bincount(np.asarray(block).ravel(), minlength=256)[:256]


def _locate(block: np.ndarray, picks: list[tuple[int, np.ndarray]]) -> tuple[np.ndarray, ...]:
    """Rows, columns and classes of the ``local``-th pixels of each class in one tile."""
    flat = np.asarray(block).ravel()
    width = np.asarray(block).shape[1]
    idx = [np.flatnonzero(flat == k)[local] for k, local in picks]
    where = np.concatenate(idx)
    klass = np.concatenate([np.full(len(i), k) for (k, _), i in zip(picks, idx, strict=True)])
    return where // width, where % width, klass


def _points(
    geobox: GeoBox, schema: ClassSchema, rows: np.ndarray, cols: np.ndarray, classes: np.ndarray
) -> gpd.GeoDataFrame:
    """The sample table of pixel ``rows``/``cols`` mapped as ``classes``."""
    order = np.lexsort((cols, rows, classes))
    rows, cols, classes = rows[order], cols[order], classes[order]
    a = geobox.affine
    x = a.a * (cols + 0.5) + a.b * (rows + 0.5) + a.c
    y = a.d * (cols + 0.5) + a.e * (rows + 0.5) + a.f
    crs = crs_of(geobox).proj
    lon, lat = pyproj.Transformer.from_crs(crs, 4326, always_xy=True).transform(x, y)
    names = np.array(schema.names, dtype=object)
    table = pd.DataFrame(
        {
            "id": np.arange(1, len(rows) + 1),
            "map_class": classes.astype(np.int64),
            "map_class_name": names[classes],
            REFERENCE_FIELD: pd.Series([None] * len(rows), dtype=object),
            "x": x,
            "y": y,
            "lon": lon,
            "lat": lat,
        }
    )
    return gpd.GeoDataFrame(table, geometry=gpd.points_from_xy(x, y), crs=crs)
