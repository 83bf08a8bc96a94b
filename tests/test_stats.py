"""Tests of eoseg.stats: pixel areas on the ellipsoid, class areas, AOIs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import dask.array
import geopandas as gpd
import numpy as np
import pyproj
import pytest
import shapely
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import wrap_xr

from eoseg.aoi import read_aoi
from eoseg.classes import DEMO_CLASSES
from eoseg.errors import (
    InputNotFoundError,
    InvalidParameterError,
    NoOverlapError,
    UnreadableVectorError,
)
from eoseg.stats import ClassAreas, class_areas, pixel_areas

UTM = "EPSG:32632"  # central meridian 9°E at easting 500 000
K0 = 0.9996
WGS84 = pyproj.Geod(ellps="WGS84")


def _utm_geobox(ny: int, nx: int, left: float = 500_000.0, top: float = 5_300_000.0) -> GeoBox:
    return GeoBox.from_bbox((left, top - 10 * ny, left + 10 * nx, top), UTM, resolution=10)


@pytest.fixture(scope="module")
def classmap() -> xr.DataArray:
    rng = np.random.default_rng(3)
    cls = rng.integers(0, 6, size=(200, 200), dtype=np.uint8)
    cls[rng.random(cls.shape) < 0.1] = 255
    return wrap_xr(cls, _utm_geobox(200, 200))


def test_utm_pixel_area_at_central_meridian() -> None:
    # Grid distances are k times ground distances, so a 10 m grid pixel covers
    # (10 / k)² m² of ground: 100 / 0.9996² = 100.080 m² on the central meridian.
    areas = pixel_areas(_utm_geobox(4, 4, left=499_980.0))
    assert areas[:, 1:3] == pytest.approx(100 / K0**2, rel=2e-6)


@pytest.mark.parametrize("left", [500_000.0, 320_000.0, 180_000.0], ids=["cm", "180km", "320km"])
def test_utm_pixel_areas_follow_scale_factor(left: float) -> None:
    gbox = _utm_geobox(8, 8, left=left)
    areas = pixel_areas(gbox)
    x, y = gbox.affine * (4.5, 4.5)
    lon, lat = pyproj.Transformer.from_crs(UTM, 4326, always_xy=True).transform(x, y)
    areal_scale = pyproj.Proj(UTM).get_factors(lon, lat).areal_scale
    assert areas[4, 4] == pytest.approx(100 / areal_scale, rel=1e-6)


def test_utm_pixel_areas_shrink_away_from_central_meridian() -> None:
    means = [pixel_areas(_utm_geobox(4, 4, left=e)).mean() for e in (500_000, 400_000, 200_000)]
    assert means[0] > means[1] > means[2]
    assert means[2] < 100.0  # k > 1 beyond ~180 km from the central meridian


def _q(lat_deg: float) -> float:
    """Authalic q(φ) of WGS84 (Snyder 1987, eq. 3-12)."""
    e = math.sqrt(WGS84.es)
    s = math.sin(math.radians(lat_deg))
    return (1 - e * e) * (s / (1 - (e * s) ** 2) - math.log((1 - e * s) / (1 + e * s)) / (2 * e))


@pytest.mark.parametrize("lat", [0.0, 30.0, 60.0, 80.0], ids=["equator", "30N", "60N", "80N"])
def test_geographic_pixel_areas_match_ellipsoid_formula(lat: float) -> None:
    res = 0.01
    gbox = GeoBox.from_bbox((10, lat, 10 + 20 * res, lat + 20 * res), "EPSG:4326", resolution=res)
    areas = pixel_areas(gbox)
    for row in (0, 10, 19):
        top = lat + (20 - row) * res
        expected = WGS84.a**2 / 2 * math.radians(res) * (_q(top) - _q(top - res))
        assert areas[row] == pytest.approx(expected, rel=1e-3)
    assert (np.diff(areas[:, 0]) > 0).all()  # rows go south: areas grow


@pytest.mark.parametrize(
    ("crs", "res", "origin"),
    [(UTM, 10.0, (180_000.0, 5_300_000.0)), ("EPSG:4326", 0.001, (8.0, 50.0))],
    ids=["utm", "geographic"],
)
def test_interpolated_corners_match_exact(
    crs: str, res: float, origin: tuple[float, float]
) -> None:
    left, top = origin
    gbox = GeoBox.from_bbox((left, top - 600 * res, left + 600 * res, top), crs, resolution=res)
    np.testing.assert_allclose(pixel_areas(gbox, step=16), pixel_areas(gbox, step=1), rtol=1e-5)


@pytest.mark.parametrize("chunks", [None, 64, 37], ids=["numpy", "dask-64", "dask-37"])
def test_whole_map_areas_sum_to_grid_area(classmap: xr.DataArray, chunks: int | None) -> None:
    m = classmap if chunks is None else classmap.chunk({"y": chunks, "x": chunks})
    got = class_areas(m, DEMO_CLASSES)
    grid_km2 = pixel_areas(classmap.odc.geobox).sum() / 1e6
    assert got.total_km2 == pytest.approx(grid_km2, rel=1e-12)
    assert sum(got.class_km2) + got.nodata_km2 == pytest.approx(got.total_km2, rel=1e-12)
    assert got.valid_km2 == pytest.approx(got.total_km2 - got.nodata_km2)
    assert got.nodata_km2 == pytest.approx(0.1 * grid_km2, rel=0.1)
    assert got.aoi_km2 is None
    whole = class_areas(classmap, DEMO_CLASSES)
    np.testing.assert_allclose(got.class_km2, whole.class_km2, rtol=1e-12)


def _square_3035_around(gbox: GeoBox, side: float = 1000.0) -> gpd.GeoDataFrame:
    """A side x side m square in ETRS89-LAEA (equal-area) centred on the grid."""
    ny, nx = gbox.shape
    cx, cy = gbox.affine * (nx / 2, ny / 2)
    x, y = pyproj.Transformer.from_crs(UTM, 3035, always_xy=True).transform(cx, cy)
    square = shapely.box(x - side / 2, y - side / 2, x + side / 2, y + side / 2)
    return gpd.GeoDataFrame(geometry=[square], crs=3035)


@pytest.mark.parametrize("form", ["gdf-3035", "shapely-4326"], ids=["gdf-3035", "shapely-4326"])
@pytest.mark.parametrize("chunks", [None, 64], ids=["numpy", "dask-64"])
def test_known_square_aoi_area(form: str, chunks: int | None) -> None:
    gbox = _utm_geobox(200, 200)
    m = wrap_xr(np.full(gbox.shape, 3, np.uint8), gbox)
    m = m if chunks is None else m.chunk({"y": chunks, "x": chunks})
    gdf = _square_3035_around(gbox)
    aoi = gdf if form == "gdf-3035" else gdf.geometry.segmentize(10.0).to_crs(4326).iloc[0]
    got = class_areas(m, DEMO_CLASSES, aoi=aoi)
    assert got.total_km2 == pytest.approx(1.0, rel=1e-5)  # border pixels by their fraction
    assert got.class_km2[3] == got.total_km2
    assert got.nodata_km2 == 0.0
    assert got.aoi_km2 == pytest.approx(1.0, rel=1e-4)


def test_aoi_areas_sum_and_tilewise_equal_whole(classmap: xr.DataArray) -> None:
    lon, lat = pyproj.Transformer.from_crs(UTM, 4326, always_xy=True).transform(501_000, 5_299_000)
    disc = shapely.Point(lon, lat).buffer(0.008)  # ~0.6 x 0.9 km ellipse in metres
    whole = class_areas(classmap, DEMO_CLASSES, aoi=disc)
    tiled = class_areas(classmap.chunk({"y": 37, "x": 37}), DEMO_CLASSES, aoi=disc)
    assert sum(whole.class_km2) + whole.nodata_km2 == pytest.approx(whole.total_km2, rel=1e-12)
    # Border fractions are float32 in exactextract: tiles agree with the whole to ~1e-10.
    np.testing.assert_allclose(tiled.class_km2, whole.class_km2, rtol=1e-8)
    assert tiled.nodata_km2 == pytest.approx(whole.nodata_km2, rel=1e-8)
    assert whole.total_km2 == pytest.approx(whole.aoi_km2, rel=1e-4)


def test_tiles_outside_aoi_are_not_read(classmap: xr.DataArray) -> None:
    def forbid_first(block: np.ndarray, block_info: dict | None = None) -> np.ndarray:
        if block_info is not None and block_info[0]["chunk-location"] == (0, 0):
            raise RuntimeError("tile (0, 0) was read")
        return block

    lazy = classmap.chunk({"y": 100, "x": 100})
    lazy = lazy.copy(data=dask.array.map_blocks(forbid_first, lazy.data, dtype=np.uint8))
    # Tiles split at (501 000, 5 299 000): this box lies in the bottom-right tile only.
    aoi = gpd.GeoDataFrame(geometry=[shapely.box(501_200, 5_298_200, 501_800, 5_298_800)])
    got = class_areas(lazy, DEMO_CLASSES, aoi=aoi.set_crs(UTM))
    assert got.total_km2 == pytest.approx(0.36 / 0.9996**2, rel=1e-5)  # grid to ground
    assert got.tiles == 1


def test_aoi_outside_map_raises(classmap: xr.DataArray) -> None:
    with pytest.raises(
        NoOverlapError, match=r"lies outside the area of the class map.*choose an AOI"
    ):
        class_areas(classmap, DEMO_CLASSES, aoi=shapely.box(20, 10, 21, 11))


def test_unknown_class_id_raises(classmap: xr.DataArray) -> None:
    bad = classmap.copy(data=np.where(classmap.values == 5, 9, classmap.values).astype(np.uint8))
    with pytest.raises(InvalidParameterError, match=r"ids \[9\] that the schema"):
        class_areas(bad, DEMO_CLASSES)


def test_to_dict(classmap: xr.DataArray) -> None:
    got = class_areas(classmap, DEMO_CLASSES)
    d = json.loads(json.dumps(got.to_dict(), allow_nan=False))
    assert [c["name"] for c in d["classes"]] == list(DEMO_CLASSES.names)
    assert sum(c["fraction"] for c in d["classes"]) == pytest.approx(1.0)
    assert d["tiles"] == 1
    assert isinstance(got, ClassAreas)


def test_read_aoi_box() -> None:
    assert read_aoi("8.5,47.0,9.5,48") == shapely.box(8.5, 47.0, 9.5, 48.0)


@pytest.mark.parametrize(
    ("spec", "error", "match"),
    [
        ("8.5,47,abc,48", InvalidParameterError, "four numbers"),
        ("9.5,47,8.5,48", InvalidParameterError, "minx < maxx"),
        ("47,8,48,95", InvalidParameterError, "lon before lat"),
        ("missing.geojson", InputNotFoundError, "neither an existing file nor a box"),
    ],
    ids=["not-a-number", "swapped", "lat-out-of-range", "missing-file"],
)
def test_read_aoi_bad_spec(spec: str, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        read_aoi(spec)


@pytest.mark.parametrize("suffix", [".geojson", ".gpkg"], ids=["geojson", "gpkg"])
def test_read_aoi_file_unions_features_in_any_crs(tmp_path: Path, suffix: str) -> None:
    a = _square_3035_around(_utm_geobox(200, 200))
    b = a.translate(xoff=1000.0)  # adjacent square: union is a 2 x 1 km rectangle
    gdf = gpd.GeoDataFrame(geometry=[a.geometry.iloc[0], b.geometry.iloc[0]], crs=3035)
    path = tmp_path / f"aoi{suffix}"
    gdf.to_file(path)
    geom = read_aoi(str(path))
    assert geom.geom_type == "Polygon"
    assert abs(WGS84.geometry_area_perimeter(geom)[0]) == pytest.approx(2e6, rel=1e-3)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("this is not json", "cannot be read"),
        (
            '{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {},'
            ' "geometry": {"type": "Point", "coordinates": [9, 48]}}]}',
            "holds no polygon",
        ),
    ],
    ids=["garbage", "points-only"],
)
def test_read_aoi_unreadable_file(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "aoi.geojson"
    path.write_text(content)
    with pytest.raises(UnreadableVectorError, match=match):
        read_aoi(str(path))
