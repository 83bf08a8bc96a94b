"""Reading a scene's pixels onto a grid window (GDAL's warper under the hood).

Only the source pixels under the window are read, so a task's memory is one tile's worth
whatever the scene size. Band values come back as float32 physical values (scale and
offset applied), NaN where the scene has no data. The sensor profile decides the rest:
categorical bands and masks resample with nearest, reflectance/backscatter bilinear (average
when the source is much finer); linear backscatter becomes dB after resampling; the mask
marks pixels invalid by values or by bit tests.
"""

from __future__ import annotations

import logging
import math
import re

import numpy as np
import rasterio
from odc.geo.geobox import GeoBox
from rasterio import windows
from rasterio.enums import Resampling
from rasterio.warp import reproject, transform_bounds

from eoseg.errors import UnreadableRasterError
from eoseg.grid import crs_of
from eoseg.scene import BandSource, Scene
from eoseg.sensor_profile import invalid_by_mask

log = logging.getLogger(__name__)

_SCALE_IN_TAG = re.compile(r'"scale_factor"\s*:\s*([0-9.eE+-]+)')


def choose_resampling(source_res: float, target_res: float) -> Resampling:
    """Bilinear for similar resolutions, average when the source is much finer."""
    return Resampling.average if source_res * 1.5 < target_res else Resampling.bilinear


def read_scene(scene: Scene, box: GeoBox) -> tuple[np.ndarray, np.ndarray]:
    """Read all bands of a scene onto ``box``.

    Returns:
        ``(values, ok)``: float32 ``(band, y, x)`` physical values with NaN where invalid,
        and a boolean ``(y, x)`` mask that is true where every band is valid and the
        scene's quality mask (if any) says clear.
    """
    ny, nx = box.shape.y, box.shape.x
    values = np.full((len(scene.bands), ny, nx), np.nan, dtype="float32")
    for i, band in enumerate(scene.bands):
        values[i] = _read_band(scene, band, box)
    ok = ~np.isnan(values).any(axis=0)
    if scene.mask is not None:
        ok &= _read_mask(scene, box)
        values[:, ~ok] = np.nan
    return values, ok


def _read_band(scene: Scene, band: BandSource, box: GeoBox) -> np.ndarray:
    dst = np.full((box.shape.y, box.shape.x), np.nan, dtype="float32")
    target_res = abs(box.resolution.x)
    try:
        with rasterio.open(band.href) as src:
            src_res = abs(src.transform.a)
            if band.kind == "categorical":
                resampling = Resampling.nearest  # class codes must not be blended
            else:
                resampling = choose_resampling(src_res, target_res)
            if np.dtype(src.dtypes[band.index - 1]).kind == "c":
                return _read_complex_db(src, band, box, resampling)
            if scene.conversion == "linear_to_db":
                return _read_linear_db(scene, src, band, box, resampling)
            reproject(
                source=rasterio.band(src, band.index),
                destination=dst,
                src_nodata=scene.nodata,
                dst_transform=box.affine,
                dst_crs=crs_of(box).wkt,
                dst_nodata=np.nan,
                resampling=resampling,
            )
    except rasterio.errors.RasterioIOError as exc:
        raise UnreadableRasterError(
            f"could not read band {band.name} of scene {scene.id} from {band.href} ({exc}): "
            "check that the file is complete and not corrupt"
        ) from exc
    if (scene.scale, scene.offset) != (1.0, 0.0):
        dst = dst * np.float32(scene.scale) + np.float32(scene.offset)
    return dst


def _read_linear_db(
    scene: Scene,
    src: rasterio.DatasetReader,
    band: BandSource,
    box: GeoBox,
    resampling: Resampling,
) -> np.ndarray:
    """Linear backscatter to dB: resample in linear power (physical averaging), then
    ``10*log10``; values <= 0 (GRD border noise, no data) become NaN."""
    dst = np.full((box.shape.y, box.shape.x), np.nan, dtype="float32")
    try:
        win = _source_window(src, box)
    except rasterio.errors.WindowError:
        return dst
    raw = src.read(band.index, window=win).astype("float32")
    power = raw * np.float32(scene.scale) + np.float32(scene.offset)
    bad = raw <= 0
    if scene.nodata is not None:
        bad |= raw == np.float32(scene.nodata)
    power[bad | ~np.isfinite(power)] = np.nan
    return _power_to_db(power, src, win, box, resampling)


def _source_window(src: rasterio.DatasetReader, box: GeoBox) -> windows.Window:
    full = windows.Window(0, 0, src.width, src.height)
    if not src.transform.is_rectilinear:
        return full  # a rotated source has no axis-aligned window: read it whole
    bounds = transform_bounds(crs_of(box).wkt, src.crs, *box.boundingbox, densify_pts=21)
    win = windows.from_bounds(*bounds, transform=src.transform)
    # Two pixels of margin keep the resampling kernel whole at the window edge.
    col0, row0 = math.floor(win.col_off) - 2, math.floor(win.row_off) - 2
    col1 = math.ceil(win.col_off + win.width) + 2
    row1 = math.ceil(win.row_off + win.height) + 2
    return windows.Window(col0, row0, col1 - col0, row1 - row0).intersection(full)


def _read_complex_db(
    src: rasterio.DatasetReader, band: BandSource, box: GeoBox, resampling: Resampling
) -> np.ndarray:
    """Complex SAR to backscatter in dB: ``10*log10(|z*scale|^2)``, averaged in linear power."""
    dst = np.full((box.shape.y, box.shape.x), np.nan, dtype="float32")
    try:
        win = _source_window(src, box)
    except rasterio.errors.WindowError:
        return dst
    z = src.read(band.index, window=win)
    match = _SCALE_IN_TAG.search(src.tags().get("TIFFTAG_IMAGEDESCRIPTION", ""))
    scale = float(match.group(1)) if match else 1.0
    power = (np.abs(z.astype("complex64") * scale) ** 2).astype("float32")
    power[z == 0] = np.nan  # zero samples are outside the SAR swath
    return _power_to_db(power, src, win, box, resampling)


def _power_to_db(
    power: np.ndarray,
    src: rasterio.DatasetReader,
    win: windows.Window,
    box: GeoBox,
    resampling: Resampling,
) -> np.ndarray:
    """Resample linear power (NaN = invalid) onto ``box``, then convert to dB."""
    dst = np.full((box.shape.y, box.shape.x), np.nan, dtype="float32")
    reproject(
        source=power,
        destination=dst,
        src_transform=src.window_transform(win),
        src_crs=src.crs,
        src_nodata=np.nan,
        dst_transform=box.affine,
        dst_crs=crs_of(box).wkt,
        dst_nodata=np.nan,
        resampling=resampling,
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        db = 10.0 * np.log10(dst)
    db[~np.isfinite(db)] = np.nan
    return db.astype("float32")


def _read_mask(scene: Scene, box: GeoBox) -> np.ndarray:
    """True where the scene's quality mask says the pixel is usable."""
    mask = scene.mask
    if mask is None:
        return np.ones((box.shape.y, box.shape.x), dtype=bool)
    dst = np.full((box.shape.y, box.shape.x), np.nan, dtype="float32")
    try:
        with rasterio.open(mask.href) as src:
            # Nearest keeps mask classes and QA bits intact; 'max' would over-mask.
            reproject(
                source=rasterio.band(src, mask.index),
                destination=dst,
                dst_transform=box.affine,
                dst_crs=crs_of(box).wkt,
                dst_nodata=np.nan,
                resampling=Resampling.nearest,
            )
    except rasterio.errors.RasterioIOError as exc:
        raise UnreadableRasterError(
            f"could not read the quality mask of scene {scene.id} from {mask.href} ({exc}): "
            "check that the file is complete and not corrupt"
        ) from exc
    covered = ~np.isnan(dst)
    codes = np.nan_to_num(dst, nan=0).astype("int64")
    return covered & ~invalid_by_mask(codes, scene.mask_invalid, scene.mask_bits)
