"""Ingest flow: scenes (files, static catalogs, or a STAC API search) into a cube.

A STAC API search is saved as a static catalog beside the cube first, so the run can be
repeated and audited from exactly the items it used. Remote I/O is retried; the run
report (scenes used and skipped with reasons, tiles written, bytes, time) is returned and
published as a Prefect artifact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from eoseg.cluster import connect
from eoseg.cube import ingest
from eoseg.errors import EosegError
from eoseg.storage import location


def _retry_unless_bad_input(task: Any, task_run: Any, state: Any) -> bool:
    """Retry remote I/O failures; bad input (an EosegError) fails at once."""
    try:
        state.result()
    except EosegError:
        return False
    except Exception:
        return True
    return False


@task(
    name="search",
    retries=3,
    retry_delay_seconds=[10, 30, 90],
    retry_condition_fn=_retry_unless_bad_input,
)
def search_task(
    api: str,
    out_dir: str,
    *,
    collections: list[str],
    bbox: tuple[float, float, float, float] | None,
    dates: str | None,
    max_cloud: float | None,
) -> str:
    """Search a STAC API and save the items found as a static catalog; returns its path."""
    from eoseg.stac import search_stac

    return str(
        search_stac(
            api,
            Path(out_dir),
            collections=collections,
            bbox=bbox,
            datetime=dates,
            max_cloud=max_cloud,
        )
    )


@task(name="ingest", retries=2, retry_delay_seconds=10, retry_condition_fn=_retry_unless_bad_input)
def ingest_task(
    sources: list[str],
    out: str,
    *,
    scheduler: str | None,
    tile_size: int = 2048,
    chunk_size: int | None = None,
    crs: str | None = None,
    resolution: float | None = None,
    bbox: tuple[float, float, float, float] | None = None,
    composite: str = "first",
    by_date: bool = False,
    sensors: list[str] | None = None,
    max_pixels: float | None = None,
    allow_distant_crs: bool = False,
    overwrite: bool = False,
    run_id: str = "",
) -> dict[str, Any]:
    """Ingest ``sources`` into the cube ``out``; a retry resumes the tiles not yet written."""
    with connect(scheduler) as client:
        result = ingest(
            sources,
            location(out),
            crs=crs,
            resolution=resolution,
            bbox=bbox,
            tile_size=tile_size,
            chunk_size=chunk_size,
            composite=composite,  # type: ignore[arg-type]  # validated by ingest
            by_date=by_date,
            sensors=sensors,
            max_pixels=max_pixels,
            allow_distant_crs=allow_distant_crs,
            client=client,
            overwrite=overwrite,
            run_id=run_id,
        )
    return result.to_dict()


def report_markdown(report: dict[str, Any]) -> str:
    """The run report as a Markdown table (the flow's artifact)."""
    lines = [
        f"# Ingest report: `{report['cube']}`",
        "",
        "| figure | value |",
        "|---|---|",
        f"| grid | {report['grid']['crs']}, {report['grid']['resolution']} m, "
        f"{report['grid']['shape'][0]} x {report['grid']['shape'][1]} px |",
        f"| bands | {', '.join(report['bands'])} |",
        f"| time steps | {', '.join(report['times'])} |",
        f"| scenes used | {len(report['scenes'])} |",
        f"| scenes skipped | {len(report['skipped'])} |",
        f"| tiles written / total | {report['tiles_written']} / {report['tiles']} |",
        f"| valid fraction | {report['valid_fraction']:.3f} |",
        f"| bytes | {report['bytes']:,} |",
        f"| seconds | {report['seconds']} |",
    ]
    if report["skipped"]:
        lines += ["", "| skipped scene | reason |", "|---|---|"]
        lines += [f"| {s['scene']} | {s['reason']} |" for s in report["skipped"]]
    return "\n".join(lines)


@flow(name="eoseg-ingest")
def ingest_flow(
    out: str,
    sources: list[str] | None = None,
    stac_api: str | None = None,
    collections: list[str] | None = None,
    bbox: tuple[float, float, float, float] | None = None,
    dates: str | None = None,
    max_cloud: float | None = None,
    crs: str | None = None,
    resolution: float | None = None,
    tile_size: int = 2048,
    chunk_size: int | None = None,
    composite: str = "first",
    by_date: bool = False,
    sensors: list[str] | None = None,
    max_pixels: float | None = None,
    allow_distant_crs: bool = False,
    scheduler: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Ingest an area: files/static catalogs (``sources``) or a STAC API search.

    Args:
        out: Cube store to write.
        sources: Files, folders or static STAC JSON; or leave empty and give ``stac_api``.
        stac_api: STAC API root URL to search (with ``collections``, ``bbox``, ``dates``
            as an RFC 3339 interval like ``2026-10-01/2026-10-31``, ``max_cloud`` in %).
        crs: Grid CRS; resolution: pixel size in its units (default: first scene's).
        tile_size: Tile (unit of work) size; chunk_size: inner chunks (sharded store).
        composite: ``first`` or ``median``; by_date: one time step per date.
        sensors: Keep only scenes of these sensor profiles, e.g. ``["sentinel-2-l2a"]``.
        max_pixels: Largest grid accepted (default `eoseg.grid.DEFAULT_MAX_PIXELS`);
            allow_distant_crs: accept a CRS meant for an area far from the scenes.
        scheduler: Dask scheduler address (default: a local cluster per task).
        overwrite: Replace an existing cube.
    """
    inputs = list(sources or [])
    if stac_api:
        inputs.append(
            search_task(
                stac_api,
                str(Path(out).with_suffix(".items")),
                collections=list(collections or []),
                bbox=bbox,
                dates=dates,
                max_cloud=max_cloud,
            )
        )
    report = ingest_task(
        inputs,
        out,
        scheduler=scheduler,
        tile_size=tile_size,
        chunk_size=chunk_size,
        crs=crs,
        resolution=resolution,
        bbox=bbox,
        composite=composite,
        by_date=by_date,
        sensors=sensors,
        max_pixels=max_pixels,
        allow_distant_crs=allow_distant_crs,
        overwrite=overwrite,
    )
    create_markdown_artifact(
        report_markdown(report),
        key="ingest-report",
        description="scenes used and skipped, tiles, bytes, time",
    )
    return report
