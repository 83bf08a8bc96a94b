"""Scene discovery: GeoTIFF files and folders, and static STAC catalogs.

A source is a GeoTIFF/COG file, a folder of them, or a STAC catalog / collection / item
JSON file. Files are opened by content through GDAL, never by extension (some real files
named ``.jp2`` are GeoTIFFs). Single-band files in one folder whose names end in a band
token (``..._B04.tif``, ``..._B8A.jp2``, ``..._VV.tif``, ``..._BAND5.tif``) form one
multi-band scene of the ``generic`` sensor.

STAC items are matched to a sensor profile (`eoseg.sensors`): an explicit
``eoseg:sensor`` property wins, else the profiles' collection / platform /
constellation / instrument rules. A profile's bands are found by asset key, alias or
``eo:bands`` name, its quality mask by key or alias; other assets are ignored. Items of
no known sensor are ``generic``: every ``data`` asset is a band, an asset with a cloud
role or key ``SCL`` is the mask (non-zero means invalid).

`scan_sources` skips bad scenes with a reason and goes on; `discover_scenes` is strict.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rasterio
from odc.geo import CRS
from odc.geo.geom import BoundingBox, Geometry
from rasterio.windows import Window

from eoseg.errors import (
    BandMismatchError,
    EosegError,
    GeoreferenceError,
    InputNotFoundError,
    UnreadableRasterError,
)
from eoseg.sensors import (
    PROFILES,
    BandKind,
    BitTest,
    Conversion,
    SensorProfile,
    detect_profile,
    get_profile,
)

log = logging.getLogger(__name__)

_PROFILE_BANDS = {b.name.upper(): b.name for p in PROFILES.values() for b in p.bands}
_BAND_TOKEN = re.compile(
    r"(?:^|[_\-.])("
    + "|".join(re.escape(n) for n in sorted(_PROFILE_BANDS.values(), key=len, reverse=True))
    + r"|B\d{1,2}A?|HH|HV)$",
    re.IGNORECASE,
)
_MASK_ROLES = {"cloud", "cloudmask", "cloud-mask", "cloud_mask"}
_MASK_KEYS = {"scl", "cloudmask", "cloud_mask", "cloud-mask"}
_RASTER_SUFFIXES = {".tif", ".tiff", ".jp2", ".vrt", ".img"}


@dataclass(frozen=True, slots=True)
class BandSource:
    """Where one band of a scene lives: a raster file, a 1-based band index, its kind."""

    name: str
    href: str
    index: int = 1
    kind: BandKind = "reflectance"


@dataclass(frozen=True, slots=True)
class Scene:
    """One acquisition, as delivered.

    Attributes:
        id: Scene id (STAC item id or file stem).
        sensor: Sensor profile name.
        datetime: ISO acquisition time, if known.
        bands: Band sources in cube order.
        mask: Quality/cloud mask source, if any.
        mask_invalid: Mask values meaning invalid; ``None`` means any non-zero value.
        crs: The scene's CRS.
        bounds: ``(left, bottom, right, top)`` in the scene's CRS.
        resolution: Finest pixel size of the scene's bands, in CRS units.
        dtype: Dtype of the values a cube stores (``complex64`` SAR is read as dB
            intensity; scenes with a conversion report ``float32``).
        nodata: Stored nodata value, if any.
        scale: Multiplier from stored to physical values.
        offset: Added after scaling.
        mask_bits: Bit tests on the mask; a pixel failing any is invalid.
        conversion: Applied after resampling (``linear_to_db``), if any.
    """

    id: str
    sensor: str
    datetime: str | None
    bands: tuple[BandSource, ...]
    mask: BandSource | None
    mask_invalid: tuple[int, ...] | None
    crs: CRS
    bounds: tuple[float, float, float, float]
    resolution: float
    dtype: str
    nodata: float | None
    scale: float
    offset: float
    mask_bits: tuple[BitTest, ...] = ()
    conversion: Conversion | None = None

    @property
    def band_names(self) -> tuple[str, ...]:
        """Names of the bands in cube order."""
        return tuple(b.name for b in self.bands)

    @property
    def footprint(self) -> Geometry:
        """The scene's extent as a polygon in its CRS."""
        return BoundingBox(*self.bounds, crs=self.crs).polygon


@dataclass(frozen=True, slots=True)
class SkippedScene:
    """A scene (or a whole source) left out of a scan, and why.

    Attributes:
        source: The source it came from, as given.
        id: Scene id, or ``None`` when the source itself could not be read.
        reason: What was expected, what was found, and the fix.
        error: The error that made it skipped (what `discover_scenes` raises).
    """

    source: str
    id: str | None
    reason: str
    error: EosegError = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class ScanResult:
    """Scenes found in the sources, and those skipped with their reasons."""

    scenes: tuple[Scene, ...]
    skipped: tuple[SkippedScene, ...]


def scan_sources(sources: Sequence[str | Path]) -> ScanResult:
    """Turn user sources into scenes, skipping every bad one with its reason.

    A corrupt or truncated file, a missing asset file, a raster without CRS, a band the
    sensor needs but the item lacks, or an unknown sensor named in ``eoseg:sensor`` skips
    that scene (logged as a warning); the others go on.
    """
    scenes: list[Scene] = []
    skipped: list[SkippedScene] = []
    for found in _iter_scan(sources):
        if isinstance(found, Scene):
            scenes.append(found)
        else:
            log.warning("skipped %s: %s", found.id or found.source, found.reason)
            skipped.append(found)
    return ScanResult(tuple(scenes), tuple(skipped))


def discover_scenes(sources: Sequence[str | Path]) -> list[Scene]:
    """Turn user sources into scenes, in the order given; stop at the first bad one.

    Raises:
        InputNotFoundError: A source or asset file does not exist, or nothing was found.
        UnreadableRasterError: A file is not a raster GDAL can read, or is truncated.
        GeoreferenceError: A raster has no CRS or transform.
        BandMismatchError: A STAC item lacks a band its sensor needs.
        InvalidParameterError: An item names an unknown sensor.
    """
    scenes: list[Scene] = []
    for found in _iter_scan(sources):
        if isinstance(found, SkippedScene):
            raise found.error
        scenes.append(found)
    if not scenes:
        raise InputNotFoundError(
            f"no scenes found in {', '.join(map(str, sources)) or 'no sources'}: expected "
            "GeoTIFF/COG files, folders of them or STAC JSON; give at least one source"
        )
    return scenes


_Unit = tuple[str, Callable[[], Scene]]


def _iter_scan(sources: Sequence[str | Path]) -> Iterator[Scene | SkippedScene]:
    for source in sources:
        path = Path(source)
        try:
            units = _units(path)
        except EosegError as exc:
            yield SkippedScene(str(source), None, str(exc), exc)
            continue
        for scene_id, build in units:
            try:
                yield build()
            except EosegError as exc:
                yield SkippedScene(str(source), scene_id, str(exc), exc)


def _units(path: Path) -> list[_Unit]:
    """The scenes a source holds, each as (id, builder), without reading pixels yet."""
    if not path.exists():
        raise InputNotFoundError(
            f"source {path} does not exist: give GeoTIFF/COG files, folders of them, "
            "or a STAC catalog/collection/item JSON file"
        )
    if path.is_dir():
        stac = [p for p in (path / "catalog.json", path / "collection.json") if p.exists()]
        return _stac_units(stac[0]) if stac else _folder_units(path)
    if path.suffix.lower() == ".json":
        return _stac_units(path)
    return [(path.stem, lambda: _scene_from_files(path.stem, [(None, str(path), "reflectance")]))]


def _folder_units(folder: Path) -> list[_Unit]:
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _RASTER_SUFFIXES
    )
    if not files:
        raise InputNotFoundError(
            f"folder {folder} holds no raster files: expected .tif/.tiff/.jp2/.vrt/.img "
            "files or a catalog.json; point at the folder that holds the scenes"
        )
    grouped: dict[str, list[tuple[str | None, str, BandKind]]] = {}
    for f in files:
        match = _BAND_TOKEN.search(f.stem)
        if match:
            prefix = f.stem[: match.start()] or "scene"
            token = match.group(1).upper()
            grouped.setdefault(prefix, []).append(
                (_PROFILE_BANDS.get(token, token), str(f), "reflectance")
            )
        else:
            grouped.setdefault(f.stem, []).append((None, str(f), "reflectance"))
    return [
        (f"{folder.name}:{key}", _bind(f"{folder.name}:{key}", items))
        for key, items in grouped.items()
    ]


def _bind(scene_id: str, items: list[tuple[str | None, str, BandKind]]) -> Callable[[], Scene]:
    return lambda: _scene_from_files(scene_id, items)


def _scene_from_files(
    scene_id: str,
    files: Sequence[tuple[str | None, str, BandKind]],
    *,
    profile: SensorProfile | None = None,
    datetime: str | None = None,
    mask: BandSource | None = None,
    declared: dict[str, float] | None = None,
) -> Scene:
    profile = profile or PROFILES["generic"]
    bands: list[BandSource] = []
    meta: dict[str, Any] = {}
    best_res = float("inf")
    for band_name, href, kind in files:
        info = _raster_info(href)
        if info["count"] > 1 and band_name is not None:
            raise UnreadableRasterError(
                f"{href} has {info['count']} bands but is named as band {band_name}: "
                "expected one band per band-named file or asset; split it with "
                "'gdal_translate -b N' or list it without a band token"
            )
        for i in range(1, info["count"] + 1):
            name = band_name or info["descriptions"][i - 1] or f"band_{i}"
            bands.append(BandSource(name, href, i, kind))
        if meta and info["crs"] != meta["crs"]:
            raise GeoreferenceError(
                f"bands of scene {scene_id} are in different CRSs ({info['crs']} in {href}, "
                f"{meta['crs']} elsewhere): expected one CRS per scene; reproject the odd "
                "band or list it as its own scene"
            )
        if info["res"] < best_res:
            best_res, meta = info["res"], info
    # Precedence: the catalog's declaration, then the sensor profile, then the file's tags.
    declared = declared or {}
    for key in ("scale", "offset", "nodata"):
        if key not in declared and getattr(profile, key) is not None:
            declared[key] = getattr(profile, key)
    meta = {**meta, **declared}
    quality = profile.mask
    return Scene(
        id=scene_id,
        sensor=profile.name,
        datetime=datetime,
        bands=tuple(bands),
        mask=mask,
        mask_invalid=profile.mask_values,
        crs=meta["crs"],
        bounds=meta["bounds"],
        resolution=best_res,
        dtype="float32" if profile.conversion else meta["dtype"],
        nodata=meta["nodata"],
        scale=float(meta["scale"]),
        offset=float(meta["offset"]),
        mask_bits=quality.invalid_bits if quality else (),
        conversion=profile.conversion,
    )


def _raster_info(href: str) -> dict[str, Any]:
    try:
        with rasterio.open(href) as src:
            if src.crs is None or src.transform.is_identity:
                raise GeoreferenceError(
                    f"{href} has no CRS or geotransform: expected a georeferenced raster; "
                    "assign one with 'gdal_edit.py -a_srs EPSG:XXXX -a_ullr ...'"
                )
            # The last pixel lies in the last block: reading it finds truncated files.
            src.read(1, window=Window(src.width - 1, src.height - 1, 1, 1))
            # Rotated geotransforms (seen in SAR products) are fine: GDAL's warper reads them.
            t = src.transform
            xs, ys = zip(
                *(
                    t * c
                    for c in ((0, 0), (src.width, 0), (0, src.height), (src.width, src.height))
                ),
                strict=True,
            )
            return {
                "count": src.count,
                "descriptions": list(src.descriptions),
                "crs": CRS(src.crs.to_wkt()),
                "bounds": (min(xs), min(ys), max(xs), max(ys)),
                "res": float(math.hypot(t.a, t.d)),
                "dtype": src.dtypes[0],
                "nodata": src.nodata,
                "scale": float(src.scales[0] or 1.0),
                "offset": float(src.offsets[0] or 0.0),
            }
    except rasterio.errors.RasterioError as exc:
        if not _is_remote(href) and not Path(href).exists():
            raise InputNotFoundError(
                f"raster {href} does not exist: expected the file a catalog lists; "
                "download the missing asset or fix its href"
            ) from exc
        raise UnreadableRasterError(
            f"{href} is not a raster GDAL can read, or is truncated ({exc}): expected a "
            "complete GeoTIFF/COG/JP2; download it again or drop it from the sources"
        ) from exc


def _is_remote(href: str) -> bool:
    return "://" in href and not href.startswith("file://")


def _stac_units(path: Path) -> list[_Unit]:
    import pystac  # local: only STAC sources need it

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


def _bind_item(item: Any) -> Callable[[], Scene]:
    return lambda: _scene_from_item(item)


def _scene_from_item(item: Any) -> Scene:
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
        )
    when = item.datetime.isoformat() if item.datetime else None
    if profile.bands:
        files, mask, declared = _profile_assets(item, profile)
    else:
        files, mask, declared = _generic_assets(item)
    for _, href, _ in files:
        _check_exists(item.id, href)
    if mask is not None:
        _check_exists(item.id, mask.href)
    implied = profile.implied_offset(props)
    if "offset" not in declared and implied is not None:
        declared["offset"] = implied
    return _scene_from_files(
        item.id, files, profile=profile, datetime=when, mask=mask, declared=declared
    )


_Assets = tuple[list[tuple[str | None, str, BandKind]], BandSource | None, dict[str, float]]


def _asset_names(key: str, asset: Any) -> list[str]:
    eo = asset.extra_fields.get("eo:bands") or []
    return [key, *([str(eo[0]["name"])] if len(eo) == 1 and eo[0].get("name") else [])]


def _declared(asset: Any, into: dict[str, float]) -> None:
    raster = (asset.extra_fields.get("raster:bands") or [{}])[0]
    for k in ("scale", "offset", "nodata"):
        if raster.get(k) is not None and k not in into:
            into[k] = float(raster[k])


def _profile_assets(item: Any, profile: SensorProfile) -> _Assets:
    found: dict[str, tuple[str, Any]] = {}
    mask = None
    for key, asset in item.assets.items():
        names = _asset_names(key, asset)
        if profile.mask is not None and any(profile.mask.matches(n) for n in names):
            mask = BandSource("mask", asset.get_absolute_href(), 1, "categorical")
            continue
        spec = next((s for n in names if (s := profile.band(n)) is not None), None)
        if spec is not None and spec.name not in found:
            found[spec.name] = (key, asset)
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
    keep = {n for s in complete for n in s}
    files: list[tuple[str | None, str, BandKind]] = []
    declared: dict[str, float] = {}
    for spec in profile.bands:
        if spec.name in keep:
            key, asset = found[spec.name]
            files.append((spec.name, asset.get_absolute_href(), spec.kind))
            _declared(asset, declared)
    if profile.mask is not None and mask is None:
        log.warning("STAC item %s has no %s mask asset: no pixel is masked", item.id, profile.name)
    return files, mask, declared


def _generic_assets(item: Any) -> _Assets:
    files: list[tuple[str | None, str, BandKind]] = []
    mask = None
    declared: dict[str, float] = {}
    for key, asset in item.assets.items():
        roles = set(asset.roles or [])
        href = asset.get_absolute_href()
        if roles & _MASK_ROLES or key.lower() in _MASK_KEYS:
            mask = BandSource("mask", href, 1, "categorical")
        elif "data" in roles:
            _declared(asset, declared)
            names = _asset_names(key, asset)
            files.append((names[-1], href, "reflectance"))
    if not files:
        raise InputNotFoundError(
            f"STAC item {item.id} has no asset with role 'data' and matches no sensor "
            f"profile (found asset keys {sorted(item.assets)}): give the band assets "
            "roles=['data'] or set 'eoseg:sensor' to a known sensor"
        )
    return files, mask, declared


def _check_exists(item_id: str, href: str) -> None:
    if not _is_remote(href) and not Path(href.removeprefix("file://")).exists():
        raise InputNotFoundError(
            f"asset file {href} of STAC item {item_id} does not exist: expected the files "
            "the item lists beside it; download the missing asset or fix its href"
        )
