"""``eoseg predict``, ``export``, ``evaluate`` and ``query``: maps and what they say."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from eoseg.cli import console
from eoseg.cli.common import (
    ClassMapAliasOpt,
    JsonOpt,
    OverwriteOpt,
    SchedulerOpt,
    code_map_option,
    dask_client,
    guard,
    new_run_id,
    report,
)
from eoseg.cli.predict_options import (
    PRECISION_DEFAULT,
    ChipSizeOpt,
    ContextsOpt,
    OverlapOpt,
    PrecisionOpt,
    ProbabilitiesOpt,
    predict_options,
)

if TYPE_CHECKING:
    from rich.table import Table

    from eoseg.area_table import AreaTable

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
    cube: Annotated[str, typer.Option("--cube", help="Cube to map (path or URL, s3://...).")],
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="Model folder (weights + model card; path or URL, e.g. a registry version "
            "s3://bucket/models/NAME/VERSION).",
        ),
    ],
    out: Annotated[str, typer.Option("--out", help="Class map store to write (path or URL).")],
    chip_size: ChipSizeOpt = None,
    overlap: OverlapOpt = None,
    precision: PrecisionOpt = PRECISION_DEFAULT,
    probabilities: ProbabilitiesOpt = False,
    contexts: ContextsOpt = None,
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
    from eoseg.predict import prepare_predict, run_predict
    from eoseg.reachability import check_reachable
    from eoseg.storage import location, resolve

    def body() -> None:
        # Bad input (cube, model, output, options) is refused before the cluster starts.
        options = predict_options(chip_size, overlap, precision, probabilities, contexts)
        check_reachable({"--cube": location(cube), "--model": location(model),
                         "--out": location(out)})  # fmt: skip
        # A model on object storage is downloaded for this run (workers load a local folder).
        with resolve(model, "--model").reading() as model_dir:
            job = prepare_predict(
                location(cube),
                model_dir,
                location(out),
                overwrite=overwrite,
                run_id=new_run_id(),
                options=options,
            )
            # A local cluster computes no more tiles at once than there are: one tile
            # alone gets every core through torch's threads.
            with (
                dask_client(scheduler, tasks=len(job.tiles), model=True) as client,
                console.progress_bar("predict") as bar,
            ):
                result = run_predict(job, client=client, progress=bar)
        doc = result.to_dict()
        report("predict", doc, json_out)

    guard(body)


def export(
    classmap: Annotated[str, typer.Argument(help="Class map store (path or URL, s3://...).")],
    cog: Annotated[
        str | None,
        typer.Option(
            help="Class COG to write (ids, nodata 255, colours, mode overviews); path or URL."
        ),
    ] = None,
    confidence_cog: Annotated[
        str | None,
        typer.Option(
            "--confidence-cog",
            help="Confidence COG to write (top-class probability x 255, nodata 0).",
            show_default=False,
        ),
    ] = None,
    polygons: Annotated[
        str | None,
        typer.Option(
            help="Polygons: .parquet (a folder of GeoParquet files, one per tile row), "
            ".gpkg or .geojson (small areas); path or URL."
        ),
    ] = None,
    quicklook: Annotated[
        str | None, typer.Option(help="Quicklook PNG with legend (path or URL).")
    ] = None,
    simplify: Annotated[
        float | None,
        typer.Option(
            metavar="M",
            help="Simplify the polygons with this tolerance in metres, keeping shared edges "
            "(on any map CRS). Default: pixel outlines, which rasterize back to the map.",
            show_default=False,
        ),
    ] = None,
    min_area: Annotated[
        float | None,
        typer.Option(
            "--min-area",
            metavar="M2",
            help="Merge polygons smaller than this (m², on the ellipsoid) into their "
            "largest neighbour; polygons with no neighbour stay. Default: keep all.",
            show_default=False,
        ),
    ] = None,
    date: DateOpt = None,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Export a class map as COGs (classes, confidence), polygons and a quicklook.

    Each COG and polygon file gets a QGIS style (NAME.qml beside it; inside a GeoPackage),
    so QGIS shows class colours and names on open.

    A multi-date class map exports the --date given, or every date: {date} in a path
    becomes each date's ISO day (one file per date), and polygons without {date} go to
    one file with a date column:

      eoseg export monthly.zarr --cog 'map_{date}.tif' --polygons polygons.parquet
    """
    from eoseg.publish import export_classmap
    from eoseg.reachability import check_reachable
    from eoseg.storage import location

    def body() -> None:
        if not (cog or confidence_cog or polygons or quicklook):
            from eoseg.errors import InvalidParameterError

            raise InvalidParameterError(
                "nothing to export: give --cog FILE, --confidence-cog FILE, --polygons FILE "
                "and/or --quicklook FILE"
            )
        given = {"CLASSMAP": classmap, "--cog": cog, "--confidence-cog": confidence_cog,
                 "--polygons": polygons, "--quicklook": quicklook}  # fmt: skip
        where = {flag: location(value) if value else None for flag, value in given.items()}
        check_reachable(where)
        with console.progress_bar("export") as bar, console.dask_progress(bar):
            doc = export_classmap(
                location(classmap),
                cog=where["--cog"],
                confidence_cog=where["--confidence-cog"],
                polygons=where["--polygons"],
                quicklook=where["--quicklook"],
                simplify=simplify,
                min_area=min_area,
                overwrite=overwrite,
                date=date,
            )
        report("export", doc, json_out)

    guard(body)


def evaluate(
    classmap: Annotated[str, typer.Argument(help="Class map store (path or URL).")],
    truth: Annotated[
        str,
        typer.Option("--truth", help="Labels store, class-id GeoTIFF or vector (path or URL)."),
    ],
    class_field: Annotated[
        str,
        typer.Option(
            help="Class field when truth is a vector: class ids, or class names of the "
            "map's classes."
        ),
    ] = "class_id",
    code_map: Annotated[
        str | None,
        typer.Option(
            "--code-map",
            help="Translate the truth's class field values or raster codes to the map's "
            "classes: a TOML/JSON file or inline '311=forest,511=water' (as for rasterize).",
            show_default=False,
        ),
    ] = None,
    date: DateOpt = None,
    report_dir: Annotated[
        str | None,
        typer.Option(
            "--report",
            help="Also write a report into this folder (path or URL): report.md, "
            "report.html (self-contained) and report.json, with the confusion heatmap, "
            "per-class chart, map beside the truth and mapped areas.",
            show_default=False,
        ),
    ] = None,
    regions: RegionsOpt = None,
    region_field: RegionFieldOpt = "name",
    json_out: JsonOpt = False,
    class_map: ClassMapAliasOpt = None,
) -> None:
    """Accuracy of a class map: overall, user's/producer's accuracy, F1, IoU, mIoU.

    mIoU is given over the classes in the reference or the map, over the classes in
    the reference, and over all classes; quantity and allocation disagreement
    (Pontius and Millones 2011) split the errors into wrong proportions and wrong
    places. With --regions, one table per region (pixels assigned by their centre).

    A multi-date class map is compared with the truth on one --date.

    Truth in another nomenclature (e.g. CORINE codes) is translated with --code-map:

      eoseg evaluate map.zarr --truth clc.gpkg --class-field code --code-map clc.toml
    """
    from eoseg.evaluation import evaluate_paths
    from eoseg.metrics import format_report
    from eoseg.outputs import scratch_dir
    from eoseg.reachability import check_reachable
    from eoseg.storage import location

    def body() -> None:
        mapped, reference = location(classmap), location(truth)
        report_at = location(report_dir) if report_dir else None
        check_reachable({"CLASSMAP": mapped, "--truth": reference, "--report": report_at})
        if isinstance(report_at, Path):
            from eoseg.report import check_report_dir

            check_report_dir(report_at)
        # Beside the map when it can be written (same disk); a read-only map is still read.
        scratch = scratch_dir(mapped.parent) if isinstance(mapped, Path) else None
        with (
            tempfile.TemporaryDirectory(prefix=".eoseg-truth-", dir=scratch) as tmp,
            console.progress_bar("evaluate") as bar,
            console.dask_progress(bar),
        ):
            result = evaluate_paths(
                mapped,
                reference,
                class_field=class_field,
                code_map=code_map_option(code_map, class_map),
                workdir=Path(tmp),
                date=date,
                regions=regions,
                region_field=region_field,
            )
            doc = result.to_dict()
            if report_at is not None:
                from eoseg.report import write_report_to

                sources = {"class map": str(mapped), "truth": str(reference)}
                doc["report"] = write_report_to(report_at, result, sources=sources)
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
    classmap: Annotated[
        str,
        typer.Argument(help="Class map store or product repository (path or URL, s3://...)."),
    ],
    aoi: Annotated[
        str | None,
        typer.Option(
            "--aoi",
            help="GeoJSON/GeoPackage polygon, or minx,miny,maxx,maxy in EPSG:4326; "
            "default: the whole map.",
            show_default=False,
        ),
    ] = None,
    regions: Annotated[
        Path | None,
        typer.Option(
            "--regions",
            help="Regions layer (vector file, e.g. states.gpkg): one row of areas per "
            "region; needs --region-field.",
            show_default=False,
        ),
    ] = None,
    region_field: Annotated[
        str | None,
        typer.Option(
            "--region-field", help="Attribute naming the regions (e.g. name).", show_default=False
        ),
    ] = None,
    date: DateOpt = None,
    version: Annotated[
        str,
        typer.Option(
            "--version",
            help="Version of a product repository (eoseg products): latest, a tag, an id "
            "or a number.",
        ),
    ] = "latest",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Also write the table: .csv or .parquet (one row per region, date and "
            "class) or .json.",
            show_default=False,
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Area of each class (km² on the ellipsoid) inside an AOI, per region, or everywhere.

    Border pixels count with the fraction of their area inside the AOI or region, so the
    class areas and nodata add up to the AOI's own area where the map covers it. A
    multi-date class map gives every date (a region x date table), or one --date. Only
    the map tiles the AOI or regions touch are read.

    A box in lon/lat, or a table per state written as CSV:

      eoseg query map.zarr --aoi 8.5,47.0,9.5,48.0

      eoseg query map.zarr --regions states.gpkg --region-field name --out areas.csv
    """
    from eoseg.area_table import write_table
    from eoseg.publish import query_table
    from eoseg.storage import location

    def body() -> None:
        with console.progress_bar("query") as bar:
            table = query_table(
                location(classmap),
                aoi=aoi,
                regions=regions,
                region_field=region_field,
                date=date,
                version=version,
                progress=bar,
            )
        if out is not None:
            write_table(table, out)
        if json_out:
            console.emit_json(table.to_dict())
        else:
            console.stdout.print(_rich_area_table(table))

    guard(body)


def _rich_area_table(table: AreaTable) -> Table:
    """One row per region and date: km² of each class, nodata and the total."""
    from rich.table import Table

    first = table.areas[0][0]
    out = Table(title="class areas (km²)")
    for name in ("region", "date"):
        out.add_column(name)
    for name in (*first.class_names, "nodata", "total", "AOI"):
        out.add_column(name, justify="right")
    for region, row in zip(table.regions, table.areas, strict=True):
        for date, a in zip(table.dates, row, strict=True):
            aoi = "" if a.aoi_km2 is None else f"{a.aoi_km2:.4f}"
            cells = [f"{v:.4f}" for v in (*a.class_km2, a.nodata_km2, a.total_km2)]
            out.add_row(region, date or "-", *cells, aoi)
    return out
