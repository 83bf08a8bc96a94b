"""``eoseg predict``, ``export``, ``evaluate`` and ``query``: maps and what they say."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer

from eoseg import console
from eoseg.cli.common import (
    JsonOpt,
    OverwriteOpt,
    SchedulerOpt,
    dask_client,
    flatten,
    guard,
    new_run_id,
    report,
)


def predict(
    cube: Annotated[Path, typer.Option("--cube", help="Cube to map.")],
    model: Annotated[Path, typer.Option("--model", help="Model folder (weights + model card).")],
    out: Annotated[Path, typer.Option("--out", help="Class map store to write.")],
    scheduler: SchedulerOpt = None,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Predict a seamless class map, tile by tile, with smooth overlap blending."""
    from eoseg.predict import predict as run

    def body() -> None:
        with dask_client(scheduler) as client, console.progress_bar("predict") as bar:
            result = run(
                cube,
                model,
                out,
                client=client,
                overwrite=overwrite,
                run_id=new_run_id(),
                progress=bar,
            )
        doc = result.to_dict()
        report("predict", doc, json_out)

    guard(body)


def export(
    classmap: Annotated[Path, typer.Argument(help="Class map store.")],
    cog: Annotated[Path | None, typer.Option(help="Cloud-Optimized GeoTIFF to write.")] = None,
    polygons: Annotated[
        Path | None, typer.Option(help="Polygons: .parquet, .gpkg or .geojson.")
    ] = None,
    quicklook: Annotated[Path | None, typer.Option(help="Quicklook PNG with legend.")] = None,
    simplify: Annotated[
        float | None, typer.Option(help="Polygon simplification tolerance (map units).")
    ] = None,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Export a class map as COG (with overviews and colours), polygons and a quicklook."""
    from eoseg.publish import export_classmap

    def body() -> None:
        if not (cog or polygons or quicklook):
            from eoseg.errors import InvalidParameterError

            raise InvalidParameterError(
                "nothing to export: give --cog FILE, --polygons FILE and/or --quicklook FILE"
            )
        doc = export_classmap(
            classmap,
            cog=cog,
            polygons=polygons,
            quicklook=quicklook,
            simplify=simplify,
            overwrite=overwrite,
        )
        report("export", doc, json_out)

    guard(body)


def evaluate(
    classmap: Annotated[Path, typer.Argument(help="Class map store.")],
    truth: Annotated[
        Path, typer.Option("--truth", help="Labels store, class-id GeoTIFF or vector.")
    ],
    class_field: Annotated[
        str,
        typer.Option(
            help="Class field when truth is a vector: class ids, or class names of the "
            "map's classes."
        ),
    ] = "class_id",
    class_map: Annotated[
        str | None,
        typer.Option(
            "--class-map",
            help="Translate the truth's class field values or raster codes to the map's "
            "classes: a TOML/JSON file or inline '311=forest,511=water' (as for rasterize).",
            show_default=False,
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Accuracy of a class map: overall accuracy, per-class precision/recall/F1/IoU, mIoU.

    Truth in another nomenclature (e.g. CORINE codes) is translated with --class-map:

      eoseg evaluate map.zarr --truth clc.gpkg --class-field code --class-map clc.toml
    """
    from eoseg.metrics import format_report
    from eoseg.publish import evaluate_classmap

    def body() -> None:
        with tempfile.TemporaryDirectory(prefix=".eoseg-truth-", dir=classmap.parent) as tmp:
            accuracy = evaluate_classmap(
                classmap, truth, class_field=class_field, class_map=class_map, workdir=Path(tmp)
            )
        if json_out:
            console.emit_json(accuracy.to_dict())
        else:
            console.stdout.print(format_report(accuracy))

    guard(body)


def query(
    classmap: Annotated[Path, typer.Argument(help="Class map store.")],
    aoi: Annotated[
        str,
        typer.Option(
            "--aoi", help="GeoJSON/GeoPackage polygon, or minx,miny,maxx,maxy in EPSG:4326."
        ),
    ],
    json_out: JsonOpt = False,
) -> None:
    """Area of each class (km², on the ellipsoid) inside an area of interest."""
    from eoseg.publish import query_areas

    def body() -> None:
        areas = query_areas(classmap, aoi)
        doc = areas.to_dict()
        if json_out:
            console.emit_json(doc)
        else:
            console.stdout.print(console.key_value_table("class areas (km²)", flatten(doc)))

    guard(body)
