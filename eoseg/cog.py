"""A layer of a class map as a Cloud-Optimized GeoTIFF: classes, or confidence.

Streamed: the class map's Zarr store is read tile by tile into a tiled GeoTIFF beside the
output, then GDAL's COG driver builds the overviews and the COG layout (tiles, overviews
and header in the order the COG rules ask) from that file, block by block. GDAL's block
cache is bounded (`GDAL_CACHE_MB`), so peak memory follows the tile size, not the map's
size (``benchmarks/products.py`` measures it). The file appears at its final path only
once complete, with a QGIS style (``<name>.qml``, `eoseg.styles`) beside it.

- ``class``: uint8 class ids, nodata 255, the schema's colour table, band description
  ``class`` and a ``class_<id>`` = name tag per class (GeoTIFF keeps no category names or
  attribute table inside the file: GDAL puts those in an ``.aux.xml``; the .qml gives
  QGIS the names). Overviews by ``MODE``: each overview pixel is a class of the pixels
  below it (averaging ids would invent classes).
- ``confidence``: uint8 top-class probability x 255, nodata 0 (a valid pixel's top class
  of n has probability >= 1/n >= 1/255, i.e. >= 1), overviews by ``AVERAGE`` of the valid
  pixels, horizontal predictor (smooth values compress better as differences).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
import rasterio.shutil
import xarray as xr
from odc.geo.geobox import GeoBox
from rasterio.windows import Window

from eoseg.classes import IGNORE_ID, ClassSchema
from eoseg.classmap import open_classmap
from eoseg.dates import DATE_FIELD, DateChoice, select_date, selected_date
from eoseg.grid import crs_of, iter_tiles
from eoseg.outputs import PRODUCT_KEY, check_output, check_replaceable
from eoseg.storage import resolve
from eoseg.styles import check_style, confidence_style, raster_style, write_style

log = logging.getLogger(__name__)

CogLayer = Literal["class", "confidence"]
BLOCK_SIZE = 512
"""Side of the COG's internal tiles and of its smallest overview (px)."""
COMPRESS = "ZSTD"
"""ZSTD (GDAL >= 2.3, QGIS, rasterio, geotiff.js): 5-11% smaller than DEFLATE on the real
samples' class maps, and faster to decode."""
GDAL_CACHE_MB = 256
"""GDAL's block cache while writing (its default is 5% of the machine's memory, which
would make peak memory grow with the map up to that bound)."""


@dataclass(frozen=True, slots=True)
class _Layout:
    """How one layer is stored."""

    nodata: int
    resampling: str  # GDAL overview resampling
    predictor: int  # TIFF predictor: 1 none, 2 horizontal differencing
    description: str


_LAYOUTS: dict[CogLayer, _Layout] = {
    # Class ids change in steps: differencing turns each step into two values and does
    # not pay (3-10% larger on the real samples' maps); on confidence it saves 4-7%.
    "class": _Layout(IGNORE_ID, "MODE", 1, "class"),
    "confidence": _Layout(0, "AVERAGE", 2, "confidence (top-class probability x 255)"),
}
_FLAGS: dict[CogLayer, str] = {"class": "--cog", "confidence": "--confidence-cog"}


def write_cog(
    classmap_path: Path | str,
    out: Path | str,
    *,
    layer: CogLayer = "class",
    overwrite: bool = False,
    date: DateChoice = None,
) -> Path | str:
    """Write one layer of a class map (of one date) as a Cloud-Optimized GeoTIFF.

    Args:
        classmap_path: The class map store.
        out: The GeoTIFF to write; its QGIS style goes to ``out`` with suffix ``.qml``.
        layer: ``class`` (ids, nodata 255, colours) or ``confidence`` (nodata 0).
        overwrite: Replace an existing ``out``.
        date: The date of a multi-date class map (see `eoseg.dates.select_date`).

    Returns:
        ``out``: 512 px tiles, ZSTD, internal overviews; its ``date`` tag names the
        date of a multi-date map, ``layer`` the layer.

    Raises:
        InvalidParameterError: A multi-date map without ``date``, or a date it lacks.
        OutputExistsError: ``out`` (or its .qml) holds something that may not be replaced.
    """
    flag = _FLAGS[layer]
    check_output(out, "cog", overwrite=overwrite, inputs={"CLASSMAP": classmap_path}, flag=flag)
    check_style(out, flag)
    purpose = f"or put {DATE_FIELD} in the {flag} path to export each"
    ds = select_date(open_classmap(classmap_path), date, purpose=purpose)
    schema = ClassSchema.from_dict(ds.attrs["classes"])
    target = resolve(out)
    # Written locally (beside a local out, so the rename is atomic), then moved into
    # place or uploaded with one PUT (`eoseg.storage.Location.writing`).
    with target.writing(".tif") as final_tmp, rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        staged = _stage(ds, layer, schema, final_tmp.with_name("tiled.tif"))
        layout = _LAYOUTS[layer]
        rasterio.shutil.copy(
            staged,
            final_tmp,
            driver="COG",
            COMPRESS=COMPRESS,
            PREDICTOR="YES" if layout.predictor == 2 else "NO",
            BLOCKSIZE=BLOCK_SIZE,
            OVERVIEW_RESAMPLING=layout.resampling,
            BIGTIFF="IF_SAFER",
        )
        staged.unlink()
        if target.local is not None:
            check_replaceable(target.local, final_tmp)
    write_style(out, raster_style(schema) if layer == "class" else confidence_style())
    log.info("wrote %s COG %s", layer, out)
    return out


def _stage(ds: xr.Dataset, layer: CogLayer, schema: ClassSchema, path: Path) -> Path:
    """Copy one layer tile by tile into a tiled GeoTIFF with its colours and tags."""
    grid: GeoBox = ds.odc.geobox
    layout = _LAYOUTS[layer]
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "dtype": "uint8",
        "count": 1,
        "nodata": layout.nodata,
        "width": grid.shape.x,
        "height": grid.shape.y,
        "crs": crs_of(grid).wkt,
        "transform": grid.affine,
        "tiled": True,
        "blockxsize": BLOCK_SIZE,
        "blockysize": BLOCK_SIZE,
        # Fast and small: this file is read once, by the COG driver.
        "compress": "zstd",
        "zstd_level": 1,
        "predictor": layout.predictor,
        "BIGTIFF": "IF_SAFER",
    }
    values = ds[layer]
    with rasterio.open(path, "w", **profile) as dst:
        for tile in iter_tiles(grid, int(ds.attrs["tile_size"])):
            block = np.asarray(values[tile.ys, tile.xs].values, dtype="uint8")
            dst.write(block, 1, window=Window(tile.x0, tile.y0, tile.width, tile.height))
        dst.set_band_description(1, layout.description)
        if layer == "class":
            colours = {c.id: (*c.rgb(), 255) for c in schema}
            dst.write_colormap(1, {**colours, IGNORE_ID: (0, 0, 0, 0)})
            dst.update_tags(1, **{f"class_{c.id}": c.name for c in schema})
        day = selected_date(ds)
        dst.update_tags(
            **{PRODUCT_KEY: "cog"},  # what makes it replaceable by a new export
            layer=layer,
            model=ds.attrs.get("model_version", ""),
            run_id=ds.attrs.get("run_id", ""),
            **({"date": day} if day else {}),
        )
    return path
