"""STAC: static catalogs read as scenes, and scene search in STAC APIs (pystac-client).

Items are matched to a sensor profile (`eoseg.sensors`): an explicit ``eoseg:sensor``
property wins, else the item id as a scene name (a Landsat product id names sensor and
level), else the profiles' collection / platform / constellation / instrument rules. A
profile's bands are found by asset key, alias or ``eo:bands`` name, its quality mask by
key or alias; other assets are ignored. Items of no known sensor are ``generic``: every
``data`` asset is a band, an asset with a cloud role or key ``SCL`` is the mask
(non-zero means invalid).

A search result is written as a self-contained static catalog (item JSON files whose
asset hrefs point at the original data), so an ingest can be repeated and audited from
exactly the items it used, and is read like any static catalog.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pystac

from eoseg.errors import (
    BandMismatchError,
    InputNotFoundError,
    InvalidParameterError,
    UnreadableRasterError,
)
from eoseg.scene import BandSource, Scene, is_remote, scene_from_files
from eoseg.scene_files import BandFile
from eoseg.sensor_profile import QualityMask, SensorProfile
from eoseg.sensors import detect_profile, get_profile

log = logging.getLogger(__name__)

_MASK_ROLES = {"cloud", "cloudmask", "cloud-mask", "cloud_mask"}
_MASK_KEYS = {"scl", "cloudmask", "cloud_mask", "cloud-mask"}


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


def item_scenes(path: Path) -> list[tuple[str, Callable[[], Scene]]]:
    """The items of a static STAC catalog, collection or item file, each as
    ``(item id, scene builder)``; a builder reads the asset headers when called.

    Raises:
        UnreadableRasterError: Not STAC JSON.
        InputNotFoundError: The catalog lists no items.
    """
    try:
        obj = pystac.read_file(str(path))
    except Exception as exc:  # pystac raises many types for bad JSON / STAC
        raise UnreadableRasterError(
            f"{path} is not a STAC catalog, collection or item ({exc}): expected STAC JSON; "
            "check the file or give the raster files instead"
        ) from exc
    if isinstance(obj, pystac.Item):
        items = [obj]
    elif isinstance(obj, pystac.Catalog):  # collections are catalogs too
        items = list(obj.get_items(recursive=True))
    else:
        raise UnreadableRasterError(
            f"{path} is a STAC {type(obj).__name__}: expected a catalog, collection or item"
        )
    if not items:
        raise InputNotFoundError(
            f"STAC {path} lists no items: expected at least one item; check its links"
        )
    return [(item.id, _bind_item(item)) for item in items]


def _bind_item(item: pystac.Item) -> Callable[[], Scene]:
    return lambda: _scene_from_item(item)


def _scene_from_item(item: pystac.Item) -> Scene:
    props = item.properties
    if props.get("eoseg:sensor") is not None:
        profile = get_profile(str(props["eoseg:sensor"]))
    else:
        instruments = props.get("instruments") or ()
        profile = detect_profile(
            item.collection_id,
            props.get("platform"),
            props.get("constellation"),
            tuple(str(i) for i in instruments),
            item_id=item.id,
        )
    when = item.datetime.isoformat() if item.datetime else None
    if profile.bands:
        files, mask, quality, declared = _profile_assets(item, profile)
    else:
        files, mask, quality, declared = _generic_assets(item)
    for file in files:
        _check_exists(item.id, file.path)
    if mask is not None:
        _check_exists(item.id, mask.href)
    implied = profile.implied_offset(props)
    if "offset" not in declared and implied is not None:
        declared["offset"] = implied
    return scene_from_files(
        item.id,
        files,
        profile=profile,
        datetime=when,
        datetime_source="STAC datetime",
        mask=mask,
        quality=quality,
        declared=declared,
    )


_Assets = tuple[list[BandFile], BandSource | None, QualityMask | None, dict[str, float]]


def _asset_names(key: str, asset: pystac.Asset) -> list[str]:
    eo = asset.extra_fields.get("eo:bands") or []
    return [key, *([str(eo[0]["name"])] if len(eo) == 1 and eo[0].get("name") else [])]


def _declared(asset: pystac.Asset, into: dict[str, float]) -> None:
    raster = (asset.extra_fields.get("raster:bands") or [{}])[0]
    for k in ("scale", "offset", "nodata"):
        if raster.get(k) is not None and k not in into:
            into[k] = float(raster[k])


def _profile_assets(item: pystac.Item, profile: SensorProfile) -> _Assets:
    found: dict[str, pystac.Asset] = {}
    mask: BandSource | None = None
    quality: QualityMask | None = None
    for key, asset in item.assets.items():
        names = _asset_names(key, asset)
        masks = [q for n in names if (q := profile.mask(n)) is not None]
        if masks:
            if mask is None:  # the first of the sensor's mask assets is its mask
                mask = BandSource("mask", asset.get_absolute_href() or "", 1, "categorical")
                quality = masks[0]
            continue
        spec = next((s for n in names if (s := profile.band(n)) is not None), None)
        if spec is not None and spec.name not in found:
            found[spec.name] = asset
    complete = [s for s in profile.complete_sets if all(n in found for n in s)]
    if not complete:
        want = " or ".join("(" + ", ".join(s) + ")" for s in profile.complete_sets)
        missing = [n for n in profile.complete_sets[0] if n not in found]
        raise BandMismatchError(
            f"STAC item {item.id} (sensor {profile.name}) lacks band(s) {', '.join(missing)}: "
            f"expected assets for {want} (by key, alias or eo:bands name); found asset keys "
            f"{sorted(item.assets)}: add the missing assets, or set the item's "
            "'eoseg:sensor' to 'generic' to ingest the assets it has"
        )
    # Whole band sets, plus the optional bands the item has (Landsat pan, thermal).
    keep = {n for s in complete for n in s} | {b.name for b in profile.bands if b.optional}
    files: list[BandFile] = []
    declared: dict[str, float] = {}
    for spec in profile.bands:
        if spec.name in keep and spec.name in found:
            asset = found[spec.name]
            files.append(BandFile(spec.name, asset.get_absolute_href() or "", spec.kind))
            _declared(asset, declared)
    if profile.masks and mask is None:
        log.warning("STAC item %s has no %s mask asset: no pixel is masked", item.id, profile.name)
    return files, mask, quality, declared


def _generic_assets(item: pystac.Item) -> _Assets:
    files: list[BandFile] = []
    mask = None
    declared: dict[str, float] = {}
    for key, asset in item.assets.items():
        roles = set(asset.roles or [])
        href = asset.get_absolute_href() or ""
        if roles & _MASK_ROLES or key.lower() in _MASK_KEYS:
            mask = BandSource("mask", href, 1, "categorical")
        elif "data" in roles:
            _declared(asset, declared)
            names = _asset_names(key, asset)
            files.append(BandFile(names[-1], href))
    if not files:
        raise InputNotFoundError(
            f"STAC item {item.id} has no asset with role 'data' and matches no sensor "
            f"profile (found asset keys {sorted(item.assets)}): give the band assets "
            "roles=['data'] or set 'eoseg:sensor' to a known sensor"
        )
    return files, mask, None, declared


def _check_exists(item_id: str, href: str) -> None:
    if not is_remote(href) and not Path(href.removeprefix("file://")).exists():
        raise InputNotFoundError(
            f"asset file {href} of STAC item {item_id} does not exist: expected the files "
            "the item lists beside it; download the missing asset or fix its href"
        )
