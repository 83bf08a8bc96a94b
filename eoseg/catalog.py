"""Scene discovery: GeoTIFF files and folders, and static STAC catalogs.

A source is a GeoTIFF/COG file, a folder of them, or a STAC catalog / collection / item
JSON file. Files are opened by content through GDAL, never by extension (some real files
named ``.jp2`` are GeoTIFFs). Single-band files in one folder whose names end in a band
token (``..._B04.tif``, ``..._B8A.jp2``, ``..._VV.tif``) form one multi-band scene.

STAC assets: an asset with role ``data`` is a band (named by its ``eo:bands`` name or its
key); an asset with role ``cloud``/``cloudmask``/``cloud-mask`` or key ``SCL`` is the
scene's quality mask (non-zero, or the sensor's listed values, means invalid).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rasterio
from odc.geo import CRS
from odc.geo.geom import BoundingBox, Geometry

from eoseg.errors import GeoreferenceError, InputNotFoundError, UnreadableRasterError
from eoseg.sensors import get_profile

log = logging.getLogger(__name__)

_BAND_TOKEN = re.compile(r"(?:^|[_\-.])(B\d{1,2}A?|VV|VH|HH|HV)$", re.IGNORECASE)
_MASK_ROLES = {"cloud", "cloudmask", "cloud-mask", "cloud_mask"}
_MASK_KEYS = {"scl", "cloudmask", "cloud_mask", "cloud-mask"}


@dataclass(frozen=True, slots=True)
class BandSource:
    """Where one band of a scene lives: a raster file and a 1-based band index."""

    name: str
    href: str
    index: int = 1


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
        dtype: Stored dtype of the bands (``complex64`` SAR is read as dB intensity).
        nodata: Stored nodata value, if any.
        scale: Multiplier from stored to physical values.
        offset: Added after scaling.
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

    @property
    def band_names(self) -> tuple[str, ...]:
        """Names of the bands in cube order."""
        return tuple(b.name for b in self.bands)

    @property
    def footprint(self) -> Geometry:
        """The scene's extent as a polygon in its CRS."""
        return BoundingBox(*self.bounds, crs=self.crs).polygon


def discover_scenes(sources: Sequence[str | Path]) -> list[Scene]:
    """Turn user sources into scenes, in the order given.

    Raises:
        InputNotFoundError: A source does not exist or a folder holds no raster.
        UnreadableRasterError: A file is not a raster GDAL can read.
        GeoreferenceError: A raster has no CRS or transform.
    """
    scenes: list[Scene] = []
    for source in sources:
        path = Path(source)
        if not path.exists():
            raise InputNotFoundError(
                f"source {path} does not exist: give GeoTIFF/COG files, folders of them, "
                "or a STAC catalog/collection/item JSON file"
            )
        if path.is_dir():
            scenes.extend(_scenes_from_folder(path))
        elif path.suffix.lower() == ".json":
            scenes.extend(_scenes_from_stac(path))
        else:
            scenes.append(_scene_from_files(path.stem, [(None, path)]))
    if not scenes:
        raise InputNotFoundError(f"no rasters found in {', '.join(map(str, sources))}")
    return scenes


def _scenes_from_folder(folder: Path) -> list[Scene]:
    stac = [p for p in (folder / "catalog.json", folder / "collection.json") if p.exists()]
    if stac:
        return _scenes_from_stac(stac[0])
    files = sorted(p for p in folder.iterdir() if p.is_file() and _is_raster_name(p))
    if not files:
        raise InputNotFoundError(f"folder {folder} holds no raster files (.tif/.tiff/.jp2)")
    grouped: dict[str, list[tuple[str | None, Path]]] = {}
    for f in files:
        match = _BAND_TOKEN.search(f.stem)
        if match:
            prefix = f.stem[: match.start()] or "scene"
            grouped.setdefault(prefix, []).append((match.group(1).upper(), f))
        else:
            grouped.setdefault(f.stem, []).append((None, f))
    return [_scene_from_files(f"{folder.name}:{key}", items) for key, items in grouped.items()]


def _is_raster_name(path: Path) -> bool:
    return path.suffix.lower() in {".tif", ".tiff", ".jp2", ".vrt", ".img"}


def _scene_from_files(
    scene_id: str,
    files: Iterable[tuple[str | None, Path]],
    *,
    sensor: str = "generic",
    datetime: str | None = None,
    mask: BandSource | None = None,
    declared: dict[str, float] | None = None,
) -> Scene:
    bands: list[BandSource] = []
    meta: dict[str, Any] = {}
    best_res = float("inf")
    for band_name, path in files:
        info = _raster_info(path)
        if info["count"] > 1 and band_name is not None:
            raise UnreadableRasterError(
                f"{path} has {info['count']} bands but its name marks it as band {band_name}: "
                "expected one band per band-named file"
            )
        for i in range(1, info["count"] + 1):
            name = band_name or info["descriptions"][i - 1] or f"band_{i}"
            bands.append(BandSource(name, str(path), i))
        if info["res"] < best_res:
            best_res = info["res"]
            meta = info
        elif info["crs"] != meta["crs"]:
            raise GeoreferenceError(
                f"bands of scene {scene_id} are in different CRSs ({info['crs']} in {path}, "
                f"{meta['crs']} elsewhere): expected one CRS per scene"
            )
    profile = get_profile(sensor)
    # Precedence: the sensor profile, then the catalog's declaration, then the file's tags.
    meta = {**meta, **(declared or {})}
    return Scene(
        id=scene_id,
        sensor=sensor,
        datetime=datetime,
        bands=tuple(bands),
        mask=mask,
        mask_invalid=profile.mask_invalid,
        crs=meta["crs"],
        bounds=meta["bounds"],
        resolution=best_res,
        dtype=meta["dtype"],
        nodata=meta["nodata"] if profile.nodata is None else profile.nodata,
        scale=meta["scale"] if profile.scale is None else profile.scale,
        offset=meta["offset"] if profile.offset is None else profile.offset,
    )


def _raster_info(path: Path) -> dict[str, Any]:
    try:
        with rasterio.open(path) as src:
            if src.crs is None or src.transform.is_identity:
                raise GeoreferenceError(
                    f"{path} has no CRS or geotransform: expected a georeferenced raster; "
                    "assign one with 'gdal_edit.py -a_srs EPSG:XXXX -a_ullr ...'"
                )
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
    except rasterio.errors.RasterioIOError as exc:
        raise UnreadableRasterError(
            f"{path} is not a raster GDAL can read ({exc}): expected a GeoTIFF/COG; "
            "check that the file is complete and not corrupt"
        ) from exc


def _scenes_from_stac(path: Path) -> list[Scene]:
    import pystac  # local: only STAC sources need it

    try:
        obj = pystac.read_file(str(path))
    except Exception as exc:
        raise UnreadableRasterError(
            f"{path} is not a STAC catalog, collection or item ({exc})"
        ) from exc
    if isinstance(obj, pystac.Item):
        items = [obj]
    elif isinstance(obj, pystac.Catalog):  # collections are catalogs too
        items = list(obj.get_items(recursive=True))
    else:
        raise UnreadableRasterError(f"{path} is a STAC {type(obj).__name__}, not a catalog or item")
    if not items:
        raise InputNotFoundError(f"STAC {path} lists no items")
    return [_scene_from_item(item) for item in items]


def _scene_from_item(item: Any) -> Scene:
    files: list[tuple[str | None, Path]] = []
    mask = None
    declared: dict[str, float] = {}
    for key, asset in item.assets.items():
        roles = set(asset.roles or [])
        href = Path(asset.get_absolute_href())
        if roles & _MASK_ROLES or key.lower() in _MASK_KEYS:
            mask = BandSource("mask", str(href), 1)
        elif "data" in roles:
            eo = asset.extra_fields.get("eo:bands") or []
            raster = (asset.extra_fields.get("raster:bands") or [{}])[0]
            declared.update(
                {
                    k: float(raster[k])
                    for k in ("scale", "offset", "nodata")
                    if raster.get(k) is not None
                }
            )
            files.append((eo[0].get("name", key) if len(eo) == 1 else key, href))
    if not files:
        raise InputNotFoundError(f"STAC item {item.id} has no asset with role 'data'")
    sensor = str(item.properties.get("eoseg:sensor", "generic"))
    when = item.datetime.isoformat() if item.datetime else None
    return _scene_from_files(
        item.id, files, sensor=sensor, datetime=when, mask=mask, declared=declared
    )
