"""``eoseg demo``: the whole pipeline on a generated landscape, as one Prefect flow."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from eoseg import console
from eoseg.cli.common import (
    JsonOpt,
    SchedulerOpt,
    confine_to,
    guard,
    quiet_dask,
)


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
    from eoseg.locks import output_lock
    from eoseg.outputs import check_output, demo_lock, mark_demo_workdir

    workdir = workdir.resolve()

    def body() -> None:
        # An empty or new folder, or an earlier demo's, which the demo rewrites.
        check_output(workdir, "demo", overwrite=True, flag="--workdir", overwrite_flag=None)
        with output_lock(workdir, flag="--workdir", lock=demo_lock(workdir)):
            mark_demo_workdir(workdir)
            confine_to(workdir)
            from flows.demo import demo_flow

            quiet_dask()
            summary = demo_flow(workdir=str(workdir), scheduler=scheduler, seed=seed, quick=quick)
        if json_out:
            console.emit_json(summary)
        else:
            console.print_demo_summary(summary)

    guard(body)
