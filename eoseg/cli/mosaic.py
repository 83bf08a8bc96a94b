"""``eoseg mosaic``: several class maps as one class map on one grid."""

from __future__ import annotations

from typing import Annotated

import typer

from eoseg.cli import console
from eoseg.cli.common import (
    JsonOpt,
    OverwriteOpt,
    SchedulerOpt,
    dask_client,
    guard,
    new_run_id,
    report,
)


def mosaic(
    maps: Annotated[
        list[str],
        typer.Argument(
            help="Class map stores (per zone, region or date), in order of preference at "
            "equal rank.",
            show_default=False,
        ),
    ],
    out: Annotated[str, typer.Option("--out", help="Class map store to write (path or URL).")],
    rule: Annotated[
        str,
        typer.Option(
            "--rule",
            help="Where maps overlap: confidence (the higher confidence wins) or latest "
            "(the later date wins, then the higher confidence). Ties go to the map listed "
            "first.",
        ),
    ] = "confidence",
    scheduler: SchedulerOpt = None,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Mosaic class maps into one class map on the grid of the first (its CRS, resolution
    and pixel alignment, extended over all), tile by tile.

    Each pixel takes the class and confidence of the map the --rule picks among those with
    a class there; the mosaic's 'source' variable records which map (its 'sources'
    attribute lists them), and each tile's provenance the pixels each map won. A
    multi-date map counts as one map per date. The mosaic is a class map: export,
    evaluate and query read it.

    Examples:

      eoseg mosaic zone32.zarr zone33.zarr --out country.zarr

      eoseg mosaic june.zarr july.zarr --rule latest --out summer.zarr
    """
    from eoseg.mosaic import check_rule, mosaic_classmaps
    from eoseg.reachability import check_reachable
    from eoseg.storage import location

    def body() -> None:
        checked = check_rule(rule)  # before any cluster starts
        sources, target = [location(m) for m in maps], location(out)
        for source in sources:
            check_reachable({"MAPS": source})
        check_reachable({"--out": target})
        with dask_client(scheduler) as client, console.progress_bar("mosaic") as bar:
            result = mosaic_classmaps(
                sources,
                target,
                rule=checked,
                overwrite=overwrite,
                run_id=new_run_id(),
                client=client,
                progress=bar,
            )
        report("mosaic", result.to_dict(), json_out)

    guard(body)
