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
from eoseg.errors import InvalidParameterError


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

    def body() -> None:
        if seed < 0:  # checked before the work dir is made: a refused run leaves nothing
            raise InvalidParameterError(
                f"--seed must be a whole number >= 0; found {seed}: give e.g. --seed 0"
            )
        root = workdir.resolve()
        root.mkdir(parents=True, exist_ok=True)
        confine_to(root)
        from flows.demo import demo_flow

        quiet_dask()
        summary = demo_flow(workdir=str(root), scheduler=scheduler, seed=seed, quick=quick)
        if json_out:
            console.emit_json(summary)
        else:
            console.print_demo_summary(summary)

    guard(body)
