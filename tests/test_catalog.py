from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from eoseg.catalog import discover_scenes
from eoseg.errors import GeoreferenceError, InputNotFoundError, UnreadableRasterError


def _write(path: Path, count: int = 1, crs: str | None = "EPSG:32632") -> Path:
    data = np.arange(count * 20 * 30, dtype="uint16").reshape(count, 20, 30)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=30,
        height=20,
        count=count,
        dtype="uint16",
        crs=crs,
        transform=from_origin(500000, 5300000, 10, 10),
        nodata=0,
    ) as dst:
        dst.write(data)
    return path


def test_stac_catalog_gives_two_zone_scenes(demo_data) -> None:  # type: ignore[no-untyped-def]
    scenes = discover_scenes([demo_data.catalog])
    assert len(scenes) == 2
    assert {s.crs.epsg for s in scenes} == {32632, 32633}
    assert all(s.mask is not None for s in scenes)
    assert scenes[0].band_names == scenes[1].band_names == ("B02", "B03", "B04", "B08")


def test_folder_of_band_files_is_one_scene(tmp_path: Path) -> None:
    for band in ("B04", "B8A"):
        _write(tmp_path / f"T32_20240101_{band}.jp2")  # GeoTIFF content behind a .jp2 name
    (scene,) = discover_scenes([tmp_path])
    assert scene.band_names == ("B04", "B8A")
    assert scene.bounds == (500000.0, 5299800.0, 500300.0, 5300000.0)


def test_multiband_file_bands_are_numbered(tmp_path: Path) -> None:
    (scene,) = discover_scenes([_write(tmp_path / "x.tif", count=3)])
    assert scene.band_names == ("band_1", "band_2", "band_3")
    assert scene.nodata == 0 and scene.resolution == 10.0


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="does not exist"):
        discover_scenes([tmp_path / "nope.tif"])


def test_corrupt_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00garbage" * 10)
    with pytest.raises(UnreadableRasterError, match="not a raster GDAL can read"):
        discover_scenes([bad])


def test_truncated_file(tmp_path: Path) -> None:
    good = _write(tmp_path / "good.tif")
    cut = tmp_path / "cut.tif"
    cut.write_bytes(good.read_bytes()[:200])
    with pytest.raises(UnreadableRasterError):
        discover_scenes([cut])


def test_no_crs(tmp_path: Path) -> None:
    path = tmp_path / "nocrs.tif"
    with rasterio.open(path, "w", driver="GTiff", width=4, height=4, count=1, dtype="uint8") as dst:
        dst.write(np.ones((1, 4, 4), dtype="uint8"))
    with pytest.raises(GeoreferenceError, match="no CRS"):
        discover_scenes([path])
