"""The ``eoseg`` command line.

Each command is a thin layer over one library function: parse options, show progress,
print a table (or one JSON document with ``--json``), and turn bad input (`EosegError`)
into a one-paragraph message and exit status 2.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from eoseg.cli import accuracy, data, demo, mapping, models, mosaic, products, regenerate, training
from eoseg.cli.common import reflow_help

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
        "  eoseg rasterize region.osm.pbf --classes classes.toml --cube cube.zarr "
        "--out osm.zarr\n\n"
        "  eoseg rasterize clean.gpkg --class-field class_id --cube cube.zarr --out clean.zarr\n\n"
        "  eoseg train --cube cube.zarr --labels osm.zarr --finetune-labels clean.zarr "
        "--classes classes.toml --out model\n\n"
        "  eoseg models register model --registry s3://bucket/models && "
        "eoseg models promote NAME VERSION --registry s3://bucket/models\n\n"
        "  eoseg predict --cube cube.zarr --model model --out map.zarr\n\n"
        "  eoseg export map.zarr --cog map.tif --polygons map.parquet\n\n"
        "  eoseg query map.zarr --aoi 11.9,47.95,12.05,48.02 --json"
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("eoseg").setLevel(logging.INFO if verbose else logging.WARNING)


for command in (
    data.ingest,
    data.rasterize,
    training.train,
    mapping.predict,
    mapping.export,
    mapping.evaluate,
    mapping.query,
    mosaic.mosaic,
    accuracy.sample,
    accuracy.areas,
    demo.demo,
):
    app.command()(command)
app.add_typer(models.models_app)
products.products_app.command()(regenerate.regenerate)
app.add_typer(products.products_app)
for info in (
    *app.registered_commands,
    *models.models_app.registered_commands,
    *products.products_app.registered_commands,
):
    info.help = info.help or reflow_help(info.callback.__doc__ if info.callback else None)


def main() -> None:
    """Entry point of the ``eoseg`` script."""
    app()
