"""Area query flow: km² of each class inside an AOI or per region, on demand.

The ad-hoc query of a mapping agency ("how many km² of each class inside this region,
this month") as a deployment triggered from the Prefect UI or API with parameters. The
flow is thin over `eoseg.publish.query_table`: it reads a class map store or one version
of a product repository, stores the table when asked, and leaves a Markdown artifact.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from eoseg.area_table import write_table
from eoseg.publish import query_table
from eoseg.storage import location
from eoseg.versions import LATEST


@task(name="query")
def query_task(
    source: str,
    *,
    aoi: str | None,
    regions: str | None,
    region_field: str | None,
    date: str | None,
    version: str,
    out: str | None,
) -> tuple[dict[str, Any], str]:
    """The area table as a JSON-ready dict and as Markdown; written to ``out`` if given."""
    table = query_table(
        location(source),
        aoi=aoi,
        regions=None if regions is None else location(regions),  # type: ignore[arg-type]
        region_field=region_field,
        date=date,
        version=version,
    )
    if out:
        write_table(table, out)
    return table.to_dict(), table.to_markdown()


@flow(name="eoseg-area-query")
def area_query(
    source: str,
    aoi: str | None = None,
    regions: str | None = None,
    region_field: str | None = None,
    date: str | None = None,
    map_version: str = LATEST,
    out: str | None = None,
) -> dict[str, Any]:
    """Class areas (km² on the ellipsoid) inside ``aoi`` or per region of ``regions``.

    Args:
        source: A class map store, or a product repository (``eoseg products``).
        aoi: A GeoJSON/GeoPackage path or ``minx,miny,maxx,maxy`` in EPSG:4326.
        regions: A regions layer (vector file); with ``region_field`` naming regions.
        region_field: The attribute naming each region.
        date: One date of a multi-date map (ISO day, prefix or index); default every date.
        map_version: Version of a product repository: latest, a tag, an id or a number.
        out: Where to store the table (``.csv``, ``.parquet`` or ``.json``).

    Returns:
        The table (regions, dates, class areas, tiles read), as `eoseg query --json`.
    """
    doc, markdown = query_task(
        source,
        aoi=aoi,
        regions=regions,
        region_field=region_field,
        date=date,
        version=map_version,
        out=out,
    )
    where = aoi or (f"regions of {regions}" if regions else "the whole map")
    create_markdown_artifact(
        f"# Class areas (km²) in {where}\n\n{source} (version {map_version})\n\n{markdown}\n",
        key="area-query",
        description=f"class areas inside {where}",
    )
    return doc
