"""The class map as a Cloud-Optimized GeoTIFF.

The COG is written without loading the map: tiles are copied window by window into a
tiled GeoTIFF with a colour table, overviews are built with ``mode`` resampling (the
right choice for classes; averaging class ids would invent classes), and GDAL's COG
driver lays it out. The file appears at its final path only once complete.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from odc.geo.geobox import GeoBox
from rasterio.windows import Window

from eoseg.classes import IGNORE_ID, ClassSchema
from eoseg.classmap import open_classmap
from eoseg.dates import DATE_FIELD, DateChoice, select_date, selected_date
from eoseg.grid import crs_of, iter_tiles
from eoseg.outputs import PRODUCT_KEY, check_output, check_replaceable

log = logging.getLogger(__name__)


def write_cog(
    classmap_path: Path, out: Path, *, overwrite: bool = False, date: DateChoice = None
) -> Path:
    """Write the ``class`` layer of a class map (of one date) as a Cloud-Optimized GeoTIFF.

    Args:
        classmap_path: The class map store.
        out: The GeoTIFF to write.
        overwrite: Replace an existing ``out``.
        date: The date of a multi-date class map (see `eoseg.dates.select_date`).

    Returns:
        ``out``, holding uint8 class ids (nodata 255), a colour table and overviews; its
        ``date`` tag names the date of a multi-date map.

    Raises:
        InvalidParameterError: A multi-date map without ``date``, or a date it lacks.
    """
    check_output(out, "cog", overwrite=overwrite, inputs={"CLASSMAP": classmap_path}, flag="--cog")
    purpose = f"or put {DATE_FIELD} in the --cog path to export each"
    ds = select_date(open_classmap(classmap_path), date, purpose=purpose)
    day = selected_date(ds)
    grid: GeoBox = ds.odc.geobox
    schema = ClassSchema.from_dict(ds.attrs["classes"])
    tile_size = int(ds.attrs["tile_size"])
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".cog-") as tmp:
        staged = Path(tmp) / "tiled.tif"
        profile = {
            "driver": "GTiff",
            "dtype": "uint8",
            "count": 1,
            "nodata": IGNORE_ID,
            "width": grid.shape.x,
            "height": grid.shape.y,
            "crs": crs_of(grid).wkt,
            "transform": grid.affine,
            "tiled": True,
            "blockxsize": 512,
            "blockysize": 512,
            "compress": "deflate",
            "BIGTIFF": "IF_SAFER",
        }
        with rasterio.open(staged, "w", **profile) as dst:
            for tile in iter_tiles(grid, tile_size):
                block = np.asarray(ds["class"][tile.ys, tile.xs].values)
                dst.write(block, 1, window=Window(tile.x0, tile.y0, tile.width, tile.height))
            dst.write_colormap(1, {c.id: (*c.rgb(), 255) for c in schema})
            dst.update_tags(1, **{f"class_{c.id}": c.name for c in schema})
            dst.update_tags(
                **{PRODUCT_KEY: "cog"},  # what makes it replaceable by a new export
                model=ds.attrs.get("model_version", ""),
                run_id=ds.attrs.get("run_id", ""),
                **({"date": day} if day else {}),
            )
        final_tmp = Path(tmp) / "cog.tif"
        rasterio.shutil.copy(
            staged,
            final_tmp,
            driver="COG",
            COMPRESS="DEFLATE",
            BLOCKSIZE=512,
            OVERVIEW_RESAMPLING="MODE",
            BIGTIFF="IF_SAFER",
        )
        check_replaceable(out, final_tmp)
        os.replace(final_tmp, out)
    log.info("wrote COG %s", out)
    return out
