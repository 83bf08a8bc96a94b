"""The ``eoseg`` command line.

Each command is a thin layer over one library function: parse options, show progress,
print a table (or one JSON document with ``--json``), and turn bad input (`EosegError`)
into a one-paragraph message and exit status 2.
"""

from __future__ import annotations

import logging
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from eoseg import console
from eoseg.cli_models import models_app
from eoseg.errors import EosegError

T = TypeVar("T")

app = typer.Typer(
    name="eoseg",
    help=(
        "Map land cover from satellite imagery: ingest scenes into a cube, rasterize "
        "labels, train a U-Net, predict a seamless class map, export COG and polygons, "
        "evaluate accuracy and query class areas.\n\n"
        "Start with [bold]eoseg demo[/]: it runs the whole pipeline on a generated "
        "landscape, offline, in a few minutes."
    ),
    epilog=(
        "Examples:\n\n"
        "  eoseg demo --workdir eoseg-demo\n\n"
        "  eoseg ingest scenes/catalog.json --out cube.zarr --crs EPSG:32632 --resolution 10\n\n"
        "  eoseg rasterize osm.gpkg --cube cube.zarr --out osm.zarr\n\n"
        "  eoseg train --cube cube.zarr --labels osm.zarr --finetune-labels clean.zarr "
        "--out model\n\n"
        "  eoseg predict --cube cube.zarr --model model --out map.zarr\n\n"
        "  eoseg export map.zarr --cog map.tif --polygons map.parquet\n\n"
        "  eoseg query map.zarr --aoi 11.9,47.95,12.05,48.02 --json"
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Replace an existing output instead of refusing.")
]
SchedulerOpt = Annotated[
    str | None,
    typer.Option(
        "--scheduler",
        help="Dask scheduler address (tcp://host:8786). Default: a local cluster.",
        show_default=False,
    ),
]


def _guard(fn: Callable[[], T]) -> T:
    """Run a command body; bad input becomes a message and exit status 2."""
    try:
        return fn()
    except EosegError as exc:
        console.print_error(str(exc))
        raise typer.Exit(2) from None


@contextmanager
def _client(scheduler: str | None, workdir: Path | None = None) -> Iterator[Any]:
    from eoseg.cluster import connect

    _quiet_dask()
    with connect(scheduler, local_directory=workdir) as client:
        yield client


def _run_id() -> str:
    return uuid.uuid4().hex[:12]


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("eoseg").setLevel(logging.INFO if verbose else logging.WARNING)


def _quiet_dask() -> None:
    """Dask sets its loggers to INFO when imported; keep them quiet unless --verbose."""
    if logging.getLogger("eoseg").level > logging.INFO:
        for name in ("distributed", "dask"):
            logging.getLogger(name).setLevel(logging.WARNING)


@app.command()
def ingest(
    sources: Annotated[
        list[Path], typer.Argument(help="GeoTIFF/COG files, folders, or STAC JSON.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Cube store to write (a .zarr folder).")],
    crs: Annotated[
        str | None, typer.Option(help="Grid CRS, e.g. EPSG:32632. Default: first source's.")
    ] = None,
    resolution: Annotated[
        float | None, typer.Option(help="Pixel size in grid CRS units. Default: first source's.")
    ] = None,
    bbox: Annotated[
        str | None, typer.Option(help="Clip to minx,miny,maxx,maxy (EPSG:4326).")
    ] = None,
    tile_size: Annotated[
        int, typer.Option(help="Tile size in pixels: the unit of parallel work and resuming.")
    ] = 2048,
    chunk_size: Annotated[
        int | None,
        typer.Option(help="Inner Zarr chunk size; smaller than the tile makes tiles shards."),
    ] = None,
    composite: Annotated[
        str, typer.Option(help="Where scenes overlap: 'first' valid value, or 'median'.")
    ] = "first",
    by_date: Annotated[
        bool, typer.Option("--by-date", help="One time step per acquisition date.")
    ] = False,
    sensor: Annotated[
        list[str] | None,
        typer.Option(help="Keep only scenes of this sensor profile (repeatable)."),
    ] = None,
    scheduler: SchedulerOpt = None,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Ingest scenes into a cube: one grid, chunked by tile, in a Zarr v3 store.

    Scenes in other CRSs (other UTM zones, MODIS sinusoidal) are reprojected onto the
    grid; clouds and nodata are masked; where scenes overlap, the first valid value (in
    the order given) or the median of valid values is kept. A killed run, re-run, writes
    only the missing tiles. The report lists scenes that contributed nothing, and why.
    """
    from eoseg.cube import ingest as run
    from eoseg.grid import parse_bbox

    def body() -> None:
        box = parse_bbox(bbox) if bbox else None
        with _client(scheduler) as client, console.progress_bar("ingest") as bar:
            result = run(
                sources,
                out,
                crs=crs,
                resolution=resolution,
                bbox=box,
                tile_size=tile_size,
                chunk_size=chunk_size,
                composite=composite,  # type: ignore[arg-type]  # validated by ingest
                by_date=by_date,
                sensors=sensor,
                client=client,
                overwrite=overwrite,
                run_id=_run_id(),
                progress=bar,
            )
        doc = result.to_dict()
        _report("ingest", doc, json_out)

    _guard(body)


@app.command()
def rasterize(
    source: Annotated[
        Path,
        typer.Argument(
            help="Labels: a vector file with class ids (any CRS), a class-id GeoTIFF, or, "
            "with --classes, an OSM extract (.osm.pbf, .osm) or a vector file of OSM tag "
            "columns.",
            show_default=False,
        ),
    ],
    cube: Annotated[Path, typer.Option("--cube", help="Cube whose grid the labels take.")],
    out: Annotated[Path, typer.Option("--out", help="Labels store to write.")],
    class_field: Annotated[
        str, typer.Option(help="Vector field holding class ids 0..254.")
    ] = "class_id",
    classes: Annotated[
        Path | None,
        typer.Option(
            "--classes",
            help="Class schema (TOML or JSON). OSM features get the ids of its classes by "
            "their osm/buffer tag rules; class ids read from a file must lie in it.",
            show_default=False,
        ),
    ] = None,
    osm: Annotated[
        bool | None,
        typer.Option(
            "--osm/--no-osm",
            help="Read a vector file as OSM tags (--osm) or as class ids (--no-osm). "
            "Default: OSM for extracts and, with --classes, for files lacking --class-field.",
            show_default=False,
        ),
    ] = None,
    scheduler: SchedulerOpt = None,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Rasterize labels onto a cube's grid (uint8 class ids, 255 = ignore).

    Class ids come from a field of a vector file, from a class-id GeoTIFF, or from
    OpenStreetMap: with --classes, an OSM extract is classified by the schema's tag rules
    (a line with a buffer rule becomes a polygon reaching that many metres each side),
    only over the cube's footprint, and burnt with smaller areas on top of larger ones and
    roads on top. A killed run, re-run, writes only the missing tiles.

    Examples:

      eoseg rasterize osm.gpkg --cube cube.zarr --out osm.zarr

      eoseg rasterize region.osm.pbf --classes schema.toml --cube cube.zarr --out osm.zarr

      eoseg rasterize tags.parquet --classes schema.toml --osm --cube cube.zarr --out osm.zarr
    """
    from eoseg.classes import load_schema
    from eoseg.labels import rasterize_labels

    def body() -> None:
        schema = load_schema(classes) if classes is not None else None  # before any cluster
        with _client(scheduler) as client, console.progress_bar("rasterize") as bar:
            result = rasterize_labels(
                source,
                cube,
                out,
                class_field=class_field,
                classes=schema,
                osm=osm,
                client=client,
                overwrite=overwrite,
                run_id=_run_id(),
                progress=bar,
            )
        _report("rasterize", result.to_dict(), json_out)

    _guard(body)


@app.command()
def train(
    cube: Annotated[Path, typer.Option("--cube", help="Cube to train on.")],
    labels: Annotated[Path, typer.Option("--labels", help="Labels store (e.g. rasterized OSM).")],
    out: Annotated[Path, typer.Option("--out", help="Model folder to write.")],
    finetune_labels: Annotated[
        Path | None, typer.Option(help="Clean labels store to fine-tune on.")
    ] = None,
    classes: Annotated[
        Path | None,
        typer.Option(
            help="Class schema: TOML (with OSM tag rules) or JSON [{id,name,color}]. "
            "Default: generic names for the label ids."
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="TOML file of training options (any TrainConfig field, e.g. `epochs = 20`, "
            "`lr = 0.003`); the options below override it.",
        ),
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Pretraining epochs [10].")] = None,
    finetune_epochs: Annotated[int | None, typer.Option(help="Fine-tuning epochs [5].")] = None,
    chip_size: Annotated[int | None, typer.Option(help="Chip side in pixels [256].")] = None,
    base_width: Annotated[
        int | None, typer.Option(help="U-Net channels at full resolution [32].")
    ] = None,
    depth: Annotated[int | None, typer.Option(help="U-Net downsampling steps [4].")] = None,
    train_chips: Annotated[int | None, typer.Option(help="Chips sampled per stage [128].")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Chips per step [8].")] = None,
    noisy_loss: Annotated[
        str | None,
        typer.Option(help="Pretraining loss for noisy labels: ce, gce or bootstrap [ce]."),
    ] = None,
    context: Annotated[
        str | None, typer.Option(help="Bottleneck context module: none or aspp (dilated).")
    ] = None,
    balanced: Annotated[
        bool, typer.Option("--balanced", help="Weight classes by inverse frequency.")
    ] = False,
    elastic: Annotated[
        float | None, typer.Option(help="Elastic deformation in pixels (0 = off) [0].")
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="Torch device: cpu, cuda, cuda:N [cuda if present].")
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(help="auto (bf16 + channels-last on CUDA, fp32 on CPU), bf16 or fp32."),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed [0].")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Train a U-Net: pretrain on (noisy) labels, then fine-tune on clean ones if given.

    Fine-tuning starts with the encoder frozen at a lower learning rate, then unfreezes it.
    Training resumes from its last epoch checkpoint if interrupted. Defaults (in brackets)
    suit a GPU; on a CPU try --chip-size 64 --base-width 16 --depth 3.
    """
    from eoseg.train import train_from_stores
    from eoseg.train.config import configure, load_train_config

    def body() -> None:
        options = configure(
            load_train_config(config) if config else None,
            epochs=epochs,
            finetune_epochs=finetune_epochs,
            chip_size=chip_size,
            base_width=base_width,
            depth=depth,
            train_chips=train_chips,
            batch_size=batch_size,
            noisy_loss=noisy_loss,
            context=context,
            class_weights="balanced" if balanced else None,
            elastic=elastic,
            device=device,
            precision=precision,
            seed=seed,
        )
        with console.train_progress() as bar:
            card = train_from_stores(
                cube,
                labels,
                out,
                finetune_labels=finetune_labels,
                config=options,
                classes=classes,
                progress=bar,
            )
        doc = {
            "model": out,
            "name": card.name,
            "version": card.version,
            "bands": card.bands,
            "parameters": card.parameters,
            "flops_per_pixel": card.flops_per_pixel,
            "val_miou": card.metrics.get("val_miou"),
        }
        _report("train", doc, json_out)

    _guard(body)


@app.command()
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
        with _client(scheduler) as client, console.progress_bar("predict") as bar:
            result = run(
                cube, model, out, client=client, overwrite=overwrite, run_id=_run_id(), progress=bar
            )
        doc = result.to_dict()
        _report("predict", doc, json_out)

    _guard(body)


@app.command()
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
        _report("export", doc, json_out)

    _guard(body)


@app.command()
def evaluate(
    classmap: Annotated[Path, typer.Argument(help="Class map store.")],
    truth: Annotated[
        Path, typer.Option("--truth", help="Labels store, class-id GeoTIFF or vector.")
    ],
    class_field: Annotated[
        str, typer.Option(help="Class-id field when truth is a vector.")
    ] = "class_id",
    json_out: JsonOpt = False,
) -> None:
    """Accuracy of a class map: overall accuracy, per-class precision/recall/F1/IoU, mIoU."""
    from eoseg.metrics import format_report
    from eoseg.publish import evaluate_classmap

    def body() -> None:
        with tempfile.TemporaryDirectory(prefix=".eoseg-truth-", dir=classmap.parent) as tmp:
            report = evaluate_classmap(classmap, truth, class_field=class_field, workdir=Path(tmp))
        if json_out:
            console.emit_json(report.to_dict())
        else:
            console.stdout.print(format_report(report))

    _guard(body)


@app.command()
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
            console.stdout.print(console.key_value_table("class areas (km²)", _flatten(doc)))

    _guard(body)


@app.command()
def demo(
    workdir: Annotated[
        Path, typer.Option(help="Where everything is written, Prefect's home included.")
    ] = Path("eoseg-demo"),
    scheduler: SchedulerOpt = None,
    quick: Annotated[
        bool, typer.Option(help="Tiny landscape, few training steps: a smoke test.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the landscape and the training.")] = 0,
    json_out: JsonOpt = False,
) -> None:
    """Run the whole pipeline on a generated two-UTM-zone landscape, as one Prefect flow.

    Generates scenes (COG + STAC) and noisy/clean labels, then: ingest → rasterize →
    train (pretrain on noisy, fine-tune on clean) → predict → export COG and polygons →
    evaluate on a held-out area → class areas. Prints a summary and writes a quicklook.
    """
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    _confine_to(workdir)
    from flows.demo import demo_flow

    _quiet_dask()

    def body() -> None:
        summary = demo_flow(workdir=str(workdir), scheduler=scheduler, seed=seed, quick=quick)
        if json_out:
            console.emit_json(summary)
        else:
            console.print_demo_summary(summary)

    _guard(body)


app.add_typer(models_app)


def _confine_to(workdir: Path) -> None:
    """Keep Prefect's home, temp files and caches inside the work dir."""
    for var, sub in (
        ("PREFECT_HOME", "prefect"),
        ("MPLCONFIGDIR", "cache/matplotlib"),
        ("TMPDIR", "tmp"),
        ("XDG_CACHE_HOME", "cache"),
    ):
        path = workdir / sub
        path.mkdir(parents=True, exist_ok=True)
        os.environ[var] = str(path)
    # The temporary server's telemetry heartbeat races its own SQLite writes ("database is
    # locked" tracebacks on stderr) and would try the network: off for offline demos.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    tempfile.tempdir = None  # re-read TMPDIR


def _report(title: str, doc: dict[str, Any], json_out: bool) -> None:
    if json_out:
        console.emit_json(doc)
    else:
        console.stdout.print(console.key_value_table(title, _flatten(doc)))


def _flatten(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def main() -> None:
    """Entry point of the ``eoseg`` script."""
    app()
