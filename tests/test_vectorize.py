"""Tests of eoseg.vectorize: polygons from class maps, seamless across tiles."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio.features
import scipy.ndimage as ndi
import shapely
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import wrap_xr

from eoseg.classes import DEMO_CLASSES
from eoseg.errors import GeoreferenceError, InvalidParameterError
from eoseg.vectorize import vectorize, write_polygons

CRS = "EPSG:32632"


def _geobox(ny: int, nx: int) -> GeoBox:
    top = 5_300_000.0
    return GeoBox.from_bbox((500_000, top - 10 * ny, 500_000 + 10 * nx, top), CRS, resolution=10)


@pytest.fixture(scope="module")
def landscape() -> xr.DataArray:
    """96x80 px of blobby classes 0-5 with nodata speckles and a nodata strip."""
    rng = np.random.default_rng(7)
    noise = ndi.gaussian_filter(rng.normal(size=(96, 80)), 4)
    cls = np.digitize(noise, np.quantile(noise, [0.2, 0.4, 0.6, 0.8, 0.9])).astype(np.uint8)
    cls[rng.random(cls.shape) < 0.01] = 255
    cls[40:44, 10:30] = 255
    return wrap_xr(cls, _geobox(96, 80))


def _rasterize(gdf: gpd.GeoDataFrame, like: xr.DataArray) -> np.ndarray:
    gbox = like.odc.geobox
    if gdf.empty:
        return np.full(gbox.shape, 255, np.uint8)
    return rasterio.features.rasterize(
        zip(gdf.geometry, gdf["class_id"], strict=True),
        out_shape=gbox.shape,
        transform=gbox.affine,
        fill=255,
        dtype="uint8",
    )


def _chunked(da: xr.DataArray, chunks: int | tuple[int, int] | None) -> xr.DataArray:
    if chunks is None:
        return da
    cy, cx = chunks if isinstance(chunks, tuple) else (chunks, chunks)
    return da.chunk({"y": cy, "x": cx})


@pytest.mark.parametrize(
    "chunks", [None, 32, (40, 24), 13], ids=["numpy", "dask-32", "dask-40x24", "dask-13"]
)
def test_rasterize_back_reproduces_map(
    landscape: xr.DataArray, chunks: int | tuple[int, int] | None
) -> None:
    gdf = vectorize(_chunked(landscape, chunks), schema=DEMO_CLASSES)
    np.testing.assert_array_equal(_rasterize(gdf, landscape), landscape.values)
    assert gdf.geometry.is_valid.all()
    assert set(gdf.geom_type) == {"Polygon"}
    assert gdf.crs == CRS
    assert list(gdf.columns) == ["class_id", "class_name", "area_m2", "tile_row", "geometry"]
    assert (gdf["class_name"] == [DEMO_CLASSES.names[i] for i in gdf["class_id"]]).all()


@pytest.mark.parametrize("chunks", [32, (40, 24), 13], ids=["dask-32", "dask-40x24", "dask-13"])
def test_tiled_polygons_equal_whole_map_polygons(
    landscape: xr.DataArray, chunks: int | tuple[int, int]
) -> None:
    whole = vectorize(landscape, schema=DEMO_CLASSES)
    tiled = vectorize(_chunked(landscape, chunks), schema=DEMO_CLASSES)
    assert len(tiled) == len(whole)
    np.testing.assert_array_equal(tiled["class_id"], whole["class_id"])
    for a, b in zip(tiled.geometry, whole.geometry, strict=True):
        assert a.symmetric_difference(b).area == 0
    # Statistics of pieces merged across seams add up to those of the whole polygon.
    np.testing.assert_allclose(tiled["area_m2"], whole["area_m2"], rtol=1e-9)


def test_confidence_and_tile_row_of_tiled_polygons(landscape: xr.DataArray) -> None:
    conf = xr.full_like(landscape, 51)  # 0.2 everywhere
    tiled = vectorize(_chunked(landscape, 32), schema=DEMO_CLASSES, confidence=conf.chunk(32))
    np.testing.assert_allclose(tiled["confidence"], 0.2, rtol=1e-6)
    top_rows = (5_300_000 - tiled.geometry.bounds["maxy"].to_numpy()) / 10
    np.testing.assert_array_equal(tiled["tile_row"], top_rows // 32)
    assert set(tiled["tile_row"]) == {0, 1, 2}


def test_block_across_tile_corner_is_one_polygon() -> None:
    cls = np.full((32, 32), 2, np.uint8)
    cls[6:26, 6:26] = 1  # centred on the corner shared by four 16x16 tiles
    da = wrap_xr(cls, _geobox(32, 32)).chunk({"y": 16, "x": 16})
    gdf = vectorize(da, schema=DEMO_CLASSES)
    ones = gdf[gdf["class_id"] == 1]
    assert len(ones) == 1
    assert ones.geometry.iloc[0].area == pytest.approx(20 * 20 * 100)
    twos = gdf[gdf["class_id"] == 2]
    assert len(twos) == 1
    assert len(twos.geometry.iloc[0].interiors) == 1


def test_diagonal_pixels_across_seam_stay_apart() -> None:
    cls = np.zeros((8, 8), np.uint8)
    cls[3, 3] = 1
    cls[4, 4] = 1  # touches (3, 3) by a corner only, in the next tile
    da = wrap_xr(cls, _geobox(8, 8)).chunk({"y": 4, "x": 4})
    gdf = vectorize(da, schema=DEMO_CLASSES)
    assert len(gdf[gdf["class_id"] == 1]) == 2
    np.testing.assert_array_equal(_rasterize(gdf, da), cls)


@pytest.mark.parametrize("chunks", [None, 4], ids=["numpy", "dask"])
def test_nodata_makes_no_polygon(chunks: int | None) -> None:
    empty = wrap_xr(np.full((8, 8), 255, np.uint8), _geobox(8, 8))
    gdf = vectorize(_chunked(empty, chunks), schema=DEMO_CLASSES)
    assert gdf.empty
    assert list(gdf.columns) == ["class_id", "class_name", "area_m2", "tile_row", "geometry"]

    cls = np.zeros((8, 8), np.uint8)
    cls[2:6, 2:6] = 255
    gdf = vectorize(_chunked(wrap_xr(cls, _geobox(8, 8)), chunks), schema=DEMO_CLASSES)
    assert len(gdf) == 1
    assert gdf.geometry.iloc[0].area == pytest.approx((64 - 16) * 100)
    assert len(gdf.geometry.iloc[0].interiors) == 1


@pytest.mark.parametrize("chunks", [None, 32], ids=["numpy", "dask"])
def test_simplify_keeps_a_coverage(landscape: xr.DataArray, chunks: int | None) -> None:
    exact = vectorize(landscape, schema=DEMO_CLASSES)
    simple = vectorize(_chunked(landscape, chunks), schema=DEMO_CLASSES, simplify_m=15)
    assert simple.geometry.is_valid.all()
    assert bool(shapely.coverage_is_valid(simple.geometry.to_numpy()))  # no gaps/overlaps
    assert shapely.get_num_coordinates(simple.geometry.to_numpy()).sum() < (
        0.8 * shapely.get_num_coordinates(exact.geometry.to_numpy()).sum()
    )
    # Class areas move a little, never wholesale.
    for cid in range(6):
        a = exact[exact["class_id"] == cid].area.sum()
        b = simple[simple["class_id"] == cid].area.sum()
        assert b == pytest.approx(a, rel=0.15)


def test_invalid_inputs_raise(landscape: xr.DataArray) -> None:
    with pytest.raises(InvalidParameterError, match="simplify_m must be a number >= 0"):
        vectorize(landscape, schema=DEMO_CLASSES, simplify_m=-1)
    bare = xr.DataArray(np.zeros((4, 4), np.uint8), dims=("y", "x"))
    with pytest.raises(GeoreferenceError, match="no CRS"):
        vectorize(bare, schema=DEMO_CLASSES)


@pytest.mark.parametrize(
    "suffix", [".parquet", ".gpkg", ".geojson"], ids=["parquet", "gpkg", "geojson"]
)
def test_write_polygons_round_trip(landscape: xr.DataArray, tmp_path: Path, suffix: str) -> None:
    gdf = vectorize(landscape, schema=DEMO_CLASSES)
    path = write_polygons(gdf, tmp_path / f"polygons{suffix}")
    assert path == tmp_path / f"polygons{suffix}"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # nothing left aside
    back = gpd.read_parquet(path) if suffix == ".parquet" else gpd.read_file(path)
    assert len(back) == len(gdf)
    np.testing.assert_array_equal(back["class_id"], gdf["class_id"])
    assert back.crs.to_epsg() == 32632
    np.testing.assert_array_equal(_rasterize(back, landscape), landscape.values)


def test_write_polygons_rejects_unknown_suffix(tmp_path: Path) -> None:
    gdf = gpd.GeoDataFrame({"class_id": [0]}, geometry=[shapely.box(0, 0, 1, 1)], crs=CRS)
    with pytest.raises(InvalidParameterError, match=r"suffix '\.shp'"):
        write_polygons(gdf, tmp_path / "polygons.shp")
    assert list(tmp_path.iterdir()) == []


def test_ids_outside_schema_get_a_placeholder_name() -> None:
    cls = np.zeros((4, 4), np.uint8)
    cls[:, 2:] = 9
    gdf = vectorize(wrap_xr(cls, _geobox(4, 4)), schema=DEMO_CLASSES)
    assert sorted(gdf["class_name"]) == ["class_9", "water"]
