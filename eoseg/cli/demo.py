"""``eoseg demo``: the whole pipeline on a generated landscape, as one Prefect flow."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from eoseg.cli import console
from eoseg.cli.common import (
    SERVER_TIMEOUT_S,
    SERVER_TIMEOUT_VAR,
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
    server_timeout: Annotated[
        int | None,
        typer.Option(
            min=1,
            help=f"Seconds the temporary Prefect server gets to start. Default: "
            f"${SERVER_TIMEOUT_VAR}, else {SERVER_TIMEOUT_S}.",
            show_default=False,
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Run the whole pipeline on a generated two-UTM-zone landscape, as one Prefect flow.

    Generates scenes (COG + STAC) and noisy/clean labels, then: ingest → rasterize →
    train (pretrain on noisy, fine-tune on clean) → predict → export COG and polygons →
    evaluate on a held-out area → class areas. Prints a summary and writes a quicklook.

    Without PREFECT_API_URL, Prefect starts a temporary server for the run; with it, the
    run goes to that server (e.g. one started with 'prefect server start').
    """
    from eoseg.locks import output_lock
    from eoseg.outputs import check_output, demo_lock, mark_demo_workdir

    if server_timeout is not None:
        os.environ[SERVER_TIMEOUT_VAR] = str(server_timeout)

    workdir = workdir.resolve()

    def body() -> None:
        if seed < 0:  # checked before the work dir is made: a refused run leaves nothing
            raise InvalidParameterError(
                f"--seed must be a whole number >= 0; found {seed}: give e.g. --seed 0"
            )
        # An empty or new folder, or an earlier demo's, which the demo rewrites.
        check_output(workdir, "demo", overwrite=True, flag="--workdir", overwrite_flag=None)
        with output_lock(workdir, flag="--workdir", lock=demo_lock(workdir)):
            mark_demo_workdir(workdir)
            confine_to(workdir)  # before Prefect is imported: it reads its settings then
            from flows.demo import demo_flow

            quiet_dask()
            try:
                summary = demo_flow(
                    workdir=str(workdir), scheduler=scheduler, seed=seed, quick=quick
                )
            except RuntimeError as exc:
                error = _server_error(exc)
                if error is None:
                    raise
                raise error from exc
        if json_out:
            console.emit_json(summary)
        else:
            console.print_demo_summary(summary)

    guard(body)


def _server_error(exc: RuntimeError) -> InvalidParameterError | None:
    """A Prefect server that cannot be used, as a message with the fix; None otherwise.

    Prefect raises a bare ``RuntimeError`` in both cases; its text is all there is to
    tell them from an error of the flow itself.
    """
    text = str(exc)
    if text.startswith("Timed out while attempting to connect to ephemeral"):
        waited = os.environ.get(SERVER_TIMEOUT_VAR, SERVER_TIMEOUT_S)
        return InvalidParameterError(
            f"the temporary Prefect server did not start within {waited} s "
            f"({text[:300]}): on a busy or slow machine give it longer, e.g. "
            "--server-timeout 300, or start a server yourself ('prefect server start') "
            "and set PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    if text.startswith("Failed to reach API at"):
        url = os.environ.get("PREFECT_API_URL", "")
        return InvalidParameterError(
            f"the Prefect server at PREFECT_API_URL={url} does not answer ({text}): start "
            "it ('prefect server start'), fix the URL, or unset PREFECT_API_URL and eoseg "
            "demo starts a temporary server"
        )
    return None
