"""Products of a class map, from paths: export, evaluation and area queries.

These are the library functions behind ``eoseg export``, ``eoseg evaluate`` and
``eoseg query`` and the matching flow tasks; each reads the class map tile by tile.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from eoseg.classes import ClassSchema
from eoseg.label_mapping import ClassMapping, ClassMapSpec, load_class_map
from eoseg.labels import open_truth
from eoseg.metrics import AccuracyReport, evaluate
from eoseg.mosaic import write_cog, write_quicklook
from eoseg.predict import open_classmap
from eoseg.stats import ClassAreas, class_areas, read_aoi
from eoseg.store import check_output
from eoseg.vectorize import vectorize, write_polygons

log = logging.getLogger(__name__)


def export_classmap(
    classmap: Path,
    *,
    cog: Path | None = None,
    polygons: Path | None = None,
    quicklook: Path | None = None,
    simplify: float | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the requested exports of a class map; returns their paths and timings."""
    doc: dict[str, Any] = {"classmap": classmap}
    for target in (cog, polygons, quicklook):
        if target is not None:
            check_output(target, overwrite)
    ds = open_classmap(classmap)
    if cog is not None:
        start = time.perf_counter()
        doc["cog"] = write_cog(classmap, cog, overwrite=overwrite)
        doc["cog_seconds"] = round(time.perf_counter() - start, 2)
    if polygons is not None:
        start = time.perf_counter()
        schema = ClassSchema.from_dict(ds.attrs["classes"])
        frame = vectorize(ds["class"], schema=schema, simplify_tolerance=simplify)
        doc["polygons"] = write_polygons(frame, polygons)
        doc["polygon_count"] = len(frame)
        doc["polygons_seconds"] = round(time.perf_counter() - start, 2)
    if quicklook is not None:
        doc["quicklook"] = write_quicklook(classmap, quicklook)
    return doc


def evaluate_classmap(
    classmap: Path,
    truth: Path,
    *,
    class_field: str = "class_id",
    class_map: ClassMapSpec | ClassMapping | None = None,
    workdir: Path,
) -> AccuracyReport:
    """Compare a class map with reference labels (store, class-id GeoTIFF or vector).

    A vector's text class field holds class names of the map's schema; ``class_map``
    translates other codes or names (see `eoseg.label_mapping`).
    """
    ds = open_classmap(classmap)
    schema = ClassSchema.from_dict(ds.attrs["classes"])
    mapping = None if class_map is None else load_class_map(class_map, schema)
    reference = open_truth(
        truth, classmap, class_field=class_field, schema=schema, class_map=mapping, workdir=workdir
    )
    return evaluate(ds["class"], reference, schema)


def query_areas(classmap: Path, aoi: str | None) -> ClassAreas:
    """Area per class (km², ellipsoidal) inside ``aoi`` (file or lon/lat box); all if None."""
    ds = open_classmap(classmap)
    schema = ClassSchema.from_dict(ds.attrs["classes"])
    shape = read_aoi(aoi) if aoi else None
    return class_areas(ds["class"], schema, aoi=shape)
