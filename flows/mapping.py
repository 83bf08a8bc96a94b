"""Mapping flow: predict a class map, export it, evaluate it and compute class areas."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from prefect import flow, task

from eoseg.cluster import connect
from eoseg.predict import predict
from eoseg.publish import evaluate_classmap, export_classmap, query_areas
from eoseg.registry import fetch_model


@task(name="predict", retries=1)
def predict_task(
    cube: str,
    model: str,
    out: str,
    *,
    scheduler: str | None,
    overwrite: bool = False,
    run_id: str = "",
) -> dict[str, Any]:
    """Tiled inference on the cluster; an interrupted run resumes its missing tiles."""
    with connect(scheduler) as client:
        result = predict(
            Path(cube), Path(model), Path(out), client=client, overwrite=overwrite, run_id=run_id
        )
    return result.to_dict()


@task(name="export")
def export_task(classmap: str, outdir: str, *, overwrite: bool = False) -> dict[str, Any]:
    """COG, polygons (GeoParquet) and a quicklook PNG of the class map."""
    out = Path(outdir)
    doc = export_classmap(
        Path(classmap),
        cog=out / "classmap.tif",
        polygons=out / "polygons.parquet",
        quicklook=out / "quicklook.png",
        overwrite=overwrite,
    )
    return {k: str(v) if isinstance(v, Path) else v for k, v in doc.items()}


@task(name="evaluate")
def evaluate_task(classmap: str, truth: str, *, class_field: str = "class_id") -> dict[str, Any]:
    """Accuracy report against reference labels."""
    with tempfile.TemporaryDirectory(dir=Path(classmap).parent, prefix=".truth-") as tmp:
        report = evaluate_classmap(
            Path(classmap), Path(truth), class_field=class_field, workdir=Path(tmp)
        )
    return report.to_dict()


@task(name="areas")
def areas_task(classmap: str, aoi: str | None = None) -> dict[str, Any]:
    """Class areas in km² on the ellipsoid (whole map, or inside an AOI)."""
    return query_areas(Path(classmap), aoi).to_dict()


@flow(name="eoseg-mapping")
def mapping_flow(
    cube: str,
    model: str,
    out: str,
    truth: str | None = None,
    scheduler: str | None = None,
    overwrite: bool = False,
    registry: str | None = None,
    version: str | None = None,
) -> dict[str, Any]:
    """Predict, export, evaluate (if ``truth``) and compute areas for one cube.

    ``model`` is a model folder, or with ``registry`` (a folder or fsspec URL) a model
    name whose production version (or ``version``) is used, so a scheduled run picks
    up a newly promoted model without changing its deployment.
    """
    if registry:
        model = str(fetch_model(registry, model, version))
    pred = predict_task(cube, model, out, scheduler=scheduler, overwrite=overwrite)
    result: dict[str, Any] = {"predict": pred, "model": model}
    result["export"] = export_task(pred["classmap"], str(Path(out).parent), overwrite=overwrite)
    if truth:
        result["evaluate"] = evaluate_task(pred["classmap"], truth)
    result["areas"] = areas_task(pred["classmap"])
    return result
