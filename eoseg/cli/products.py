"""``eoseg products``: publish class maps as versions, list, show, diff and roll back.

A product repository is a folder or an object-storage URL (s3://bucket/products/lc,
gs://...) holding every published version of one class map (`eoseg.versions`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
from rich.table import Table

from eoseg.cli import console
from eoseg.cli.common import JsonOpt, guard, report

if TYPE_CHECKING:
    from eoseg.version_publish import Compare

products_app = typer.Typer(
    name="products",
    help=(
        "Publish class maps as versions of a product and read them back: each publish "
        "writes only the tiles that changed, commits atomically (a failed or killed publish "
        "leaves the latest version as it was) and keeps every earlier version readable by "
        "id, number or tag."
    ),
    epilog=(
        "Examples:\n\n"
        "  eoseg products publish map.zarr --to products/lc --tag 2026-06\n\n"
        "  eoseg products list products/lc\n\n"
        "  eoseg products show products/lc 2026-06\n\n"
        "  eoseg products diff products/lc 2026-06 latest\n\n"
        "  eoseg products rollback products/lc --to 2026-06\n\n"
        "  eoseg products regenerate products/lc --cube cube.zarr --model models/lc-v2"
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
)

RepoArg = Annotated[
    str, typer.Argument(help="Product repository: a folder or URL (s3://bucket/products/lc).")
]
MessageOpt = Annotated[str, typer.Option("--message", "-m", help="The new version's message.")]
TagOpt = Annotated[
    str | None,
    typer.Option(
        "--tag", help="Also name the new version so (tags never move).", show_default=False
    ),
]


def _quiet_icechunk() -> None:
    """Icechunk warns on every local open that local storage does not guard concurrent
    commits; eoseg holds a lock file around every local publish, so keep it quiet unless
    the user asked for its logs."""
    if "ICECHUNK_LOG" not in os.environ:
        import icechunk

        icechunk.set_logs_filter("error")


@products_app.command()
def publish(
    classmap: Annotated[Path, typer.Argument(help="Class map written by 'eoseg predict'.")],
    to: Annotated[str, typer.Option("--to", help="Product repository (created if absent).")],
    tag: TagOpt = None,
    message: MessageOpt = "",
    compare: Annotated[
        str,
        typer.Option(
            "--compare",
            help="How unchanged tiles are found: 'provenance' (equal per-tile records) or "
            "'pixels' (digest every tile).",
        ),
    ] = "provenance",
    json_out: JsonOpt = False,
) -> None:
    """Publish CLASSMAP as the product's new latest version (only changed tiles are written).

    Publishing a map that equals the latest version makes no new version.
    """
    from eoseg.errors import InvalidParameterError
    from eoseg.version_publish import publish_classmap

    def body() -> None:
        if compare not in ("provenance", "pixels"):
            raise InvalidParameterError(
                f"--compare must be 'provenance' or 'pixels'; found {compare!r}: pick one"
            )
        _quiet_icechunk()
        with console.progress_bar("publish") as bar:
            result = publish_classmap(
                classmap,
                to,
                tag=tag,
                message=message,
                compare=cast("Compare", compare),
                progress=bar,
            )
        report("published" if result.committed else "unchanged", result.to_dict(), json_out)

    guard(body)


@products_app.command("list")
def list_(repository: RepoArg, json_out: JsonOpt = False) -> None:
    """Every version, newest first: number, id, time, tags, tiles written, message."""
    from eoseg.versions import list_versions, open_repository

    def body() -> None:
        _quiet_icechunk()
        versions = list_versions(open_repository(repository))
        if json_out:
            console.emit_json(
                {"repository": repository, "versions": [v.to_dict() for v in versions]}
            )
            return
        table = Table(title=f"versions of {repository}", title_justify="left")
        for col in ("#", "id", "written", "tags", "kind", "tiles written", "message"):
            # Ids are copied into other commands: folded on a narrow terminal, never cut.
            table.add_column(col, overflow="fold")
        for v in versions:
            meta = v.metadata
            written = f"{meta.get('tiles_written', '-')}/{meta.get('tiles', '-')}"
            kind = str(meta.get("eoseg_kind", ""))
            table.add_row(
                str(v.number), v.id, v.written_at, ",".join(v.tags), kind, written, v.message
            )
        console.stdout.print(table)

    guard(body)


@products_app.command()
def show(
    repository: RepoArg,
    version: Annotated[str, typer.Argument(help="'latest', a tag, an id or a number.")] = "latest",
    json_out: JsonOpt = False,
) -> None:
    """One version: what published it, and with --json every tile's provenance record."""
    from eoseg.versions import open_repository, resolve_version, tile_records, version_info

    def body() -> None:
        _quiet_icechunk()
        repo = open_repository(repository)
        snapshot = resolve_version(repo, version, flag="VERSION")
        records = tile_records(repo.readonly_session(snapshot_id=snapshot))
        info = version_info(repo, snapshot)
        if json_out:
            console.emit_json({"version": info.to_dict(), "tiles": records})
            return
        doc: dict[str, Any] = info.to_dict()
        doc["tile_records"] = len(records)
        report(f"version {snapshot}", doc, False)

    guard(body)


@products_app.command()
def rollback(
    repository: RepoArg,
    to: Annotated[str, typer.Option("--to", help="Version to restore: a tag, id or number.")],
    tag: TagOpt = None,
    message: MessageOpt = "",
    json_out: JsonOpt = False,
) -> None:
    """Make an earlier version the latest again, as a new version that says so.

    History is kept: the versions in between stay listed and readable.
    """
    from eoseg.version_publish import rollback as run

    def body() -> None:
        _quiet_icechunk()
        with console.progress_bar("rollback") as bar:
            result = run(repository, to, message=message, tag=tag, progress=bar)
        report("rolled back" if result.committed else "unchanged", result.to_dict(), json_out)

    guard(body)


@products_app.command()
def diff(
    repository: RepoArg,
    before: Annotated[str, typer.Argument(help="Earlier version: tag, id or number.")],
    after: Annotated[str, typer.Argument(help="Later version.")] = "latest",
    date: Annotated[
        str | None,
        typer.Option(
            "--date", help="Date to compare, for a multi-date class map.", show_default=False
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Tiles changed between two versions and each class's change in pixels and km²."""
    from eoseg.version_diff import diff_versions

    def body() -> None:
        _quiet_icechunk()
        result = diff_versions(repository, before, after, date=date)
        doc = result.to_dict()
        if json_out:
            console.emit_json(doc)
            return
        table = Table(
            title=f"{before} -> {after}: {len(result.changed_tiles)} of {result.tiles} tiles "
            "changed",
            title_justify="left",
        )
        for col in ("class", "pixels before", "pixels after", "change", "km² change"):
            table.add_column(col, justify="left" if col == "class" else "right")
        for row in doc["classes"]:
            table.add_row(
                row["class"],
                str(row["pixels_before"]),
                str(row["pixels_after"]),
                f"{row['pixels_change']:+d}",
                f"{row['km2_change']:+.4f}",
            )
        console.stdout.print(table)

    guard(body)
