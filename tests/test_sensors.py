"""Each sensor profile on a tiny scene in its native layout, listed in a static STAC item."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
from odc.geo.geobox import GeoBox
from pyproj import Transformer
from rasterio.warp import transform_bounds

from eoseg.catalog import Scene, discover_scenes
from eoseg.sensors import BitTest, detect_profile, get_profile, invalid_by_mask
from eoseg.warp import read_scene
from tests.conftest import write_geotiff

SINU = "+proj=sinu +lon_0=0 +x_0=0 +y_0=0 +R=6371007.181 +units=m +no_defs"
MODIS_RES = 463.312716528
S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
# Earth Search v1 keys and native resolutions of the Sentinel-2 L2A bands.
S2_KEYS = dict(
    zip(
        S2_BANDS,
        (
            "coastal",
            "blue",
            "green",
            "red",
            "rededge1",
            "rededge2",
            "rededge3",
            "nir",
            "nir08",
            "nir09",
            "swir16",
            "swir22",
        ),
        strict=True,
    )
)
S2_RES = dict(zip(S2_BANDS, (60, 10, 10, 10, 20, 20, 20, 10, 20, 60, 20, 20), strict=True))


def write_tif(
    path: Path,
    data: np.ndarray,
    crs: str,
    origin: tuple[float, float],
    res: float,
    nodata: float | None = None,
) -> Path:
    """Write ``data`` (y, x) as a one-band GeoTIFF with its top-left corner at ``origin``."""
    return write_geotiff(path, data, crs=crs, origin=origin, res=res, nodata=nodata)


def write_item(
    folder: Path,
    item_id: str,
    props: dict[str, Any],
    assets: dict[str, tuple[Path, dict]],
    collection: str | None = None,
) -> Path:
    """A STAC item listing ``assets`` (key -> (file, extra fields)) saved as item.json."""
    with rasterio.open(next(iter(assets.values()))[0]) as src:
        bbox = list(transform_bounds(src.crs, "EPSG:4326", *src.bounds))
    geom = {
        "type": "Polygon",
        "coordinates": [
            [
                [bbox[0], bbox[1]],
                [bbox[2], bbox[1]],
                [bbox[2], bbox[3]],
                [bbox[0], bbox[3]],
                [bbox[0], bbox[1]],
            ]
        ],
    }
    when = datetime(2024, 5, 1, 10, 30, tzinfo=UTC)
    item = pystac.Item(item_id, geom, bbox, when, props, collection=collection)
    for key, (path, extra) in assets.items():
        roles = extra.pop("roles", ["data"])
        item.add_asset(
            key, pystac.Asset(str(path), key, None, pystac.MediaType.GEOTIFF, roles, extra)
        )
    out = folder / f"{item_id}.json"
    item.save_object(dest_href=str(out), include_self_link=False)
    return out


def native_box(scene: Scene) -> GeoBox:
    """The scene's own frame at its finest resolution."""
    return GeoBox.from_bbox(scene.bounds, scene.crs, resolution=scene.resolution, tight=True)


# -- Sentinel-2 L2A -----------------------------------------------------------------------

SCL = np.full((30, 30), 4, dtype="uint8")  # 4 = vegetation
SCL[0:5, 0:5], SCL[10:12, 20:30], SCL[25:, 3:6], SCL[15, 15] = 9, 8, 3, 10


def s2_item(folder: Path, style: str, drop: str | None = None) -> Path:
    """An S2 L2A scene (600 m square in 33N), Earth Search or Planetary Computer style."""
    folder.mkdir(parents=True, exist_ok=True)
    origin = (500000.0, 5000000.0)
    assets: dict[str, tuple[Path, dict]] = {}
    for i, band in enumerate(S2_BANDS):
        if band == drop:
            continue
        n = 600 // S2_RES[band]
        cols = np.arange(n, dtype="uint16")
        dn = np.broadcast_to(1000 + 100 * i + (10 * cols if band == "B01" else 0 * cols), (n, n))
        path = write_tif(
            folder / f"{band}.tif",
            np.ascontiguousarray(dn),
            "EPSG:32633",
            origin,
            S2_RES[band],
            nodata=0,
        )
        raster = {"nodata": 0, "data_type": "uint16", "scale": 0.0001, "offset": -0.1}
        key = S2_KEYS[band] if style == "earth-search" else band
        assets[key] = (path, {"raster:bands": [raster]} if style == "earth-search" else {})
    scl = write_tif(folder / "SCL.tif", SCL, "EPSG:32633", origin, 20, nodata=0)
    assets["scl" if style == "earth-search" else "SCL"] = (scl, {"roles": ["data"]})
    props = {
        "platform": "sentinel-2a",
        "constellation": "sentinel-2",
        "instruments": ["msi"],
        "s2:processing_baseline": "05.10",
        "eo:cloud_cover": 12.0,
    }
    return write_item(folder, f"S2A_33TUL_20240501_{style}", props, assets, "sentinel-2-l2a")


@pytest.mark.parametrize("style", ["earth-search", "planetary-computer"])
def test_sentinel2_l2a(tmp_path: Path, style: str) -> None:
    (scene,) = discover_scenes([s2_item(tmp_path, style)])
    assert scene.sensor == "sentinel-2-l2a"
    assert scene.band_names == S2_BANDS
    assert (scene.scale, scene.offset, scene.resolution) == (1e-4, -0.1, 10.0)
    values, ok = read_scene(scene, native_box(scene))
    assert values.shape == (12, 60, 60)  # 10, 20 and 60 m bands on one 10 m grid
    # Baseline >= 04.00: reflectance = DN * 1e-4 - 0.1 (declared or implied by the rule).
    np.testing.assert_allclose(values[1][ok], 1100 * 1e-4 - 0.1, atol=1e-6)
    # B01 is a ramp of 10 DN per 60 m column: bilinear on 10 m keeps it exact inside.
    x = (np.arange(60) + 0.5) * 10
    expected = (1000 + 10 * (x / 60 - 0.5)) * 1e-4 - 0.1
    np.testing.assert_allclose(values[0, 40, 6:-6], expected[6:-6], atol=1e-5)
    # SCL (20 m, nearest): cloud, shadow and cirrus pixels are invalid and NaN.
    bad = np.isin(SCL, (0, 1, 3, 8, 9, 10)).repeat(2, 0).repeat(2, 1)
    np.testing.assert_array_equal(ok, ~bad)
    assert np.isnan(values[:, bad]).all()


# -- Sentinel-1 GRD -----------------------------------------------------------------------


def s1_item(folder: Path) -> Path:
    """VV/VH float32 linear backscatter, 10 m, with a zero (no data) border of 4 px."""
    folder.mkdir(parents=True, exist_ok=True)
    vv = np.zeros((40, 40), dtype="float32")
    vv[4:-4, 4:-4] = 0.1
    vv[4:-4, 20:36:2] = 0.3  # alternating columns: averaging must happen in linear power
    vh = np.zeros((40, 40), dtype="float32")
    vh[4:-4, 4:-4] = 0.01
    origin = (600000.0, 5000000.0)
    assets = {
        "vv": (write_tif(folder / "vv.tif", vv, "EPSG:32633", origin, 10), {}),
        "vh": (write_tif(folder / "vh.tif", vh, "EPSG:32633", origin, 10), {}),
    }
    props = {
        "platform": "SENTINEL-1A",
        "constellation": "Sentinel-1",
        "instruments": ["c-sar"],
        "sar:polarizations": ["VV", "VH"],
        "sar:instrument_mode": "IW",
        "sar:product_type": "GRD",
    }
    return write_item(folder, "S1A_IW_GRDH_1SDV_20240501", props, assets, "sentinel-1-grd")


def test_sentinel1_grd_linear_to_db(tmp_path: Path) -> None:
    (scene,) = discover_scenes([s1_item(tmp_path)])
    assert (scene.sensor, scene.band_names, scene.conversion) == (
        "sentinel-1-grd",
        ("VV", "VH"),
        "linear_to_db",
    )
    values, ok = read_scene(scene, native_box(scene))
    np.testing.assert_allclose(values[0, 10, 5:19], -10.0, atol=1e-5)  # linear 0.1
    np.testing.assert_allclose(values[1, 10, 5:35], -20.0, atol=1e-5)  # linear 0.01
    border = np.ones((40, 40), dtype=bool)
    border[4:-4, 4:-4] = False
    np.testing.assert_array_equal(ok, ~border)  # zero border is no data, not -inf dB
    # On a 20 m grid the 0.1/0.3 pairs average to linear 0.2 (-6.99 dB), not the dB mean.
    coarse = GeoBox.from_bbox(scene.bounds, scene.crs, resolution=20)
    values20, _ = read_scene(scene, coarse)
    np.testing.assert_allclose(values20[0, 6, 10:18], 10 * np.log10(0.2), atol=1e-4)


# -- MODIS surface reflectance ------------------------------------------------------------

LON, LAT = 3.0, 10.0  # near the central meridian of UTM 31N


def modis_item(folder: Path) -> tuple[Path, tuple[float, float], np.ndarray]:
    """A MOD09GA-like scene in the sinusoidal grid: 500 m bands, 1 km state QA."""
    folder.mkdir(parents=True, exist_ok=True)
    x, y = Transformer.from_crs(4326, SINU, always_xy=True).transform(LON, LAT)
    origin = (
        np.floor(x / MODIS_RES) * MODIS_RES - 12 * MODIS_RES,
        np.ceil(y / MODIS_RES) * MODIS_RES + 12 * MODIS_RES,
    )
    rows, cols = np.mgrid[0:24, 0:24]
    assets: dict[str, tuple[Path, dict]] = {}
    for b in range(1, 8):
        dn = (1000 * b + 20 * cols + 5 * rows).astype("int16")
        dn[0, 0] = -28672
        path = write_tif(folder / f"b{b:02d}.tif", dn, SINU, origin, MODIS_RES, nodata=-28672)
        raster = {"nodata": -28672, "scale": 0.0001, "data_type": "int16"}
        assets[f"sur_refl_b{b:02d}"] = (path, {"raster:bands": [raster]})
    qa = np.full((12, 12), 0b1000_0100, dtype="uint16")  # clear; other bits set don't matter
    qa[2:5, 3:6], qa[8, 1:4], qa[10, 10] = 0b01, 0b10, 0b11  # cloudy, mixed, not set
    qa_path = write_tif(folder / "state_1km.tif", qa, SINU, origin, 2 * MODIS_RES)
    assets["state_1km"] = (qa_path, {"roles": ["data"]})
    props = {"platform": "terra", "instruments": ["modis"]}
    return (
        write_item(folder, "MOD09GA.A2024122.h18v07", props, assets, "modis-09GA-061"),
        origin,
        qa,
    )


def test_modis_reprojects_to_utm_with_qa_bits(tmp_path: Path) -> None:
    import rioxarray  # noqa: F401  (registers .rio)

    from eoseg.cube import ingest, open_cube

    item, origin, qa = modis_item(tmp_path / "modis")
    (scene,) = discover_scenes([item])
    assert scene.sensor == "modis-sr" and scene.band_names[0] == "sur_refl_b01"
    assert (scene.scale, scene.nodata, scene.mask_bits) == (1e-4, -28672, (BitTest(0, 2, (0,)),))
    ingest([item], tmp_path / "cube.zarr", crs="EPSG:32631", resolution=250.0, tile_size=64)
    cube = open_cube(tmp_path / "cube.zarr")
    assert cube.rio.crs.to_epsg() == 32631
    data = cube["data"].isel(time=0).sel(band="sur_refl_b01").values
    valid = cube["valid"].isel(time=0).values.astype(bool)
    # Every cube pixel centre, mapped back into the sinusoidal grid.
    xs, ys = np.meshgrid(cube["x"].values, cube["y"].values)
    sx, sy = Transformer.from_crs(32631, SINU, always_xy=True).transform(xs, ys)
    col, row = (sx - origin[0]) / MODIS_RES, (origin[1] - sy) / MODIS_RES
    inside = (col > 1) & (col < 23) & (row > 1) & (row < 23)
    expected = (1000 + 20 * (col - 0.5) + 5 * (row - 0.5)) * 1e-4
    inner = inside & valid
    assert inner.sum() > 200
    # The same ground point reads the same value (bilinear of a ramp: within 0.3 px).
    np.testing.assert_allclose(data[inner], expected[inner], atol=20 * 0.3e-4)
    # QA: 1 km pixels with cloud state != 00 are invalid; away from QA pixel edges exact.
    qc, qr = col / 2, row / 2
    firm = inside & (np.abs(qc - np.round(qc)) > 0.1) & (np.abs(qr - np.round(qr)) > 0.1)
    cloudy = (qa[np.clip(qr.astype(int), 0, 11), np.clip(qc.astype(int), 0, 11)] & 3) != 0
    assert (cloudy & firm).sum() > 10
    np.testing.assert_array_equal(valid[firm], ~cloudy[firm])


# -- CBERS-4 / CBERS-4A -------------------------------------------------------------------

# (profile, collection, platform, instrument, [(asset key, resolution, cube band)])
CBERS = [
    (
        "cbers4-mux",
        "CBERS4-MUX",
        "CBERS-4",
        "MUX",
        [(f"BAND{i}", 20, f"BAND{i}") for i in range(5, 9)],
    ),
    (
        "cbers4-wfi",
        "CBERS4-WFI",
        "CBERS-4",
        "WFI",
        [(f"BAND{i}", 64, f"BAND{i}") for i in range(13, 17)],
    ),
    (
        "cbers4-wfi",
        "CBERS4AWFI",
        "CBERS-4",
        "AWFI",  # AMS Kepler (CBERS on AWS) keys
        [(f"B{i}", 64, f"BAND{i}") for i in range(13, 17)],
    ),
    ("cbers4-pan", "CBERS4-PAN5M", "CBERS-4", "PAN5M", [("BAND1", 5, "BAND1")]),
    (
        "cbers4-pan",
        "CBERS4-PAN10M",
        "CBERS-4",
        "PAN10M",
        [(f"BAND{i}", 10, f"BAND{i}") for i in range(2, 5)],
    ),
    (
        "cbers4a-wpm",
        "CBERS4A-WPM-L4-DN",
        "CBERS-4A",
        "WPM",
        [("BAND0", 2, "BAND0"), *((f"BAND{i}", 8, f"BAND{i}") for i in range(1, 5))],
    ),
    (
        "cbers4a-wpm",
        "my-archive",
        "CBERS-4A",
        "WPM",  # recognised by platform + instrument
        [("BAND0", 2, "BAND0"), *((f"BAND{i}", 8, f"BAND{i}") for i in range(1, 5))],
    ),
]


@pytest.mark.parametrize(
    ("profile", "collection", "platform", "instrument", "bands"),
    CBERS,
    ids=[f"{c[0]}-{c[1]}" for c in CBERS],
)
def test_cbers(
    tmp_path: Path,
    profile: str,
    collection: str,
    platform: str,
    instrument: str,
    bands: list[tuple[str, float, str]],
) -> None:
    extent = 320.0  # metres: a whole number of pixels at 2, 5, 8, 10, 20 and 64 m
    assets: dict[str, tuple[Path, dict]] = {}
    for k, (key, res, _) in enumerate(bands):
        n = int(extent // res)
        dn = np.full((n, n), 50 + 10 * k, dtype="uint8")
        dn[0, :] = 0  # nodata row at the top
        path = write_tif(
            tmp_path / f"CBERS_{instrument}_{key}.tif",
            dn,
            "EPSG:32723",
            (300000.0, 7400000.0),
            res,
            nodata=0,
        )
        assets[key] = (path, {"eo:bands": [{"name": key}]})
    props = {"platform": platform, "instruments": [instrument], "sensor": instrument}
    (scene,) = discover_scenes(
        [write_item(tmp_path, f"CBERS_{instrument}", props, assets, collection)]
    )
    assert scene.sensor == profile
    assert scene.band_names == tuple(b for _, _, b in bands)
    assert scene.resolution == min(r for _, r, _ in bands) and scene.scale == 1.0
    values, ok = read_scene(scene, native_box(scene))
    for k in range(len(bands)):
        assert np.nanmax(values[k]) == 50 + 10 * k  # digital numbers, unscaled
    assert not ok[0].any() and ok[-1].all()  # the nodata row is invalid in every band


# -- profile rules ------------------------------------------------------------------------


def test_detect_profile_rules() -> None:
    assert detect_profile("sentinel-2-l2a").name == "sentinel-2-l2a"
    assert detect_profile(None, "Sentinel-2B", "Sentinel 2").name == "sentinel-2-l2a"
    assert detect_profile("CBERS4PAN10M").name == "cbers4-pan"
    assert detect_profile(None, "CBERS-4", None, ("MUX",)).name == "cbers4-mux"
    assert detect_profile(None, "CBERS-4", None, ("IRS",)).name == "generic"
    assert detect_profile(None, "synthetic-sentinel-2").name == "generic"
    assert get_profile("sentinel-2-l2a").band("nir08").name == "B8A"  # type: ignore[union-attr]


def test_mask_by_values_and_bits() -> None:
    codes = np.array([0, 1, 2, 3, 4, 8, 0b100])
    assert invalid_by_mask(codes, None).tolist() == [0, 1, 1, 1, 1, 1, 1]
    assert invalid_by_mask(codes, (3, 8)).tolist() == [0, 0, 0, 1, 0, 1, 0]
    bits = (BitTest(0, 2, (0,)),)
    assert invalid_by_mask(codes, (), bits).tolist() == [0, 1, 1, 1, 0, 0, 0]
