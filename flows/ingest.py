"""Ingest flow: scenes into a cube on one grid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task

from eoseg.cluster import connect
from eoseg.cube import ingest


@task(name="ingest", retries=2, retry_delay_seconds=10)
def ingest_task(
    sources: list[str],
    out: str,
    *,
    scheduler: str | None,
    tile_size: int = 2048,
    crs: str | None = None,
    resolution: float | None = None,
    bbox: tuple[float, float, float, float] | None = None,
    overwrite: bool = False,
    run_id: str = "",
) -> dict[str, Any]:
    """Ingest ``sources`` into the cube ``out``; resumes an interrupted run (retries)."""
    with connect(scheduler) as client:
        result = ingest(
            sources,
            Path(out),
            crs=crs,
            resolution=resolution,
            bbox=bbox,
            tile_size=tile_size,
            client=client,
            overwrite=overwrite,
            run_id=run_id,
        )
    return result.to_dict()


@flow(name="eoseg-ingest")
def ingest_flow(
    sources: list[str],
    out: str,
    scheduler: str | None = None,
    tile_size: int = 2048,
    crs: str | None = None,
    resolution: float | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Ingest scenes into a cube (on a local cluster unless ``scheduler`` is given)."""
    return ingest_task(
        sources,
        out,
        scheduler=scheduler,
        tile_size=tile_size,
        crs=crs,
        resolution=resolution,
        overwrite=overwrite,
    )
