"""Scene search in STAC APIs (pystac-client), saved as static catalogs.

A search result is written as a self-contained static catalog (item JSON files whose
asset hrefs point at the original data), so an ingest can be repeated and audited from
exactly the items it used, and `eoseg.catalog` reads it like any static catalog.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pystac

from eoseg.errors import InputNotFoundError, InvalidParameterError

log = logging.getLogger(__name__)


def search_stac(
    api: str,
    out_dir: Path,
    *,
    collections: list[str],
    bbox: tuple[float, float, float, float] | None,
    datetime: str | None,
    max_cloud: float | None,
    max_items: int = 10_000,
) -> Path:
    """Search a STAC API and save the items found as a static catalog.

    Args:
        api: Root URL of the STAC API.
        out_dir: Folder for the catalog (``catalog.json`` plus one folder per item).
        collections: Collection ids to search (empty: all).
        bbox: ``minx,miny,maxx,maxy`` in EPSG:4326.
        datetime: RFC 3339 instant or interval, e.g. ``"2026-10-01/2026-10-31"``.
        max_cloud: Keep items with ``eo:cloud_cover`` below this percentage.
        max_items: Stop after this many items.

    Returns:
        Path of the saved ``catalog.json``.

    Raises:
        InvalidParameterError: The API cannot be opened.
        InputNotFoundError: The search found nothing.
    """
    from pystac_client import Client
    from pystac_client.exceptions import APIError

    try:
        client = Client.open(api)
        query = {"eo:cloud_cover": {"lt": max_cloud}} if max_cloud is not None else None
        search = client.search(
            collections=collections or None,
            bbox=bbox,
            datetime=datetime,
            query=query,
            max_items=max_items,
        )
        items = list(search.items())
    except (APIError, OSError, ValueError) as exc:
        raise InvalidParameterError(
            f"STAC API search at {api} failed ({exc}): check the URL, the collection ids "
            f"{collections} and the date interval {datetime!r}"
        ) from exc
    if not items:
        raise InputNotFoundError(
            f"STAC API {api} found no items in {collections or 'any collection'} for bbox "
            f"{bbox}, dates {datetime!r}, cloud < {max_cloud}: widen the area or dates, or "
            "raise the cloud limit"
        )
    catalog = pystac.Catalog(id="eoseg-search", description=f"items found at {api}")
    for item in items:
        item = item.clone()
        item.make_asset_hrefs_absolute()
        item.clear_links()
        catalog.add_item(item)
    # The trailing slash marks a folder: pystac would take "cube.items" for a file name.
    catalog.normalize_hrefs(out_dir.as_posix().rstrip("/") + "/")
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    log.info("STAC search at %s: %d items saved in %s", api, len(items), out_dir)
    return out_dir / "catalog.json"
