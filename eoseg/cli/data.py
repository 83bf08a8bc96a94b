"""``eoseg ingest`` and ``eoseg rasterize``: scenes into a cube, labels onto its grid."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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


def ingest(
    sources: Annotated[
        list[Path],
        typer.Argument(
            help="GeoTIFF/COG files, folders, or STAC JSON. Band files sharing a stem "
            "(x_B02.tif x_B03.tif, USGS Landsat files) are one scene."
        ),
    ],
    out: Annotated[
        str, typer.Option("--out", help="Cube store to write: a .zarr folder or URL (s3://...).")
    ],
    crs: Annotated[
        str | None, typer.Option(help="Grid CRS, e.g. EPSG:32632. Default: first source's.")
    ] = None,
    resolution: Annotated[
        float | None,
        typer.Option(
            help="Square pixel size in grid CRS units. Default: the first source's pixel "
            "grid (kept exactly, non-square pixels too, in its CRS)."
        ),
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
        bool,
        typer.Option(
            "--by-date",
            help="One time step per acquisition date: STAC datetime, a file's acquisition "
            "tag (ACQUISITION_TIME...) or a date in its name (x_20240612.tif).",
        ),
    ] = False,
    sensor: Annotated[
        list[str] | None,
        typer.Option(help="Keep only scenes of this sensor profile (repeatable)."),
    ] = None,
    max_pixels: Annotated[
        float | None,
        typer.Option(
            help="Largest grid accepted, in pixels [1e10: a country at 10 m]; a larger one "
            "is refused before any work, with its size and likely cause. A continent at "
            "10 m needs e.g. 2e11.",
            show_default=False,
        ),
    ] = None,
    allow_distant_crs: Annotated[
        bool,
        typer.Option(
            "--allow-distant-crs",
            help="Accept a grid CRS meant for an area far from the scenes (e.g. a UTM zone "
            "on another continent); refused by default, as it is most likely a mistake.",
        ),
    ] = False,
    scheduler: SchedulerOpt = None,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Ingest scenes into a cube: one grid, chunked by tile, in a Zarr v3 store.

    Band files that share a stem and end in a band token (x_B02.tif, x_SR_B4.TIF,
    x_VV.tif) form one multi-band scene, given as a folder or one by one; a Landsat
    QA_PIXEL/BQA file is the scene's cloud mask. Scenes in other CRSs (other UTM zones,
    MODIS sinusoidal) are reprojected onto the grid; clouds and nodata are masked; where
    scenes overlap, the first valid value (in the order given) or the median of valid
    values is kept. A killed run, re-run, writes only the missing tiles. The report lists
    scenes that contributed nothing, and why (outside the grid, covered by earlier
    scenes, no valid pixel) and where each scene's date was read.
    """
    from eoseg.cube import ingest as run
    from eoseg.grid import parse_bbox
    from eoseg.outputs import check_output
    from eoseg.storage import location

    def body() -> None:
        box = parse_bbox(bbox, "--bbox") if bbox else None
        target = location(out)
        # Outputs are checked before any cluster starts.
        check_output(target, "cube", overwrite=overwrite, inputs={"SOURCES": sources})
        with dask_client(scheduler) as client, console.progress_bar("ingest") as bar:
            result = run(
                sources,
                target,
                crs=crs,
                resolution=resolution,
                bbox=box,
                tile_size=tile_size,
                chunk_size=chunk_size,
                composite=composite,  # type: ignore[arg-type]  # validated by ingest
                by_date=by_date,
                sensors=sensor,
                max_pixels=max_pixels,
                allow_distant_crs=allow_distant_crs,
                client=client,
                overwrite=overwrite,
                run_id=new_run_id(),
                progress=bar,
            )
        doc = result.to_dict()
        report("ingest", doc, json_out)

    guard(body)


def rasterize(
    source: Annotated[
        str,
        typer.Argument(
            help="Labels: a vector file with a class field (any CRS), a GeoTIFF of class "
            "ids or codes, or, with --classes, an OSM extract (.osm.pbf, .osm) or a vector "
            "file of OSM tag columns (path or URL, s3://...).",
            show_default=False,
        ),
    ],
    cube: Annotated[
        str, typer.Option("--cube", help="Cube whose grid the labels take (path or URL).")
    ],
    out: Annotated[str, typer.Option("--out", help="Labels store to write (path or URL).")],
    class_field: Annotated[
        str,
        typer.Option(
            help="Vector field holding class ids 0..254, class names of --classes, or codes "
            "that --code-map translates."
        ),
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
    code_map: Annotated[
        str | None,
        typer.Option(
            "--code-map",
            help="Translate the class field's values or the raster's codes to classes: a "
            'TOML/JSON file of value = class pairs (311 = "forest"), or inline '
            "'311=forest,312=forest,511=water'. A class is an id or a class name of "
            "--classes; 'ignore' drops a value. Values not listed become 255 (ignore) and "
            "are reported.",
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
    class_map: ClassMapAliasOpt = None,
) -> None:
    """Rasterize labels onto a cube's grid (uint8 class ids, 255 = ignore).

    Class ids come from a field of a vector file, from a class-id GeoTIFF, or from
    OpenStreetMap. A field of names maps by the class names of --classes (ignoring case);
    other codes or names (CORINE 311, WorldCover 10) map with --code-map. From
    OpenStreetMap: with --classes, an OSM extract is classified by the schema's tag rules
    (a line with a buffer rule becomes a polygon reaching that many metres each side),
    only over the cube's footprint, and burnt with smaller areas on top of larger ones and
    roads on top. A killed run, re-run, writes only the missing tiles.

    Examples:

      eoseg rasterize osm.gpkg --cube cube.zarr --out osm.zarr

      eoseg rasterize wc.tif --code-map "10=1,30=2,80=0" --cube cube.zarr --out clean.zarr

      eoseg rasterize clc.gpkg --class-field code --code-map clc.toml --cube c.zarr --out l.zarr

      eoseg rasterize region.osm.pbf --classes schema.toml --cube cube.zarr --out osm.zarr

      eoseg rasterize tags.parquet --classes schema.toml --osm --cube cube.zarr --out osm.zarr
    """
    from eoseg.classes import load_schema
    from eoseg.code_map import load_code_map
    from eoseg.labels import rasterize_labels
    from eoseg.outputs import check_output
    from eoseg.reachability import check_reachable
    from eoseg.storage import location

    def body() -> None:
        schema = load_schema(classes) if classes is not None else None  # before any cluster
        codes = code_map_option(code_map, class_map)
        mapping = load_code_map(codes, schema) if codes is not None else None
        src, grid, target = location(source), location(cube), location(out)
        check_reachable({"SOURCE": src, "--cube": grid, "--out": target})
        inputs = {"SOURCE": src, "--cube": grid, "--classes": classes}
        check_output(target, "labels", overwrite=overwrite, inputs=inputs)
        with dask_client(scheduler) as client, console.progress_bar("rasterize") as bar:
            result = rasterize_labels(
                src,
                grid,
                target,
                class_field=class_field,
                classes=schema,
                code_map=mapping,
                osm=osm,
                client=client,
                overwrite=overwrite,
                run_id=new_run_id(),
                progress=bar,
            )
        report("rasterize", result.to_dict(), json_out)

    guard(body)
