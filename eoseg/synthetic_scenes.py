"""Rendering the demo's Sentinel-2-like scenes from its ground truth (`eoseg.synthetic`).

Each scene is the truth reprojected onto its own native north-up UTM grid, with class
spectra, per-field brightness, texture, sensor noise and soft clouds (kept clear of the
held-out box), written as one COG per band plus a cloud mask and described by a STAC Item.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pystac
import rasterio
import shapely
from affine import Affine
from pyproj import CRS, Transformer
from pystac.extensions.projection import ProjectionExtension
from rasterio.warp import Resampling, reproject, transform_bounds
from scipy import ndimage

if TYPE_CHECKING:
    from eoseg.synthetic import BBox, DemoSpec

log = logging.getLogger(__name__)

BANDS = ("B02", "B03", "B04", "B08")
"""Band asset keys of the demo scenes: blue, green, red, NIR."""
CLOUD_ASSET = "cloud_mask"
"""Asset key of the cloud mask (1 cloud, 0 clear, 255 outside the footprint)."""
REFLECTANCE_SCALE = 1e-4
"""Scenes store reflectance x 10000 as uint16; multiply by this to get reflectance."""

# Mean surface reflectance per class id (B02, B03, B04, B08), close to Sentinel-2 L2A values.
SPECTRA = np.array(
    [
        [0.060, 0.050, 0.030, 0.012],  # water: NIR almost fully absorbed
        [0.025, 0.045, 0.025, 0.300],  # forest: dark green, high NIR
        [0.040, 0.080, 0.050, 0.360],  # grassland
        [0.050, 0.090, 0.065, 0.420],  # cropland: brighter, rows
        [0.120, 0.125, 0.135, 0.200],  # built-up: bright grey
        [0.085, 0.095, 0.100, 0.130],  # road: grey
    ],
    dtype=np.float32,
)
_CLOUD_SPECTRUM = np.array([0.50, 0.50, 0.52, 0.55], dtype=np.float32)
_NAMES = dict(zip(BANDS, ("blue", "green", "red", "nir"), strict=True))
SCENE_DATES = (
    datetime(2024, 6, 12, 10, 20, 31, tzinfo=UTC),
    datetime(2024, 6, 14, 10, 10, 29, tzinfo=UTC),
)
"""Acquisition times of the west and east scene."""


@dataclass(frozen=True, slots=True)
class Ground:
    """The truth on the reference grid, as the scenes render it."""

    crs: CRS
    transform: Affine
    seg: np.ndarray  # int32 field / patch id per pixel
    seg_class: np.ndarray  # class id per segment
    factor: np.ndarray  # brightness factor per segment
    tex: np.ndarray  # float32 texture multiplier per pixel (crop rows included)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-smoothed white noise rescaled to zero mean and unit standard deviation."""
    n = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma)
    return (n - n.mean()) / (n.std() + 1e-12)


def _clouds(
    spec: DemoSpec, rng: np.random.Generator, valid: np.ndarray, tf: Affine, crs: CRS, box: BBox
) -> np.ndarray:
    """Soft cloud opacity (0-1) of a scene; clouds keep clear of the held-out box."""
    h, w = valid.shape
    res = spec.resolution
    r = min(spec.cloud_radius_m, 0.12 * min(h, w) * res) / res
    b = transform_bounds(4326, crs, *box, densify_pts=21)
    hx0, hx1, hy0, hy1 = np.array([b[0] - tf.c, b[2] - tf.c, tf.f - b[3], tf.f - b[1]]) / res
    wobble = smooth_noise(rng, (h, w), max(r / 4, 1.0))
    yy, xx = np.ogrid[0:h, 0:w]
    alpha = np.zeros((h, w), np.float32)
    placed = 0
    for _ in range(50 * spec.clouds_per_scene):
        if placed == spec.clouds_per_scene:
            break
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        gap = np.hypot(max(hx0 - cx, 0, cx - hx1), max(hy0 - cy, 0, cy - hy1))
        if gap < 1.5 * r or not valid[int(cy), int(cx)]:
            continue
        d2 = ((xx - cx) ** 2 + (yy - cy) ** 2) / r**2
        alpha = np.maximum(alpha, np.clip(1.8 * np.exp(-2 * d2) * (1 + 0.35 * wobble) - 0.3, 0, 1))
        placed += 1
    return alpha


def render_scene(
    cat_dir: Path,
    spec: DemoSpec,
    rng: np.random.Generator,
    ground: Ground,
    epsg: int,
    part: BBox,
    date: datetime,
    holdout_bbox: BBox,
) -> pystac.Item:
    """Render the ground inside ``part`` (reference CRS) on a native UTM grid; write its Item."""
    crs, res = CRS.from_epsg(epsg), spec.resolution
    b = transform_bounds(ground.crs, crs, *part, densify_pts=21)
    left, bottom = np.floor(b[0] / res) * res, np.floor(b[1] / res) * res
    w, h = int(np.ceil((b[2] - left) / res)), int(np.ceil((b[3] - bottom) / res))
    tf = Affine(res, 0, left, 0, -res, bottom + h * res)
    grids = {"src_transform": ground.transform, "src_crs": ground.crs, "dst_transform": tf}
    s, t = np.full((h, w), -1, np.int32), np.full((h, w), np.nan, np.float32)
    reproject(ground.seg, s, dst_crs=crs, src_nodata=-1, dst_nodata=-1, **grids)
    reproject(ground.tex, t, dst_crs=crs, resampling=Resampling.bilinear, **grids)
    valid = s >= 0
    sv = np.where(valid, s, 0)
    gain = ground.factor[sv] * np.nan_to_num(t, nan=1.0)
    surface = (SPECTRA[ground.seg_class[sv]] * gain[..., None]).transpose(2, 0, 1)
    refl = surface * rng.normal(1, 0.02, (4, 1, 1)).astype(np.float32)  # scene-wide gain
    refl += rng.normal(0, spec.noise, refl.shape).astype(np.float32)
    alpha = _clouds(spec, rng, valid, tf, crs, holdout_bbox)
    refl = refl * (1 - alpha) + alpha * _CLOUD_SPECTRUM[:, None, None]
    dn = np.clip(np.rint(refl / REFLECTANCE_SCALE), 1, 65535).astype(np.uint16)
    dn[:, ~valid] = 0
    mask = (alpha > 0.2).astype(np.uint8)
    mask[~valid] = 255

    item_id = f"S2DEMO_{date:%Y%m%dT%H%M%S}_EPSG{epsg}"
    folder = cat_dir / item_id
    folder.mkdir(parents=True, exist_ok=True)
    to_ll = Transformer.from_crs(ground.crs, 4326, always_xy=True)
    box = shapely.segmentize(shapely.box(*part), 50 * res)
    geom = shapely.transform(box, lambda p: np.column_stack(to_ll.transform(p[:, 0], p[:, 1])))
    cover = round(100 * float((mask == 1).sum()) / max(int(valid.sum()), 1), 2)
    props = {"platform": "synthetic-sentinel-2", "gsd": res, "eo:cloud_cover": cover}
    item = pystac.Item(item_id, shapely.geometry.mapping(geom), list(geom.bounds), date, props)
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    proj.epsg, proj.transform, proj.shape = epsg, list(tf)[:6], [h, w]
    item.stac_extensions.append("https://stac-extensions.github.io/raster/v1.1.0/schema.json")
    assets = [(b, f"{b} ({n})", dn[k : k + 1], "data") for k, (b, n) in enumerate(_NAMES.items())]
    for key, title, data, role in [*assets, (CLOUD_ASSET, "cloud mask", mask[None], "cloudmask")]:
        nodata, path = (0 if role == "data" else 255), folder / f"{key}.tif"
        write_cog(path, data, crs, tf, nodata, "average" if role == "data" else "nearest")
        raster: dict[str, object] = {"nodata": nodata, "data_type": str(data.dtype)}
        if role == "data":
            raster.update(scale=REFLECTANCE_SCALE, offset=0)
        extra = {"raster:bands": [raster]}
        asset = pystac.Asset(str(path), title, None, pystac.MediaType.COG, [role], extra)
        item.add_asset(key, asset)
    log.debug("scene %s: %d x %d px, %.1f %% cloud", item_id, w, h, cover)
    return item


def write_cog(
    path: Path, data: np.ndarray, crs: CRS, tf: Affine, nodata: float, resampling: str
) -> None:
    """Write ``data`` (band, y, x) as a Cloud-Optimized GeoTIFF (deflate, 256 px blocks)."""
    path.unlink(missing_ok=True)
    with rasterio.open(
        path,
        "w",
        driver="COG",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype,
        crs=crs,
        transform=tf,
        nodata=nodata,
        compress="deflate",
        blocksize=256,
        overview_resampling=resampling,
    ) as dst:
        dst.write(data)
