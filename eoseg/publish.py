"""Products of a class map, from paths: export, evaluation and area queries.

These are the library functions behind ``eoseg export``, ``eoseg evaluate`` and
``eoseg query`` and the matching flow tasks; each reads the class map tile by tile.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import xarray as xr

from eoseg.area_table import AreaTable, area_table
from eoseg.classes import ClassSchema
from eoseg.classmap import open_classmap
from eoseg.code_map import CodeMap, CodeMapSpec
from eoseg.cog import CogLayer, write_cog
from eoseg.dates import DATE_FIELD, DateChoice, date_index, date_labels, dated_path, select_date
from eoseg.errors import InvalidParameterError
from eoseg.evaluation import evaluate_paths
from eoseg.metrics import AccuracyReport
from eoseg.outputs import POLYGONS_MARKER, OutputKind, check_output
from eoseg.polygon_io import write_polygon_product
from eoseg.quicklook import write_quicklook
from eoseg.stats import ClassAreas
from eoseg.storage import is_url, resolve
from eoseg.styles import check_style, polygon_style, style_path, write_style
from eoseg.vectorize import vectorize
from eoseg.versions import LATEST, is_repository, open_version

log = logging.getLogger(__name__)


def export_classmap(
    classmap: Path | str,
    *,
    cog: Path | str | None = None,
    confidence_cog: Path | str | None = None,
    polygons: Path | str | None = None,
    quicklook: Path | str | None = None,
    simplify: float | None = None,
    min_area: float | None = None,
    overwrite: bool = False,
    date: DateChoice = None,
) -> dict[str, Any]:
    """Write the requested exports of a class map; returns their paths and timings.

    The class and confidence COGs (`eoseg.cog.write_cog`) and the polygons get a QGIS
    style beside them (``<name>.qml``, `eoseg.styles`).

    A multi-date class map (of a per-date model) exports ``date`` (see
    `eoseg.dates.select_date`), or without it every date: ``{date}`` in a path is
    replaced by each date's ISO day (one file per date); polygons without it go to one
    file with a ``date`` column; a COG or quicklook path without it is an error that
    names ``--date``. Polygons of a multi-date map always carry their ``date``.

    Polygons (`eoseg.vectorize.vectorize`, written by `eoseg.polygon_io`) keep the pixel
    outlines unless ``simplify`` (metres) is given, so by default they rasterize back to
    the class map exactly; ``min_area`` (m²) merges smaller polygons into their largest
    neighbour. They carry ``class_id``, ``class_name``, ``area_m2``, ``confidence`` (mean,
    0-1), ``model_version``, ``tile_row`` and, for a multi-date map, ``date``.

    Raises:
        InvalidParameterError: See above, a ``date`` the map lacks, a ``simplify``
            tolerance or ``min_area`` that is negative or not finite, or two outputs whose
            styles would share one .qml file.
    """
    for flag, value, unit in (("--simplify", simplify, "m"), ("--min-area", min_area, "m²")):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise InvalidParameterError(
                f"{flag} must be a number >= 0 in {unit} (e.g. 10); found {value}: give "
                f"one, or leave {flag} out"
            )
    doc: dict[str, Any] = {"classmap": classmap}
    ds = open_classmap(classmap)
    picks = _export_dates(ds, date)
    cogs = _targets(ds, picks, cog, "--cog", "export each")
    sure = _targets(ds, picks, confidence_cog, "--confidence-cog", "export each")
    looks = _targets(ds, picks, quicklook, "--quicklook", "render each")
    shapes = _targets(ds, picks, polygons, "--polygons", None)
    targets: list[tuple[OutputKind, str, list[tuple[list[int] | None, Path | str]]]] = [
        ("cog", "--cog", cogs),
        ("cog", "--confidence-cog", sure),
        ("quicklook", "--quicklook", looks),
        ("polygons", "--polygons", shapes),
    ]
    _check_targets(classmap, targets, overwrite)
    layers: list[tuple[str, CogLayer, list[tuple[list[int] | None, Path | str]]]] = [
        ("cog", "class", cogs),
        ("confidence_cog", "confidence", sure),
    ]
    for key, layer, files in layers:
        if files:
            start = time.perf_counter()
            paths = [
                write_cog(classmap, p, layer=layer, overwrite=overwrite, date=_one(i))
                for i, p in files
            ]
            doc[key] = _one_or_all(paths)
            doc[f"{key}_seconds"] = round(time.perf_counter() - start, 2)
    if shapes:
        start = time.perf_counter()
        schema = ClassSchema.from_dict(ds.attrs["classes"])
        frames = [(_polygons(ds, dates, schema, simplify, min_area), p) for dates, p in shapes]
        doc["polygons"] = _one_or_all([_write_styled(f, p, schema) for f, p in frames])
        doc["polygon_count"] = sum(len(f) for f, _ in frames)
        doc["polygons_seconds"] = round(time.perf_counter() - start, 2)
    if looks:
        doc["quicklook"] = _one_or_all([_write_quicklook(classmap, p, _one(i)) for i, p in looks])
    return doc


def _write_styled(frame: gpd.GeoDataFrame, path: Path | str, schema: ClassSchema) -> Path | str:
    """Write polygons and their QGIS style (``<name>.qml`` beside them).

    On object storage the polygons are written to a local temporary and uploaded whole
    (a partitioned folder with its marker last, `eoseg.storage.Location.staged`).
    """
    with resolve(path, "--polygons").staged(POLYGONS_MARKER) as local:
        write_polygon_product(frame, local)
    write_style(path, polygon_style(schema))
    return path


def _write_quicklook(classmap: Path | str, path: Path | str, date: int | None) -> Path | str:
    """Render a quicklook at ``path`` (uploaded whole when it is a URL)."""
    with resolve(path, "--quicklook").staged() as local:
        write_quicklook(classmap, local, date=date)
    return path


def _check_targets(
    classmap: Path | str,
    targets: list[tuple[OutputKind, str, list[tuple[list[int] | None, Path | str]]]],
    overwrite: bool,
) -> None:
    """Every export file may be written (`eoseg.outputs.check_output`), each its own, and
    so may its QGIS style (`eoseg.styles.check_style`), each its own."""
    seen: dict[Path | str, str] = {}
    styles: dict[Path | str, str] = {}
    for kind, flag, files in targets:
        for _, target in files:
            key = str(target) if is_url(target) else Path(os.path.abspath(target))
            if key in seen:
                raise InvalidParameterError(
                    f"{target} is given to both {seen[key]} and {flag}: give each export its "
                    "own file"
                )
            seen[key] = flag
            inputs = {"CLASSMAP": classmap}
            check_output(target, kind, overwrite=overwrite, inputs=inputs, flag=flag)
            if kind == "quicklook":
                continue  # no style
            style = style_path(key)
            if style in styles:
                raise InvalidParameterError(
                    f"{styles[style]} and {flag} {target} would both keep their QGIS style in "
                    f"{style}: give them different names (e.g. map.tif and map-polygons.parquet)"
                )
            styles[style] = f"{flag} {target}"
            check_style(target, flag)


def _export_dates(ds: xr.Dataset, date: DateChoice) -> list[int] | None:
    """Indices of the dates to export (all without ``date``); None for a map without dates."""
    labels = date_labels(ds)
    if not labels:
        select_date(ds, date)  # refuses a date for a map without dates
        return None
    return list(range(len(labels))) if date is None else [date_index(labels, date)]


def _targets(
    ds: xr.Dataset, picks: list[int] | None, path: Path | str | None, flag: str, each: str | None
) -> list[tuple[list[int] | None, Path | str]]:
    """``(dates, file)`` per file to write for one kind of export (see `export_classmap`).

    ``each`` says what ``{date}`` does for this kind; None: one file may hold every date.
    """
    if path is None:
        return []
    dated = DATE_FIELD in str(path)
    labels = date_labels(ds)
    if picks is None:
        if dated:
            raise InvalidParameterError(
                f"{flag} {path} holds {DATE_FIELD} but the class map has no dates (one map "
                f"of the median of the cube's dates): drop {DATE_FIELD} from the path"
            )
        return [(None, path)]
    if dated:
        return [([i], dated_path(path, labels[i])) for i in picks]
    if len(picks) > 1 and each is not None:
        select_date(ds, None, purpose=f"or put {DATE_FIELD} in the {flag} path to {each}")
    return [(picks, path)]


def _polygons(
    ds: xr.Dataset,
    dates: list[int] | None,
    schema: ClassSchema,
    simplify: float | None,
    min_area: float | None,
) -> gpd.GeoDataFrame:
    """Polygons of the map, or of the given dates with a ``date`` column."""
    frames = []
    picks: list[int | None] = list(dates) if dates is not None else [None]
    for i in picks:
        one = ds if i is None else ds.isel(time=i)
        frame = vectorize(
            one["class"],
            schema=schema,
            confidence=one.get("confidence"),
            simplify_m=simplify,
            min_area_m2=min_area,
        )
        frame.insert(frame.columns.get_loc("tile_row"), "model_version", _model_version(ds))
        if i is not None:
            frame.insert(0, "date", date_labels(ds)[i])
        frames.append(frame)
    if len(frames) == 1:
        return frames[0]
    return gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs=frames[0].crs)


def _model_version(ds: xr.Dataset) -> str:
    return str(ds.attrs.get("model_version", ""))


def _one(dates: list[int] | None) -> int | None:
    return None if dates is None else dates[0]


def _one_or_all(paths: Sequence[Path | str]) -> Path | str | Sequence[Path | str]:
    return paths[0] if len(paths) == 1 else paths


def evaluate_classmap(
    classmap: Path,
    truth: Path,
    *,
    class_field: str = "class_id",
    code_map: CodeMapSpec | CodeMap | None = None,
    workdir: Path,
    date: DateChoice = None,
) -> AccuracyReport:
    """Compare a class map (of one ``date``, for a multi-date map) with reference labels
    (store, class-id GeoTIFF or vector).

    A vector's text class field holds class names of the map's schema; ``code_map``
    translates other codes or names (see `eoseg.code_map`).
    """
    return evaluate_paths(
        classmap, truth, class_field=class_field, code_map=code_map, workdir=workdir, date=date
    ).accuracy


def query_areas(classmap: Path | str, aoi: str | None, *, date: DateChoice = None) -> ClassAreas:
    """Area per class (km², ellipsoidal) inside ``aoi`` (file or lon/lat box; all if None),
    of one ``date`` for a multi-date class map (see `query_areas_by_date` for all)."""
    table = query_table(classmap, aoi=aoi, date=date)
    return table.areas[0][0]


def query_areas_by_date(classmap: Path | str, aoi: str | None) -> dict[str, ClassAreas]:
    """`query_areas` of every date of a class map, by ISO day (``{}`` without dates)."""
    table = query_table(classmap, aoi=aoi)
    return {} if table.dates == ("",) else dict(zip(table.dates, table.areas[0], strict=True))


def query_table(
    classmap: Path | str,
    *,
    aoi: str | None = None,
    regions: Path | None = None,
    region_field: str | None = None,
    date: DateChoice = None,
    version: str = LATEST,
    progress: Callable[[int, int], None] | None = None,
) -> AreaTable:
    """Class areas (km², ellipsoidal, border pixels by their covered fraction) inside an
    AOI, per region of a regions layer, or over the whole map; every date, or one
    ``date``. Reads only the tiles the AOI or regions touch (see `eoseg.area_table`).

    ``classmap`` is a class map store, or a product repository (`eoseg.versions`) read
    at ``version`` (latest, a tag, an id or a number).

    Raises:
        InvalidParameterError: A ``version`` other than latest of a class map store.
    """
    if is_repository(classmap):
        ds = open_version(classmap, version)
    elif version != LATEST:
        raise InvalidParameterError(
            f"--version {version}: {classmap} is a class map store, which has one version; "
            "give a product repository (eoseg products publish MAP --to REPO) or leave "
            "--version out"
        )
    else:
        ds = open_classmap(classmap)
    if date is not None or "time" not in ds.dims:
        ds = select_date(ds, date, purpose="or leave it out to get every date")
    schema = ClassSchema.from_dict(ds.attrs["classes"])
    return area_table(
        ds["class"],
        schema,
        aoi=aoi,
        regions=regions,
        region_field=region_field,
        progress=progress,
    )
