"""Mosaics: several class maps (per zone, region or date) as one class map on one grid.

**Layers.** Each source map is a layer; a multi-date map gives one layer per date.

**Grid.** The CRS, resolution and pixel alignment of the first source, extended to cover
every layer's footprint; tiles of the first source's tile size. An output tile reads only
the windows of the layers that overlap it and puts them on its grid by nearest neighbour:
a plain copy where a layer's grid is aligned with the output's (same CRS, resolution and
pixel corners), a nearest-neighbour warp otherwise (another UTM zone).

**Overlap rule**, per pixel, among the layers with a class there (not 255):

- ``confidence``: the highest confidence wins; at equal confidence, the layer listed first.
- ``latest``: the latest date wins (a multi-date map's dates, or a map's ``date``
  attribute); at the same date, the higher confidence; then the layer listed first.

**Provenance.** The mosaic is a class map (``class``, ``confidence``) with a ``source``
variable: per pixel, the index of the winning layer in the ``sources`` attribute (path,
date, model version, run id of each layer; 255 = no layer). Each tile's provenance record
(`eoseg.store.tile_provenance`) counts the pixels each layer won in that tile.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import rasterio.warp
import xarray as xr
from affine import Affine
from odc.geo.geobox import GeoBox
from odc.geo.overlap import compute_reproject_roi

from eoseg import __version__
from eoseg.classes import IGNORE_ID, ClassSchema
from eoseg.classmap import create_classmap, open_classmap
from eoseg.cluster import ProgressFn, run_tiles
from eoseg.dates import date_labels
from eoseg.errors import InvalidParameterError
from eoseg.grid import Tile, crs_of, iter_tiles
from eoseg.locks import output_lock
from eoseg.outputs import check_output
from eoseg.store import done_tiles, open_product, publish, resumable, write_tile

MosaicRule = Literal["confidence", "latest"]
SOURCE_VAR = "source"
"""The variable holding, per pixel, the index of the layer it comes from."""
MAX_LAYERS = 255
"""Layers a mosaic may hold: ``source`` is uint8 and 255 means none."""


@dataclass(frozen=True, slots=True)
class Layer:
    """One ``(y, x)`` map a mosaic reads: a source map, or one date of a multi-date one.

    Attributes:
        path: The class map store.
        time: The date's index in a multi-date map; None for a map without dates.
        date: ISO day of the layer (None: unknown).
        model_version: The model that made it.
        run_id: The run that made it.
    """

    path: str
    time: int | None
    date: str | None
    model_version: str
    run_id: str


@dataclass(frozen=True, slots=True)
class MosaicResult:
    """What `mosaic_classmaps` wrote."""

    path: Path | str
    rule: MosaicRule
    layers: int
    tiles: int
    shape: tuple[int, int]
    seconds: float
    pixels_by_source: dict[int, int]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path)}


def mosaic_classmaps(
    sources: Sequence[Path | str],
    out: Path | str,
    *,
    rule: str = "confidence",
    overwrite: bool = False,
    run_id: str = "",
    client: Any = None,
    progress: ProgressFn | None = None,
) -> MosaicResult:
    """Mosaic class maps into one class map on one grid (see the module docs).

    Args:
        sources: The class maps, in order of preference at equal rank (local paths or
            fsspec URLs, `eoseg.storage`).
        out: The class map store to write (a local path or an fsspec URL).
        rule: ``confidence`` or ``latest``: which layer a pixel takes where they overlap.
        overwrite: Replace an existing class map at ``out``.
        run_id: Recorded in the store.
        client: A Dask client running the tiles (None: one after another, here).
        progress: Called with ``(done, total)`` after each tile.

    Raises:
        InvalidParameterError: Fewer than two maps, another rule, maps with other
            classes, ``latest`` with a map without a date, or too many layers.
        OutputExistsError: ``out`` exists and ``overwrite`` is false.
        InputNotFoundError, InvalidStoreError: A source is missing or no class map.
    """
    start = time.perf_counter()
    checked = check_rule(rule)
    if len(sources) < 2:
        raise InvalidParameterError(
            f"a mosaic needs two or more class maps; found {len(sources)}: give MAP MAP ..."
        )
    check_output(out, "classmap", overwrite=overwrite, inputs={"MAP": list(sources)})
    maps = [open_classmap(p) for p in sources]
    schema = _same_classes(sources, maps)
    layers = _layers(sources, maps, checked)
    grid = union_grid(maps[0].odc.geobox, [m.odc.geobox for m in maps[1:]])
    tile_size = int(maps[0].attrs["tile_size"])
    tiles = list(iter_tiles(grid, tile_size))
    described = [asdict(layer) for layer in layers]
    key = json.dumps([described, [m.attrs.get("eoseg_signature") for m in maps], checked])
    attrs = {
        "run_id": run_id,
        "model_version": ",".join(sorted({layer.model_version for layer in layers})),
        "mosaic_rule": checked,
        "sources": described,
    }
    extra = {SOURCE_VAR: "index of the source layer (attrs 'sources'), 255 = none"}
    with output_lock(out, run_id=run_id):
        signature = hashlib.sha256(f"{key}{grid!r}{tile_size}".encode()).hexdigest()[:16]
        staging = create_classmap(
            out, grid, tile_size, schema, signature=signature, attrs=attrs, extra=extra
        )
        todo = [t for t in tiles if t.name not in done_tiles(staging)]
        with resumable(staging, len(tiles)):
            reports = run_tiles(
                client,
                mosaic_tile,
                todo,
                progress=progress,
                grid=grid,
                layers=layers,
                rule=checked,
                staging=staging,
            )
        publish(out, overwrite=overwrite)
    won: dict[int, int] = {}
    for report in reports:
        for k, n in report.items():
            won[k] = won.get(k, 0) + n
    return MosaicResult(
        out, checked, len(layers), len(tiles), grid.shape.yx, time.perf_counter() - start, won
    )


def check_rule(rule: str) -> MosaicRule:
    """The overlap rule, checked.

    Raises:
        InvalidParameterError: Not one of the rules.
    """
    if rule not in get_args(MosaicRule):
        raise InvalidParameterError(
            f"--rule {rule!r} is no mosaic rule: expected one of {list(get_args(MosaicRule))} "
            "(confidence: the higher confidence wins; latest: the later date wins)"
        )
    return rule  # type: ignore[return-value]


def _same_classes(sources: Sequence[Path | str], maps: list[xr.Dataset]) -> ClassSchema:
    schema = ClassSchema.from_dict(maps[0].attrs["classes"])
    for path, ds in zip(sources[1:], maps[1:], strict=True):
        other = ClassSchema.from_dict(ds.attrs["classes"])
        if other != schema:
            raise InvalidParameterError(
                f"class map {path} has the classes {list(other.names)}, but {sources[0]} has "
                f"{list(schema.names)}: mosaic maps of one class schema (predict them with "
                "models of the same classes)"
            )
    return schema


def _layers(sources: Sequence[Path | str], maps: list[xr.Dataset], rule: MosaicRule) -> list[Layer]:
    layers = []
    for path, ds in zip(sources, maps, strict=True):
        common = {
            "model_version": str(ds.attrs.get("model_version", "")),
            "run_id": str(ds.attrs.get("run_id", "")),
        }
        days = date_labels(ds)
        if days:
            layers += [Layer(str(path), i, day, **common) for i, day in enumerate(days)]
            continue
        day = ds.attrs.get("date")
        if rule == "latest" and not day:
            raise InvalidParameterError(
                f"--rule latest needs the date of every map, but {path} has none (a model "
                "of the median of the cube's dates makes one undated map): mosaic it with "
                "--rule confidence, or predict dated maps (a per-date model)"
            )
        layers.append(Layer(str(path), None, str(day) if day else None, **common))
    if len(layers) >= MAX_LAYERS:
        raise InvalidParameterError(
            f"the maps hold {len(layers)} layers (one per map, or per date of a multi-date "
            f"map); a mosaic holds at most {MAX_LAYERS - 1}: mosaic them in groups, then "
            "mosaic the groups"
        )
    return layers


def union_grid(first: GeoBox, others: Sequence[GeoBox]) -> GeoBox:
    """The grid of ``first`` (CRS, resolution, pixel corners) extended over ``others``."""
    crs = crs_of(first)
    a = first.affine
    boxes = [first.extent.boundingbox] + [g.extent.to_crs(crs).boundingbox for g in others]
    minx, maxx = min(b.left for b in boxes), max(b.right for b in boxes)
    miny, maxy = min(b.bottom for b in boxes), max(b.top for b in boxes)
    eps = 1e-6  # pixels: footprints on the grid's corners must not gain a column
    col0 = math.floor((minx - a.c) / a.a + eps)
    col1 = math.ceil((maxx - a.c) / a.a - eps)
    row0 = math.floor((maxy - a.f) / a.e + eps)  # a.e < 0: rows grow southwards
    row1 = math.ceil((miny - a.f) / a.e - eps)
    corner = Affine(a.a, 0.0, a.c + col0 * a.a, 0.0, a.e, a.f + row0 * a.e)
    return GeoBox((row1 - row0, col1 - col0), corner, crs)


def mosaic_tile(
    tile: Tile, *, grid: GeoBox, layers: Sequence[Layer], rule: MosaicRule, staging: Path
) -> dict[int, int]:
    """Compose one output tile from the layers and write it; returns the pixels each layer
    won. Idempotent (Dask may run it twice)."""
    box = tile.geobox(grid)
    cls = np.full(box.shape.yx, IGNORE_ID, dtype="uint8")
    conf = np.zeros(box.shape.yx, dtype="uint8")
    source = np.full(box.shape.yx, IGNORE_ID, dtype="uint8")
    best = np.full(box.shape.yx, -1, dtype="int32")
    ranks = {d: i for i, d in enumerate(sorted({la.date or "" for la in layers}))}
    for k, layer in enumerate(layers):
        found = _on_tile(layer, box)
        if found is None:
            continue
        c, p = found
        rank = np.int32(ranks[layer.date or ""] * 256 if rule == "latest" else 0)
        key = rank + p.astype("int32")
        take = (c != IGNORE_ID) & (key > best)  # strict: ties keep the earlier layer
        cls[take], conf[take], source[take], best[take] = c[take], p[take], k, key[take]
    ids, counts = np.unique(source[source != IGNORE_ID], return_counts=True)
    won = {int(i): int(n) for i, n in zip(ids, counts, strict=True)}
    record = {"rule": rule, "sources": won, "eoseg_version": __version__}
    write_tile(staging, tile, {"class": cls, "confidence": conf, SOURCE_VAR: source}, record)
    return won


@functools.lru_cache(maxsize=64)
def _open(path: str) -> xr.Dataset:
    """A source map, opened once per worker (its chunks were checked when planning)."""
    return open_product(path, "classmap", check=False)


def _on_tile(layer: Layer, box: GeoBox) -> tuple[np.ndarray, np.ndarray] | None:
    """``class`` and ``confidence`` of a layer on the tile's grid (255 and 0 outside it),
    reading only the window that overlaps the tile; None where it does not."""
    ds = _open(layer.path)
    if layer.time is not None:
        ds = ds.isel(time=layer.time)
    src: GeoBox = ds.odc.geobox
    roi = compute_reproject_roi(src, box)
    ys, xs = roi.roi_src
    if ys.stop <= ys.start or xs.stop <= xs.start:
        return None
    window = ds[["class", "confidence"]].isel(y=ys, x=xs)
    c_src, p_src = window["class"].values, window["confidence"].values
    cls = np.full(box.shape.yx, IGNORE_ID, dtype="uint8")
    conf = np.zeros(box.shape.yx, dtype="uint8")
    if roi.paste_ok:  # same CRS, resolution and pixel corners: a copy
        dy, dx = roi.roi_dst
        cls[dy.start : dy.stop, dx.start : dx.stop] = c_src
        conf[dy.start : dy.stop, dx.start : dx.stop] = p_src
        return cls, conf
    part = src[ys, xs]
    for values, target, nodata in ((c_src, cls, IGNORE_ID), (p_src, conf, 0)):
        rasterio.warp.reproject(
            values,
            target,
            src_transform=part.affine,
            src_crs=crs_of(part).wkt,
            src_nodata=nodata,
            dst_transform=box.affine,
            dst_crs=crs_of(box).wkt,
            dst_nodata=nodata,
            resampling=rasterio.warp.Resampling.nearest,
        )
    return cls, conf
