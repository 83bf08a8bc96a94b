"""``eoseg models``: list, register, promote and fetch models of a registry.

A registry is a folder, local or on object storage (any fsspec URL). Every command takes
``--registry``, or reads it from the ``EOSEG_REGISTRY`` environment variable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from eoseg.cli import console
from eoseg.cli.common import JsonOpt, guard, report
from eoseg.errors import InvalidParameterError

models_app = typer.Typer(
    name="models",
    help=(
        "Keep trained models in a registry, a folder or an object-storage URL "
        "(s3://bucket/models, gs://..., memory://...): [bold]<registry>/<name>/<version>/[/] "
        "plus a PRODUCTION pointer per name that mapping runs use.\n\n"
        "Set [bold]EOSEG_REGISTRY[/] once instead of passing --registry to every command."
    ),
    epilog=(
        "Examples:\n\n"
        "  export EOSEG_REGISTRY=s3://my-bucket/models\n\n"
        "  eoseg models register model\n\n"
        "  eoseg models list\n\n"
        "  eoseg models promote lc 3f2a9c0d1e4b\n\n"
        '  eoseg predict --cube cube.zarr --model "$(eoseg models fetch lc)" --out map.zarr'
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
)

RegistryOpt = Annotated[
    str | None,
    typer.Option(
        "--registry",
        envvar="EOSEG_REGISTRY",
        help="Registry folder or fsspec URL (s3://bucket/models). Default: $EOSEG_REGISTRY.",
        show_default=False,
    ),
]


def _registry(registry: str | None, *, writes: str | None = None) -> str:
    """The registry given; with ``writes`` (a path inside it), a local registry must let it
    be written, before anything is copied."""
    if not registry:
        raise InvalidParameterError(
            "no model registry given: pass --registry with a folder or an fsspec URL "
            "(e.g. --registry s3://bucket/models), or set the EOSEG_REGISTRY environment "
            "variable"
        )
    if writes is not None and "://" not in registry:
        from eoseg.outputs import check_writable

        check_writable(Path(registry) / writes, "--registry")
    from eoseg.reachability import reachable

    reachable(registry, "--registry")  # a missing bucket or credentials, named here
    return registry


@models_app.command("list")
def list_(registry: RegistryOpt = None, json_out: JsonOpt = False) -> None:
    """Every registered version: name, version, creation time, validation mIoU, production.

    Reads only the model cards, so it is quick on object storage.
    """
    from eoseg.registry import list_models, production_versions

    def body() -> None:
        reg = _registry(registry)
        cards = list_models(reg)
        production = production_versions(reg)
        rows: list[dict[str, Any]] = [
            {
                "name": c.name,
                "version": c.version,
                "created": c.created,
                "val_miou": c.metrics.get("val_miou"),
                "production": production.get(c.name) == c.version,
                "bands": c.bands,
                "classes": [k.name for k in c.classes],
                "parent": c.parent,
            }
            for c in cards
        ]
        if json_out:
            console.emit_json({"registry": reg, "models": rows})
            return
        table = Table(title=f"models in {reg}", title_justify="left")
        for col in ("name", "version", "created", "val mIoU", "production"):
            table.add_column(col, justify="right" if col == "val mIoU" else "left")
        for r in rows:
            miou = r["val_miou"]
            table.add_row(
                r["name"],
                r["version"],
                r["created"],
                "-" if miou is None else f"{miou:.3f}",
                "*" if r["production"] else "",
            )
        console.stdout.print(table)
        if not rows:
            console.stderr.print("no models registered yet: eoseg models register MODEL_DIR")

    guard(body)


@models_app.command()
def register(
    model_dir: Annotated[
        str, typer.Argument(help="Model folder written by 'eoseg train' (path or URL).")
    ],
    registry: RegistryOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Copy a model folder into the registry as <name>/<version>/ (the card goes last).

    Registering the same version again does nothing; it also completes an upload that
    was interrupted. The new version is not promoted: use 'eoseg models promote'.
    """
    from eoseg.registry import register as run

    def body() -> None:
        reg = _registry(registry, writes="NAME")  # the registry folder itself
        card = run(model_dir, reg)
        doc = {"registry": reg, "name": card.name, "version": card.version}
        report("registered", doc, json_out)

    guard(body)


@models_app.command()
def promote(
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[str, typer.Argument(help="Registered version to put in production.")],
    registry: RegistryOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Make VERSION the production model of NAME (replaces the pointer atomically)."""
    from eoseg.registry import production_versions, set_production

    def body() -> None:
        reg = _registry(registry, writes=f"{name}/PRODUCTION")
        previous = production_versions(reg).get(name)
        set_production(reg, name, version)
        doc = {"registry": reg, "name": name, "version": version, "previous": previous}
        report("promoted", doc, json_out)

    guard(body)


@models_app.command()
def fetch(
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[
        str | None,
        typer.Option("--version", help="Version to fetch. Default: the production version."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Copy the model folder here. Default: the local cache (remote registries) "
            "or the registry folder itself (local ones).",
            show_default=False,
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing --out folder.")
    ] = False,
    registry: RegistryOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Get a model as a local folder and print its path (for 'eoseg predict --model').

    Downloads are checked and published by rename into ~/.cache/eoseg/models (or
    $XDG_CACHE_HOME/eoseg/models), so an interrupted download is never used and a
    finished one is reused.
    """
    from eoseg.locks import output_lock
    from eoseg.models.card import read_card
    from eoseg.outputs import check_output
    from eoseg.registry import fetch_model

    def body() -> None:
        reg = _registry(registry)
        if out is None:
            path = fetch_model(reg, name, version)
        else:
            check_output(out, "model", overwrite=overwrite, inputs={"--registry": reg})
            with output_lock(out):
                path = fetch_model(reg, name, version, out_dir=out)
        if json_out:
            card = read_card(path)
            console.emit_json(
                {"registry": reg, "name": card.name, "version": card.version, "path": path}
            )
        else:
            console.stdout.print(str(path), highlight=False, soft_wrap=True)

    guard(body)
