"""Mapping flow: a mapping run from scenes to a published version of the class map.

Ingest (when the cube is not there yet, or ``reingest``: a STAC API search or static
catalogs, over ``area`` and ``period``), predict, export, evaluate, compute class areas
and publish the map as a new version of a product repository (with ``product``). Each
stage is one task over the library; tile work runs on the Dask cluster at ``scheduler``.
A killed run publishes nothing, and the next run resumes its tiles.

The predict options (chip size, overlap, precision, probabilities, contexts) are flow
parameters; one left ``None`` takes the library's default (`eoseg.inference.PredictOptions`,
where the card's choice applies), so a deployment states only what it changes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_image_artifact, create_markdown_artifact
from prefect.runtime import flow_run

from eoseg.cluster import connect
from eoseg.dates import DATE_FIELD, date_labels
from eoseg.evaluation import evaluate_paths
from eoseg.grid import DEFAULT_TILE_SIZE
from eoseg.inference import PredictOptions
from eoseg.models.accel import Precision
from eoseg.outputs import scratch_dir
from eoseg.predict import open_classmap, predict
from eoseg.publish import export_classmap, query_areas, query_areas_by_date
from eoseg.registry import fetch_model
from eoseg.report import write_report
from eoseg.storage import location, resolve
from eoseg.version_publish import publish_classmap
from flows.ingest import ingest_task, search_task


@task(name="predict", retries=1)
def predict_task(
    cube: str,
    model: str,
    out: str,
    *,
    scheduler: str | None,
    overwrite: bool = False,
    run_id: str = "",
    options: PredictOptions | None = None,
) -> dict[str, Any]:
    """Tiled inference on the cluster; an interrupted run resumes its missing tiles."""
    with connect(scheduler, model=True) as client:
        result = predict(
            location(cube),
            Path(model),
            location(out),
            client=client,
            overwrite=overwrite,
            run_id=run_id,
            options=options,
        )
    return result.to_dict()


def predict_options(
    *,
    chip_size: int | None = None,
    overlap: int | None = None,
    precision: Precision | None = None,
    probabilities: bool | None = None,
    contexts: list[int] | None = None,
) -> PredictOptions:
    """`PredictOptions` from flow parameters: those given, the library's default for each
    left ``None``."""
    given: dict[str, Any] = {
        "chip_size": chip_size,
        "overlap": overlap,
        "precision": precision,
        "probabilities": probabilities,
        "contexts": tuple(contexts) if contexts is not None else None,
    }
    return PredictOptions(**{k: v for k, v in given.items() if v is not None})


@task(name="export")
def export_task(
    classmap: str, outdir: str, *, overwrite: bool = False, date: str | None = None
) -> dict[str, Any]:
    """COG, polygons (GeoParquet folder, one file per tile row) and a quicklook PNG of the
    class map.

    A multi-date map exports ``date``, or each date (``classmap_<day>.tif``, ...; the
    polygons of every date in one table with a ``date`` column).
    """
    out = Path(outdir)
    each = date is None and len(date_labels(open_classmap(classmap))) > 1
    suffix = f"_{DATE_FIELD}" if each else ""
    doc = export_classmap(
        location(classmap),
        cog=out / f"classmap{suffix}.tif",
        polygons=out / "polygons.parquet",
        quicklook=out / f"quicklook{suffix}.png",
        overwrite=overwrite,
        date=date,
    )
    return {k: _jsonable(v) for k, v in doc.items()}


@task(name="evaluate")
def evaluate_task(
    classmap: str,
    truth: str,
    *,
    class_field: str = "class_id",
    date: str | None = None,
    report_dir: str | None = None,
) -> dict[str, Any]:
    """Accuracy against reference labels; of each date of a multi-date map (under
    ``dates``) unless ``date`` names one. With ``report_dir``, the Markdown/HTML report
    of each (`eoseg.report`; per date in ``report_dir/<date>``), its paths under
    ``report``."""
    days = date_labels(open_classmap(classmap))
    picks: list[str | None] = list(days) if date is None and len(days) > 1 else [date]
    reports = {}
    scratch = scratch_dir(Path(classmap).parent)  # beside the map, if it can be written
    with tempfile.TemporaryDirectory(dir=scratch, prefix=".truth-") as tmp:
        for pick in picks:
            result = evaluate_paths(
                Path(classmap), Path(truth), class_field=class_field, workdir=Path(tmp), date=pick
            )
            doc = result.to_dict()
            if report_dir:
                folder = Path(report_dir) / (pick or "") if len(picks) > 1 else Path(report_dir)
                sources = {"class map": classmap, "truth": truth}
                paths = write_report(folder, result, title=Path(classmap).name, sources=sources)
                doc["report"] = {k: str(v) for k, v in paths.items()}
                create_markdown_artifact(
                    paths["markdown"].read_text(),
                    key="accuracy-report",
                    description=f"accuracy of {Path(classmap).name} {pick or ''}".strip(),
                )
            reports[pick] = doc
    return reports[date] if picks == [date] else {"dates": reports}


@task(name="areas")
def areas_task(classmap: str, aoi: str | None = None, date: str | None = None) -> dict[str, Any]:
    """Class areas in km² on the ellipsoid (whole map, or inside an AOI); of each date of a
    multi-date map (under ``dates``) unless ``date`` names one."""
    if date is None and len(date_labels(open_classmap(classmap))) > 1:
        by_date = query_areas_by_date(location(classmap), aoi)
        return {"dates": {day: areas.to_dict() for day, areas in by_date.items()}}
    return query_areas(location(classmap), aoi, date=date).to_dict()


def _jsonable(value: Any) -> Any:
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return str(value) if isinstance(value, Path) else value


@task(name="publish", retries=1, retry_delay_seconds=10)
def publish_task(
    classmap: str, product: str, *, scheduler: str | None, tag: str | None = None
) -> dict[str, Any]:
    """Publish the class map as the product's new version (only changed tiles are written;
    nothing is visible before the commit, so a failed try leaves the product as it was)."""
    if not scheduler:  # the tile copy is light: threads here rather than a new local cluster
        return publish_classmap(location(classmap), location(product), tag=tag).to_dict()
    with connect(scheduler) as client:
        result = publish_classmap(location(classmap), location(product), tag=tag, client=client)
    return result.to_dict()


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
    date: str | None = None,
    chip_size: int | None = None,
    overlap: int | None = None,
    precision: Precision | None = None,
    probabilities: bool | None = None,
    contexts: list[int] | None = None,
    area: tuple[float, float, float, float] | None = None,
    period: str | None = None,
    sensors: list[str] | None = None,
    sources: list[str] | None = None,
    stac_api: str | None = None,
    collections: list[str] | None = None,
    max_cloud: float | None = None,
    tile_size: int | None = None,
    reingest: bool = False,
    product: str | None = None,
    tag: str | None = None,
) -> dict[str, Any]:
    """A mapping run: (ingest), predict, export, evaluate (if ``truth``), areas, (publish).

    A per-date model maps every date of the cube; exports, accuracy and areas are then
    of each date, or of ``date`` (ISO day, a prefix naming one, or an index) when given.

    ``model`` is a model folder, or with ``registry`` (a folder or fsspec URL) a model
    name whose production version (or ``version``) is used, so a scheduled run picks
    up a newly promoted model without changing its deployment.

    ``chip_size``, ``overlap``, ``precision``, ``probabilities`` and ``contexts`` are
    ``eoseg predict``'s options (`eoseg.inference.PredictOptions`); ``None`` keeps the
    default (the model card's choice where it has one).

    Ingest: when ``cube`` does not exist yet (or ``reingest``) and scenes are named, the
    run first ingests them into ``cube``: a search of the STAC API ``stac_api``
    (``collections``, ``area`` as a lon/lat box, ``period`` as an RFC 3339 interval such
    as ``2026-06-01/2026-08-31``, ``max_cloud`` in %) and/or the static catalogs or
    files ``sources``, keeping scenes of ``sensors`` and clipping the grid to ``area``;
    ``tile_size`` sets the cube's tiles (the library's default when ``None``).

    Publish: with ``product`` (a product repository, folder or URL) the class map becomes
    the product's new version, tagged ``tag`` if given; the run summary names it. A run
    that is killed publishes nothing; the next one resumes the tiles it left (give
    ``overwrite`` so that each run replaces the working class map ``out``).
    """
    run_id = str(flow_run.id or "")
    result: dict[str, Any] = {"run_id": run_id, "cube": cube}
    scenes = _scenes(cube, sources, stac_api, collections, area, period, max_cloud, reingest)
    if scenes:
        result["ingest"] = ingest_task(
            scenes,
            cube,
            scheduler=scheduler,
            bbox=area,
            sensors=sensors,
            overwrite=reingest,
            run_id=run_id,
            tile_size=tile_size or DEFAULT_TILE_SIZE,
        )
    if registry:
        model = str(fetch_model(registry, model, version))
    options = predict_options(
        chip_size=chip_size,
        overlap=overlap,
        precision=precision,
        probabilities=probabilities,
        contexts=contexts,
    )
    pred = predict_task(
        cube, model, out, scheduler=scheduler, overwrite=overwrite, run_id=run_id, options=options
    )
    result.update(predict=pred, model=model)
    result["export"] = export_task(
        pred["classmap"], str(Path(out).parent), overwrite=overwrite, date=date
    )
    if truth:
        report_dir = str(Path(out).parent / "report")
        result["evaluate"] = evaluate_task(
            pred["classmap"], truth, date=date, report_dir=report_dir
        )
    result["areas"] = areas_task(pred["classmap"], date=date)
    if product:
        result["publish"] = publish_task(pred["classmap"], product, scheduler=scheduler, tag=tag)
    create_markdown_artifact(
        run_summary(result), key="mapping-run", description=f"mapping run of {cube}"
    )
    if quicklook := result["export"].get("quicklook"):
        create_image_artifact(
            image_url=_as_url(quicklook), key="mapping-quicklook", description=f"{out} quicklook"
        )
    return result


def _as_url(where: str) -> str:
    """An fsspec URL as given; a local path as a ``file://`` URL."""
    return where if "://" in where else Path(where).resolve().as_uri()


def _scenes(
    cube: str,
    sources: list[str] | None,
    stac_api: str | None,
    collections: list[str] | None,
    area: tuple[float, float, float, float] | None,
    period: str | None,
    max_cloud: float | None,
    reingest: bool,
) -> list[str]:
    """What to ingest into ``cube`` (empty when it is there and no re-ingest is asked):
    the static ``sources``, and the catalog saved from a search of ``stac_api``."""
    if not (sources or stac_api) or (resolve(cube).exists() and not reingest):
        return []
    scenes = list(sources or [])
    if stac_api:
        items = str(cube).rstrip("/").removesuffix(".zarr") + ".items"
        scenes.append(
            search_task(
                stac_api,
                items,
                collections=list(collections or []),
                bbox=area,
                dates=period,
                max_cloud=max_cloud,
            )
        )
    return scenes


def run_summary(result: dict[str, Any]) -> str:
    """The run's Markdown summary: tiles and timing, model, accuracy, class areas, and
    where the exports and the report are."""
    pred = result["predict"]
    lines = [
        f"# Mapping run {result.get('run_id') or pred.get('run_id', '')}",
        "",
        f"- class map: `{pred['classmap']}`; model: `{result['model']}`",
        f"- tiles: {pred['tiles']} ({pred.get('tiles_written', 0)} written, the rest "
        f"kept from an earlier run); {pred['seconds']} s, {pred.get('mpx_per_s')} Mpx/s",
        f"- exports: {', '.join(f'`{v}`' for k, v in result['export'].items() if k in _FILES)}",
    ]
    if result.get("ingest"):
        ing = result["ingest"]
        lines.insert(
            2,
            f"- ingested `{ing['cube']}`: {len(ing['scenes'])} scenes used, "
            f"{len(ing['skipped'])} skipped; tiles {ing['tiles_written']} written of "
            f"{ing['tiles']}; {ing['seconds']} s",
        )
    if result.get("publish"):
        pub = result["publish"]
        what = "published as version" if pub["committed"] else "unchanged: still version"
        tag = f" (tag `{pub['tag']}`)" if pub.get("tag") else ""
        lines.append(
            f"- product `{pub['repository']}`: {what} `{pub['version']}`{tag}, after "
            f"`{pub['parent']}`; tiles {pub['tiles_written']} written, "
            f"{pub['tiles_unchanged']} unchanged, {pub['tiles_recorded']} re-recorded"
        )
    for day, acc in _by_date(result.get("evaluate")):
        report = acc.get("report", {}).get("html", "")
        lines.append(
            f"- accuracy{day}: OA {acc['overall_accuracy']:.3f}, mIoU {acc['miou']:.3f}"
            + (f" (report: `{report}`)" if report else "")
        )
    for day, areas in _by_date(result["areas"]):
        lines += ["", f"## Class areas{day} (km²)", "", "| class | km² | share |", "|---|---|---|"]
        for c in areas["classes"]:
            share = "" if c["fraction"] is None else f"{c['fraction']:.3f}"
            lines.append(f"| {c['name']} | {c['km2']:.4f} | {share} |")
        lines.append(f"| nodata | {areas['nodata_km2']:.4f} | |")
    return "\n".join(lines) + "\n"


_FILES = ("cog", "confidence_cog", "polygons", "quicklook")


def _by_date(doc: dict[str, Any] | None) -> list[tuple[str, dict[str, Any]]]:
    """``[(" on DAY", doc), ...]`` of a per-date document, ``[("", doc)]`` of one."""
    if doc is None:
        return []
    if "dates" in doc:
        return [(f" on {day}", d) for day, d in doc["dates"].items()]
    return [("", doc)]
