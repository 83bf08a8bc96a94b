"""``eoseg predict``, ``export``, ``evaluate`` and ``query``: maps and what they say."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

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

if TYPE_CHECKING:
    from eoseg.models.accel import Precision

DateOpt = Annotated[
    str | None,
    typer.Option(
        "--date",
        help="Date of a multi-date class map (from a per-date model on a --by-date cube): "
        "an ISO day (2024-06-12), a prefix naming one date (2024-06) or an index (0, -1).",
        show_default=False,
    ),
]


RegionsOpt = Annotated[
    Path | None,
    typer.Option(
        "--regions",
        help="Regions layer (vector file, e.g. states or biomes): one result per region.",
        show_default=False,
    ),
]
RegionFieldOpt = Annotated[
    str, typer.Option("--region-field", help="Field of --regions naming each region.")
]


def predict(
    cube: Annotated[Path, typer.Option("--cube", help="Cube to map.")],
    model: Annotated[Path, typer.Option("--model", help="Model folder (weights + model card).")],
    out: Annotated[Path, typer.Option("--out", help="Class map store to write.")],
    chip_size: Annotated[
        int | None,
        typer.Option(
            "--chip-size",
            help="Side of the chips the network predicts (px), a multiple of 2**depth; "
            "default: the model card's (larger than the training chip where the network "
            "is fully convolutional).",
            show_default=False,
        ),
    ] = None,
    overlap: Annotated[
        int | None,
        typer.Option(
            "--overlap",
            help="Pixels neighbouring chips share and blend, 0..chip/2 (chip/2: every pixel "
            "computed four times); default: the model card's.",
            show_default=False,
        ),
    ] = None,
    precision: Annotated[
        str,
        typer.Option(
            help="auto (bf16 on a GPU or a CPU that computes bf16 natively, else fp32), "
            "bf16 or fp32."
        ),
    ] = "auto",
    probabilities: Annotated[
        bool,
        typer.Option("--probabilities", help="Also write each class's probability (uint8, x 255)."),
    ] = False,
    contexts: Annotated[
        str | None,
        typer.Option(
            help="Contexts to fuse, as multiples of the chip's extent, e.g. 1,2,4 "
            "(default: the model card's choice; one context for a model without fusion "
            "weights).",
            show_default=False,
        ),
    ] = None,
    scheduler: SchedulerOpt = None,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Predict a seamless class map, tile by tile, with smooth overlap blending.

    Chips of --chip-size px lie on one lattice of the whole grid, every chip - overlap px,
    and blend over their --overlap: tiles never show seams, and a run resumed after a
    crash keeps its tiles only if its settings are the same.

    The model card says how it reads the cube's dates: a median model makes one (y, x)
    map; a per-date model (trained on a --by-date cube) maps every date into a
    (time, y, x) class map on the cube's dates, e.g. one map per month.
    """
    from eoseg.cluster import local_workers
    from eoseg.contexts import parse_contexts
    from eoseg.predict import PredictOptions, prepare_predict, run_predict

    def body() -> None:
        # Bad input (cube, model, output, options) is refused before the cluster starts.
        options = PredictOptions(
            chip_size, overlap, cast("Precision", precision), probabilities,
            parse_contexts(contexts),
        )  # fmt: skip
        job = prepare_predict(
            cube, model, out, overwrite=overwrite, run_id=new_run_id(), options=options
        )
        # A local cluster has no more workers than tiles: the cores go to torch threads.
        workers = local_workers(len(job.tiles))
        with (
            dask_client(scheduler, n_workers=workers) as client,
            console.progress_bar("predict") as bar,
        ):
            result = run_predict(job, client=client, progress=bar)
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
    date: DateOpt = None,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Export a class map as COG (with overviews and colours), polygons and a quicklook.

    A multi-date class map exports the --date given, or every date: {date} in a path
    becomes each date's ISO day (one file per date), and polygons without {date} go to
    one file with a date column:

      eoseg export monthly.zarr --cog 'map_{date}.tif' --polygons polygons.parquet
    """
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
            date=date,
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
    date: DateOpt = None,
    report_dir: Annotated[
        Path | None,
        typer.Option(
            "--report",
            help="Also write a report into this folder: report.md, report.html (self-"
            "contained) and report.json, with the confusion heatmap, per-class chart, map "
            "beside the truth and mapped areas.",
            show_default=False,
        ),
    ] = None,
    regions: RegionsOpt = None,
    region_field: RegionFieldOpt = "name",
    json_out: JsonOpt = False,
) -> None:
    """Accuracy of a class map: overall, user's/producer's accuracy, F1, IoU, mIoU.

    mIoU is given over the classes in the reference or the map, over the classes in
    the reference, and over all classes; quantity and allocation disagreement
    (Pontius and Millones 2011) split the errors into wrong proportions and wrong
    places. With --regions, one table per region (pixels assigned by their centre).

    A multi-date class map is compared with the truth on one --date.

    Truth in another nomenclature (e.g. CORINE codes) is translated with --class-map:

      eoseg evaluate map.zarr --truth clc.gpkg --class-field code --class-map clc.toml
    """
    from eoseg.evaluation import evaluate_paths
    from eoseg.metrics import format_report
    from eoseg.outputs import scratch_dir

    def body() -> None:
        if report_dir is not None:
            from eoseg.report import check_report_dir

            check_report_dir(report_dir)
        # Beside the map when it can be written (same disk); a read-only map is still read.
        scratch = scratch_dir(classmap.parent)
        with tempfile.TemporaryDirectory(prefix=".eoseg-truth-", dir=scratch) as tmp:
            result = evaluate_paths(
                classmap,
                truth,
                class_field=class_field,
                class_map=class_map,
                workdir=Path(tmp),
                date=date,
                regions=regions,
                region_field=region_field,
            )
            doc = result.to_dict()
            if report_dir is not None:
                from eoseg.report import write_report

                sources = {"class map": str(classmap), "truth": str(truth)}
                doc["report"] = write_report(
                    report_dir, result, title=classmap.name, sources=sources
                )
        if json_out:
            console.emit_json(doc)
            return
        console.stdout.print(format_report(result.accuracy))
        for name, scores in result.regions.items():
            if scores is not None:
                console.stdout.print(format_report(scores, title=f"Accuracy in {name}"))
        if report_dir is not None:
            console.stdout.print(f"report: {doc['report']['html']}")

    guard(body)


def query(
    classmap: Annotated[Path, typer.Argument(help="Class map store.")],
    aoi: Annotated[
        str,
        typer.Option(
            "--aoi", help="GeoJSON/GeoPackage polygon, or minx,miny,maxx,maxy in EPSG:4326."
        ),
    ],
    date: DateOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Area of each class (km², on the ellipsoid) inside an area of interest.

    A multi-date class map gives the areas of every date (a time series, under
    "dates"), or of one --date.
    """
    from eoseg.dates import date_labels
    from eoseg.predict import open_classmap
    from eoseg.publish import query_areas, query_areas_by_date

    def body() -> None:
        if date is None and len(date_labels(open_classmap(classmap))) > 1:
            by_date = query_areas_by_date(classmap, aoi)
            doc = {"dates": {day: areas.to_dict() for day, areas in by_date.items()}}
        else:
            doc = query_areas(classmap, aoi, date=date).to_dict()
        if json_out:
            console.emit_json(doc)
        else:
            console.stdout.print(console.key_value_table("class areas (km²)", flatten(doc)))

    guard(body)
