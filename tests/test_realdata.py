"""Every real sample ingests with its georeferencing intact (marked ``realdata``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import rioxarray  # noqa: F401  (registers the .rio accessor)

from eoseg.cube import ingest, open_cube

pytestmark = pytest.mark.realdata

# (source to ingest, reference file, reference band, cube band name, tolerance in std units)
CASES = [
    ("landsat7_rgb/RGB.byte.tif", "landsat7_rgb/RGB.byte.tif", 2, "band_2", 0.02),
    ("naip", "naip/m_4709963_se_14_1_20200831.tif", 4, "band_4", 0.0),
    ("sentinel2_l1c", "sentinel2_l1c/s2_B05.jp2", 1, "B05", 0.0),
    ("sentinel2_l1c", "sentinel2_l1c/s2_B01.jp2", 1, "B01", 0.1),  # 60 m resampled to 20 m
    (
        "spacenet_atlanta/sample_geotiff.tif",
        "spacenet_atlanta/sample_geotiff.tif",
        1,
        "band_1",
        0.0,
    ),
    ("alexandria/hag.tif", "alexandria/hag.tif", 1, "band_1", 0.0),
    ("sar_rotterdam/rgb_unmasked.tif", "sar_rotterdam/rgb_unmasked.tif", 3, "band_3", 0.0),
]


@pytest.mark.parametrize(
    ("source", "reference", "band", "cube_band", "tolerance"),
    CASES,
    ids=[Path(c[1]).stem for c in CASES],
)
def test_sample_ingests_with_same_ground_values(
    real_data: Path,
    tmp_path: Path,
    source: str,
    reference: str,
    band: int,
    cube_band: str,
    tolerance: float,
) -> None:
    """The same ground coordinate reads the same value in the source and the cube."""
    out = tmp_path / "cube.zarr"
    ingest([real_data / source], out, tile_size=256)
    cube = open_cube(out)
    with rasterio.open(real_data / reference) as src:
        assert cube.rio.crs.to_epsg() == src.crs.to_epsg()
        values = src.read(band).astype("float64")
        rng = np.random.default_rng(0)
        rows = rng.integers(0, src.height, 400)
        cols = rng.integers(0, src.width, 400)
        xs, ys = rasterio.transform.xy(src.transform, rows, cols)
        expected = values[rows, cols]
        nodata = src.nodata
    layer = cube["data"].isel(time=0).sel(band=cube_band)
    got = layer.sel(x=xr_points(xs), y=xr_points(ys), method="nearest").values
    ok = np.isfinite(got)
    if nodata is not None:
        # Nodata in the source is nodata (NaN) in the cube, never a zero-filled value.
        assert np.isnan(got[expected == nodata]).all()
        ok &= expected != nodata
    assert ok.sum() > 100
    scale = np.nanstd(expected[ok]) or 1.0
    error = np.median(np.abs(got[ok] - expected[ok])) / scale
    assert error <= tolerance + 1e-6


def xr_points(values: list[float]):  # type: ignore[no-untyped-def]
    import xarray as xr

    return xr.DataArray(np.asarray(values), dims="points")


@pytest.mark.parametrize("pol", ["vv", "vh"])
def test_sar_ground_values_follow_the_rotated_source(
    real_data: Path, tmp_path: Path, pol: str
) -> None:
    """The rotated complex SAR source, as dB, lines up with the cube on the ground: values
    at the same coordinates correlate (a flipped or shifted grid would not)."""
    path = real_data / f"sar_rotterdam/sar_{pol}.tif"
    out = tmp_path / "sar.zarr"
    ingest([path], out, tile_size=128)
    layer = open_cube(out)["data"].isel(time=0, band=0)
    with rasterio.open(path) as src:
        scale = float(
            src.tags()["TIFFTAG_IMAGEDESCRIPTION"].split('scale_factor": ')[1].split("}")[0]
        )
        z = src.read(1)
        rng = np.random.default_rng(1)
        rows, cols = rng.integers(5, src.height - 5, 300), rng.integers(5, src.width - 5, 300)
        xs, ys = rasterio.transform.xy(src.transform, rows, cols)
        with np.errstate(divide="ignore"):
            expected = 10 * np.log10(np.abs(z[rows, cols] * scale) ** 2)
    got = layer.sel(x=xr_points(xs), y=xr_points(ys), method="nearest").values
    ok = np.isfinite(got) & np.isfinite(expected)
    assert ok.sum() > 200
    assert np.corrcoef(got[ok], expected[ok])[0, 1] > 0.5


def test_sar_complex_becomes_db(real_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "sar.zarr"
    ingest([real_data / "sar_rotterdam/sar_vv.tif"], out, tile_size=128)
    cube = open_cube(out)
    assert cube.rio.crs.to_epsg() == 32631
    db = cube["data"].isel(time=0, band=0).values
    finite = db[np.isfinite(db)]
    assert finite.size > 0.9 * db.size
    assert -40 < np.median(finite) < 10  # backscatter in dB, not complex amplitudes


def test_sar_rgb_sample_ingests(real_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "rgb.zarr"
    ingest([real_data / "sar_rotterdam/rgb_unmasked.tif"], out, tile_size=128)
    cube = open_cube(out)
    assert cube.sizes["band"] == 3 and cube.rio.crs.to_epsg() == 32631
