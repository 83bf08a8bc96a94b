"""A class map's reference sample, from paths: draw it, and estimate areas from it.

The library functions behind ``eoseg sample`` and ``eoseg areas``. Stratum weights come
from the mapped areas on the ellipsoid (`eoseg.stats.pixel_areas`), summed tile by tile
per class (and per region), so the map is never loaded whole.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import dask
import dask.array
import numpy as np
from odc.geo.geobox import GeoBox

from eoseg.area_estimate import AreaEstimate, AreaReport, reference_counts, stratified_estimate
from eoseg.classes import IGNORE_ID, ClassSchema
from eoseg.dates import DateChoice, select_date
from eoseg.errors import InvalidParameterError, NoOverlapError, OutputExistsError
from eoseg.grid import crs_of, raster_tiles
from eoseg.predict import open_classmap
from eoseg.reference_sample import (
    REFERENCE_FIELD,
    SampleDesign,
    draw_sample,
    read_sample,
    sample_format,
    write_sample,
)
from eoseg.regions import read_regions, regions_raster
from eoseg.stats import pixel_areas
from eoseg.storage import Location, resolve

log = logging.getLogger(__name__)


def sample_classmap(
    classmap: Path | str,
    out: Path | str,
    design: SampleDesign,
    *,
    date: DateChoice = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Draw a stratified random sample of a class map and write it (CSV or GeoPackage).

    ``classmap`` and ``out`` may be local paths or fsspec URLs (`eoseg.storage`); a sample
    on object storage is written locally and uploaded whole.

    Returns:
        ``{"sample": out, "points": N, "classes": {name: points}}``.
    """
    target = resolve(out, "--out")
    _check_out(target, overwrite)
    ds = select_date(open_classmap(classmap), date, purpose="a sample is drawn from one date")
    schema = ClassSchema.from_dict(ds.attrs["classes"])
    sample = draw_sample(ds["class"], schema, design)
    if sample.empty:
        raise NoOverlapError(f"class map {classmap} has no mapped pixel to sample")
    with target.staged() as local:
        write_sample(sample, local)
    per_class = sample["map_class_name"].value_counts()
    return {
        "sample": out,
        "points": len(sample),
        "seed": design.seed,
        "classes": {name: int(per_class.get(name, 0)) for name in schema.names},
    }


def estimate_areas(
    classmap: Path | str,
    reference: Path | str,
    *,
    field: str = REFERENCE_FIELD,
    regions: Path | None = None,
    region_field: str = "name",
    date: DateChoice = None,
) -> AreaReport:
    """Error-adjusted class areas (km²) and accuracy from a labelled reference sample.

    The stratum of each point is the map's class at its pixel (read from the map, not
    the file). Per region, the points inside it and the mapped areas inside it give a
    stratified estimate of the region (a domain of the sample). ``classmap`` and
    ``reference`` may be local paths or fsspec URLs (`eoseg.storage`).

    Raises:
        InvalidParameterError: Unlabelled points, unknown labels, points off the map or
            on nodata, or a mapped class with fewer than 2 points.
    """
    ds = select_date(open_classmap(classmap), date, purpose="a sample is compared with one date")
    schema = ClassSchema.from_dict(ds.attrs["classes"])
    cls = ds["class"]
    geobox, data, _ = raster_tiles(cls)
    with resolve(reference, "--reference").reading() as local:
        x, y, labels = read_sample(local, field, crs_of(geobox).proj)
    ref_ids = _label_ids(labels, schema, field)
    rows, cols = _pixels(geobox, x, y, reference)
    map_ids = np.asarray(data.vindex[rows, cols].compute()).astype(np.int64)
    if (map_ids == IGNORE_ID).any():
        raise InvalidParameterError(
            f"{int((map_ids == IGNORE_ID).sum())} points of --reference {reference} lie on "
            "nodata pixels of the map: draw the sample from this map (eoseg sample)"
        )
    layer = None if regions is None else read_regions(regions, region_field, geobox)
    n_groups = 1 if layer is None else len(layer.names) + 1
    raster = None
    if layer is not None:
        raster = regions_raster(layer, geobox, data.chunks) % n_groups  # outside: last group
    groups = np.zeros(len(rows), dtype=np.int64)
    if raster is not None:
        groups = np.asarray(raster.vindex[rows, cols].compute()).astype(np.int64)
    q = len(schema)
    area = _mapped_km2(data, geobox, raster, n_groups)[:, :q]
    counts = reference_counts(map_ids, ref_ids, groups, q, n_groups)
    overall = stratified_estimate(counts.sum(axis=0), area.sum(axis=0), schema.names)
    if layer is None:
        return AreaReport(overall, {}, {})
    by_name: dict[str, AreaEstimate | None] = {}
    skipped: dict[str, str] = {}
    for k, name in enumerate(layer.names):
        try:
            by_name[name] = stratified_estimate(counts[k], area[k], schema.names)
        except InvalidParameterError as e:
            by_name[name], skipped[name] = None, str(e)
    return AreaReport(overall, by_name, skipped, region_field)


def _check_out(out: Location, overwrite: bool) -> None:
    """A sample file may be written at ``out`` (before any work)."""
    sample_format(Path(out.name))
    if out.is_dir():
        raise OutputExistsError(f"--out {out} is a folder: give a .csv or .gpkg file path")
    if out.exists() and not overwrite:
        raise OutputExistsError(
            f"--out {out} exists (it may hold labels): choose another path, or pass --overwrite"
        )
    if out.local is not None and not out.local.parent.is_dir():
        folder = out.local.parent
        raise InvalidParameterError(f"--out {out}: folder {folder} does not exist; create it")


def _label_ids(labels: list[object], schema: ClassSchema, field: str) -> np.ndarray:
    """Class ids of the reference labels (names or ids); every point must be labelled."""
    ids = []
    empty = 0
    unknown: set[str] = set()
    for value in labels:
        text = "" if value is None or value != value else str(value).strip()  # NaN != NaN
        k = _label_id(text, schema)
        if text == "":
            empty += 1
        elif k is None:
            unknown.add(text)
        else:
            ids.append(k)
    if empty:
        raise InvalidParameterError(
            f"{empty} of {len(labels)} sample points have no reference label in {field!r}: "
            "label every point (its class name or id), or name the labelled column with "
            "--reference-field"
        )
    if unknown:
        raise InvalidParameterError(
            f"reference labels {sorted(unknown)[:10]} in {field!r} are not classes of the map "
            f"({list(schema.names)} or ids 0..{len(schema) - 1}): fix the labels"
        )
    return np.asarray(ids, dtype=np.int64)


def _label_id(text: str, schema: ClassSchema) -> int | None:
    """The class id of a label: a class name, or an id (``3`` or ``3.0``)."""
    if text in schema.names:
        return schema.names.index(text)
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value.is_integer() and 0 <= value < len(schema) else None


def _pixels(
    geobox: GeoBox, x: np.ndarray, y: np.ndarray, path: Path | str
) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of the pixel holding each point; every point must be on the map."""
    inv = ~geobox.affine
    col, row = inv * (x, y)
    rows = np.floor(np.asarray(row)).astype(np.int64)
    cols = np.floor(np.asarray(col)).astype(np.int64)
    ny, nx = geobox.shape.yx
    off = (rows < 0) | (rows >= ny) | (cols < 0) | (cols >= nx)
    if off.any():
        raise InvalidParameterError(
            f"{int(off.sum())} points of --reference {path} lie outside the class map: "
            "give the sample drawn from this map (and check its CRS)"
        )
    return rows, cols


def _mapped_km2(
    data: dask.array.Array, geobox: GeoBox, regions: dask.array.Array | None, n_groups: int
) -> np.ndarray:
    """``(n_groups, 256)`` mapped area (km², on the ellipsoid) of each id per region."""
    ys = np.cumsum((0, *data.chunks[0]))
    xs = np.cumsum((0, *data.chunks[1]))
    blocks = data.to_delayed()
    groups = None if regions is None else regions.rechunk(data.chunks).to_delayed()
    tasks = []
    for i in range(len(data.chunks[0])):
        for j in range(len(data.chunks[1])):
            tile = geobox[int(ys[i]) : int(ys[i + 1]), int(xs[j]) : int(xs[j + 1])]
            g = None if groups is None else groups[i, j]
            tasks.append(dask.delayed(_tile_km2)(blocks[i, j], g, tile, n_groups))
    return np.sum(dask.compute(*tasks), axis=0)


def _tile_km2(
    block: np.ndarray, groups: np.ndarray | None, tile: GeoBox, n_groups: int
) -> np.ndarray:
    areas = pixel_areas(tile).ravel() / 1e6
    ids = np.asarray(block).ravel().astype(np.int64)
    g = np.zeros_like(ids) if groups is None else np.asarray(groups).ravel().astype(np.int64)
    return np.bincount(g * 256 + ids, weights=areas, minlength=n_groups * 256).reshape(
        n_groups, 256
    )
