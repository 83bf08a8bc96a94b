"""Evaluate a class map from paths: overall accuracy and, with a regions layer, per region.

This is the library function behind ``eoseg evaluate --regions`` and ``--report``: it
opens the map and its truth once (`eoseg.publish.evaluate_classmap` is its overall
part), and sums
one confusion matrix per region in the same pass over the tiles.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xarray as xr

from eoseg.classes import ClassSchema
from eoseg.classmap import open_classmap
from eoseg.code_map import CodeMap, CodeMapSpec, load_code_map
from eoseg.dates import DateChoice, select_date
from eoseg.errors import NoOverlapError
from eoseg.grid import check_same_grid, grid_of
from eoseg.labels import open_truth
from eoseg.metrics import AccuracyReport, confusion_by_region, evaluate, report_from_confusion
from eoseg.regions import read_regions, regions_raster

log = logging.getLogger(__name__)

MODEL_ATTRS = ("model", "model_version", "run_id", "input_time", "predict_settings", "cube")
"""Class map attributes that say which model made it (the report's model card summary)."""


@dataclass(frozen=True, slots=True)
class Evaluation:
    """A class map scored against truth, overall and per region.

    Attributes:
        accuracy: Scores over every pixel valid in both rasters.
        regions: Scores per region name (``None`` where the region holds no pixel valid
            in both rasters); empty without a regions layer.
        region_field: The regions layer's name field (``None`` without one).
        schema: The classes of the map.
        prediction: The map's classes (lazy), for quicklooks.
        truth: The truth on the map's grid (lazy).
        model: What the class map records of its model (name, version, run, settings).
    """

    accuracy: AccuracyReport
    regions: dict[str, AccuracyReport | None]
    region_field: str | None
    schema: ClassSchema
    prediction: xr.DataArray
    truth: xr.DataArray
    model: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The accuracy's dict, plus ``regions`` (name -> dict or None) with a regions layer."""
        doc = self.accuracy.to_dict()
        if self.region_field is not None:
            doc["region_field"] = self.region_field
            doc["regions"] = {
                name: None if r is None else r.to_dict() for name, r in self.regions.items()
            }
        return doc


def evaluate_paths(
    classmap: Path | str,
    truth: Path | str,
    *,
    class_field: str = "class_id",
    code_map: CodeMapSpec | CodeMap | None = None,
    workdir: Path,
    date: DateChoice = None,
    regions: Path | None = None,
    region_field: str = "name",
) -> Evaluation:
    """Compare a class map with reference labels, overall and per region.

    Args:
        classmap: The class map store.
        truth: Labels store, class-id GeoTIFF or vector file (see `eoseg.labels.open_truth`).
        class_field: Class field of a vector truth.
        code_map: Translation of the truth's codes or names to the map's classes.
        workdir: Folder for the truth rasterized onto the map's grid.
        date: The date of a multi-date class map.
        regions: A regions layer (vector file); pixels are assigned by their centre.
        region_field: The layer's field naming each region.

    Raises:
        NoOverlapError: No pixel is valid in both rasters.
        See `eoseg.regions.read_regions` for a bad regions layer.
    """
    ds = select_date(open_classmap(classmap), date, purpose="the truth is compared with one date")
    schema = ClassSchema.from_dict(ds.attrs["classes"])
    grid = grid_of(ds, f"class map {classmap}")
    layer = None if regions is None else read_regions(regions, region_field, grid)
    mapping = None if code_map is None else load_code_map(code_map, schema)
    reference = open_truth(
        truth, classmap, class_field=class_field, schema=schema, code_map=mapping, workdir=workdir
    )
    check_same_grid(
        grid,
        grid_of(reference, f"--truth {truth}"),
        what=f"--truth {truth}",
        on=f"the class map {classmap}",
        fix="give the truth as a GeoTIFF or vector file (evaluate puts those on the map's "
        f"grid), or rasterize it onto the map (eoseg rasterize SOURCE --cube {classmap})",
    )
    pred = ds["class"]
    model = {k: ds.attrs[k] for k in MODEL_ATTRS if k in ds.attrs}
    if layer is None:
        accuracy = evaluate(pred, reference, schema)
        return Evaluation(accuracy, {}, None, schema, pred, reference, model)
    chunks = pred.chunks if pred.chunks is not None else tuple((s,) for s in pred.shape)
    n = len(layer.names)
    # Pixels outside every region (index -1) go to an extra last bucket: one pass over the
    # tiles gives the whole map's matrix (the sum) and each region's.
    raster = regions_raster(layer, grid, chunks) % (n + 1)
    per_region = confusion_by_region(pred.data, reference.data, raster, len(schema), n + 1)
    accuracy = report_from_confusion(per_region.sum(axis=0), schema.names)
    by_name: dict[str, AccuracyReport | None] = {}
    for name, cm in zip(layer.names, per_region[:n], strict=True):
        try:
            by_name[name] = report_from_confusion(cm, schema.names)
        except NoOverlapError:
            log.info("region %r holds no pixel valid in both map and truth", name)
            by_name[name] = None
    return Evaluation(accuracy, by_name, region_field, schema, pred, reference, model)
