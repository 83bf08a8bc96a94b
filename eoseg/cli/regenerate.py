"""``eoseg products regenerate``: recompute what a new model or new scenes change in a
product, publish it as a new version and report the area changes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from eoseg.cli import console
from eoseg.cli.common import JsonOpt, SchedulerOpt, dask_client, guard, new_run_id, report
from eoseg.cli.predict_options import (
    PRECISION_DEFAULT,
    ChipSizeOpt,
    ContextsOpt,
    OverlapOpt,
    PrecisionOpt,
    ProbabilitiesOpt,
    predict_options,
)
from eoseg.cli.products import MessageOpt, TagOpt


def regenerate(
    repository: Annotated[
        str, typer.Argument(help="Product repository: a folder or URL (s3://bucket/products/lc).")
    ],
    cube: Annotated[
        str, typer.Option("--cube", help="Cube the product is mapped from (path or URL).")
    ],
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="Model folder; with --registry a model name (its production version) or "
            "NAME@VERSION.",
        ),
    ],
    registry: Annotated[
        str | None,
        typer.Option("--registry", help="Model registry (folder or URL).", show_default=False),
    ] = None,
    report_dir: Annotated[
        str | None,
        typer.Option(
            "--report",
            help="Folder or URL (s3://...) for the change report: areas.csv, areas.json, "
            "areas.md, change.png.",
            show_default=False,
        ),
    ] = None,
    workdir: Annotated[
        Path | None,
        typer.Option(
            "--workdir",
            help="Where the recomputed tiles are predicted before the publish; run again with "
            "the same one to resume. Default: a temporary folder.",
            show_default=False,
        ),
    ] = None,
    chip_size: ChipSizeOpt = None,
    overlap: OverlapOpt = None,
    precision: PrecisionOpt = PRECISION_DEFAULT,
    probabilities: ProbabilitiesOpt = False,
    contexts: ContextsOpt = None,
    tag: TagOpt = None,
    message: MessageOpt = "",
    scheduler: SchedulerOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Recompute the tiles a new model or new scenes change, and publish a new version.

    Each tile of the latest version records the model version and the cube tile's input
    signature (a digest of the scenes touching it and their files) it was predicted from.
    A tile is recomputed when the model's version differs (a new model: every tile), when
    the cube's tile has another input signature (ingest the new scenes into the cube
    first: only the tiles they touch change), when the predict settings differ
    (--chip-size, --overlap, --precision, --probabilities, --contexts: as eoseg predict
    takes them, the model card's by default), or when the product has no such tile.
    The others are neither read nor written: storage grows with the tiles recomputed.
    The new version is committed at once on top of the one planned on; the previous
    one stays readable (eoseg products show/diff/rollback).

    Prints the tiles recomputed (and why) and skipped, both versions and each class's
    change in km² over the changed tiles (they sum to zero); --report writes them as
    CSV, JSON and Markdown with a PNG of the changed pixels.

    Examples:

      eoseg products regenerate products/lc --cube cube.zarr --model models/lc-v2

      eoseg products regenerate products/lc --cube cube.zarr --model lc --registry models

      eoseg products regenerate s3://b/lc --cube s3://b/cube.zarr --model m --report r/ --json
    """
    from eoseg.reachability import check_reachable
    from eoseg.regenerate import RegenerateOptions
    from eoseg.regenerate import regenerate as run
    from eoseg.registry import fetch_model
    from eoseg.storage import location

    def body() -> None:
        check_reachable({"--report": report_dir})
        model_dir = model
        if registry:
            name, _, version = model.partition("@")
            model_dir = str(fetch_model(registry, name, version or None))
        options = RegenerateOptions(
            predict=predict_options(chip_size, overlap, precision, probabilities, contexts),
            workdir=workdir, report_dir=report_dir, tag=tag, message=message,
            run_id=new_run_id(),
        )  # fmt: skip
        with dask_client(scheduler, model=True) as client, console.progress_bar("predict") as bar:
            result = run(
                location(repository), location(cube), model_dir, options=options,
                client=client, progress=bar,
            )  # fmt: skip
        doc = result.to_dict()
        if json_out:
            console.emit_json(doc)
            return
        summary = {k: v for k, v in doc.items() if k not in ("recomputed", "changes", "predict")}
        report("regenerated" if result.committed else "up to date", summary, False)
        if result.changes:
            from eoseg.change_report import markdown_of

            console.stdout.print(markdown_of(result.changes), markup=False, highlight=False)

    guard(body)
