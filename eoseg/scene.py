"""A scene as delivered: where its bands and mask live, its frame and how to scale it.

`scene_from_files` opens each band file's header (never its pixels, except the last one
to find truncated files) by content through GDAL, never by extension: some real files
named ``.jp2`` are GeoTIFFs.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rasterio
from affine import Affine
from odc.geo import CRS
from odc.geo.geom import BoundingBox, Geometry
from rasterio.windows import Window

from eoseg.errors import (
    BandMismatchError,
    GeoreferenceError,
    InputNotFoundError,
    UnreadableRasterError,
)
from eoseg.scene_dates import CREATION_KEY, file_date
from eoseg.scene_files import BandFile
from eoseg.sensor_profile import BandKind, BitTest, Conversion, QualityMask, SensorProfile
from eoseg.sensors import PROFILES


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
        id: Scene id (STAC item id, product id or shared file stem).
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
        datetime_source: Where ``datetime`` was read (``STAC datetime``, ``tag
            ACQUISITION_TIME``, ``file name x_20240612.tif``), or why there is none.
        transform: Pixel grid (affine) of the finest band: a default grid in the
            scene's CRS keeps it, non-square pixels included.
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
    datetime_source: str | None = None
    transform: Affine | None = None

    @property
    def band_names(self) -> tuple[str, ...]:
        """Names of the bands in cube order."""
        return tuple(b.name for b in self.bands)

    @property
    def footprint(self) -> Geometry:
        """The scene's extent as a polygon in its CRS."""
        return BoundingBox(*self.bounds, crs=self.crs).polygon


def scene_from_files(
    scene_id: str,
    files: Sequence[BandFile],
    *,
    profile: SensorProfile | None = None,
    datetime: str | None = None,
    datetime_source: str = "catalog",
    mask: BandSource | None = None,
    quality: QualityMask | None = None,
    declared: dict[str, float] | None = None,
) -> Scene:
    """Build a scene from its band files, reading their headers.

    Scale, offset and nodata come from the catalog's declaration (``declared``), else
    the sensor profile, else the file's own tags. Without a ``datetime`` (a STAC item's,
    a product id's, labelled ``datetime_source``), the date is read from the band files'
    acquisition tags, else their names (`eoseg.scene_dates`).

    Raises:
        InputNotFoundError: A file does not exist, or the scene has no band file.
        UnreadableRasterError: A file is not a raster, is truncated, or holds several
            bands under one band name.
        GeoreferenceError: A file has no CRS, or the bands' CRSs differ.
        BandMismatchError: Two files hold the same band.
    """
    profile = profile or PROFILES["generic"]
    bands, meta, best_res, tags = _band_sources(scene_id, files)
    declared = dict(declared or {})
    for key in ("scale", "offset", "nodata"):
        if key not in declared and getattr(profile, key) is not None:
            declared[key] = getattr(profile, key)
    meta = {**meta, **declared}
    when, source = (datetime, datetime_source) if datetime else _files_date(files, tags)
    return Scene(
        id=scene_id,
        sensor=profile.name,
        datetime=when,
        bands=bands,
        mask=mask,
        mask_invalid=quality.values if quality else None,
        crs=meta["crs"],
        bounds=meta["bounds"],
        resolution=best_res,
        dtype="float32" if profile.conversion else meta["dtype"],
        nodata=meta["nodata"],
        scale=float(meta["scale"]),
        offset=float(meta["offset"]),
        mask_bits=quality.invalid_bits if quality else (),
        conversion=profile.conversion,
        datetime_source=source,
        transform=meta["transform"],
    )


def _files_date(
    files: Sequence[BandFile], tags: Sequence[dict[str, str]]
) -> tuple[str | None, str]:
    """The first date the band files' tags or names give and its source, else why none."""
    for file, file_tags in zip(files, tags, strict=True):
        found = file_date(file_tags, Path(file.path).name)
        if found is not None:
            return found.value, found.source
    created = next((t[CREATION_KEY] for t in tags if CREATION_KEY in t), None)
    if created is not None:
        return None, f"none: {CREATION_KEY} {created} is the file's creation time, not used"
    return None, "none: no acquisition tag, no date in the file name"


def _band_sources(
    scene_id: str, files: Sequence[BandFile]
) -> tuple[tuple[BandSource, ...], dict[str, Any], float, list[dict[str, str]]]:
    """The scene's bands, the header of its finest band file, that resolution, and
    each file's metadata tags."""
    if not files:
        raise InputNotFoundError(
            f"scene {scene_id} has no band file, only its mask or other product layers: "
            "give the band files too (e.g. the _SR_B* files of a Landsat Level-2 scene)"
        )
    bands: list[BandSource] = []
    meta: dict[str, Any] = {}
    best_res = float("inf")
    tags: list[dict[str, str]] = []
    for file in files:
        info = raster_info(file.path)
        tags.append(info["tags"])
        name = file.name
        if info["count"] > 1 and name is not None:
            if len(files) > 1:
                raise UnreadableRasterError(
                    f"{file.path} has {info['count']} bands but is named as band {name}: "
                    "expected one band per band-named file or asset; split it with "
                    "'gdal_translate -b N' or list it without a band token"
                )
            name = None  # a lone multi-band file: its bands are named by its metadata
        for i in range(1, info["count"] + 1):
            band = name or info["descriptions"][i - 1] or f"band_{i}"
            bands.append(BandSource(band, file.path, i, file.kind))
        if meta and info["crs"] != meta["crs"]:
            raise GeoreferenceError(
                f"bands of scene {scene_id} are in different CRSs ({info['crs']} in "
                f"{file.path}, {meta['crs']} elsewhere): expected one CRS per scene; "
                "reproject the odd band or list it as its own scene"
            )
        if info["res"] < best_res:
            best_res, meta = info["res"], info
    repeated = [n for n, k in Counter(b.name for b in bands).items() if k > 1]
    if repeated:
        where = [b.href for b in bands if b.name == repeated[0]]
        raise BandMismatchError(
            f"scene {scene_id} has band {repeated[0]} in {len(where)} files ({', '.join(where)}): "
            "expected one file per band; keep one of them, or rename the files so that "
            "each names its own band (x_B02.tif, x_B03.tif)"
        )
    return tuple(bands), meta, best_res, tags


def raster_info(href: str) -> dict[str, Any]:
    """Header facts of a raster: band count and names, CRS, bounds, transform,
    resolution, dtype, nodata, scale, offset and metadata tags (the dataset's over its
    first band's).

    Raises:
        InputNotFoundError: The file does not exist.
        UnreadableRasterError: Not a raster GDAL can read, or truncated.
        GeoreferenceError: No CRS or geotransform.
    """
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
            corners = ((0, 0), (src.width, 0), (0, src.height), (src.width, src.height))
            xs, ys = zip(*(t * c for c in corners), strict=True)
            return {
                "count": src.count,
                "descriptions": list(src.descriptions),
                "crs": CRS(src.crs.to_wkt()),
                "bounds": (min(xs), min(ys), max(xs), max(ys)),
                "transform": t,
                "res": float(math.hypot(t.a, t.d)),
                "dtype": src.dtypes[0],
                "nodata": src.nodata,
                "scale": float(src.scales[0] or 1.0),
                "offset": float(src.offsets[0] or 0.0),
                "tags": {**src.tags(1), **src.tags()},
            }
    except rasterio.errors.RasterioError as exc:
        if not is_remote(href) and not Path(href).exists():
            raise InputNotFoundError(
                f"raster {href} does not exist: expected the file a catalog lists; "
                "download the missing asset or fix its href"
            ) from exc
        raise UnreadableRasterError(
            f"{href} is not a raster GDAL can read, or is truncated ({exc}): expected a "
            "complete GeoTIFF/COG/JP2; download it again or drop it from the sources"
        ) from exc


def is_remote(href: str) -> bool:
    """True for URLs other than ``file://``."""
    return "://" in href and not href.startswith("file://")
