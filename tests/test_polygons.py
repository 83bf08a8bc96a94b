"""Tests of the polygon product: attributes, min-area merge, partitioned GeoParquet,
GeoPackage and GeoJSON (eoseg.vectorize, eoseg.polygon_merge, eoseg.polygon_io)."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import geopandas as gpd
import numpy as np
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pyproj
import pytest
import rasterio.features
import scipy.ndimage as ndi
import shapely
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import wrap_xr
from typer.testing import CliRunner

from eoseg.classes import DEMO_CLASSES, IGNORE_ID
from eoseg.cli import app
from eoseg.outputs import identify
from eoseg.polygon_io import write_polygon_product
from eoseg.publish import export_classmap
from eoseg.stats import class_areas
from eoseg.vectorize import map_tolerance, vectorize
from tests.badinput import run_inprocess
from tests.classmaps import utm_grid, write_classmap

GEOD = pyproj.Geod(ellps="WGS84")


def _geographic_grid(ny: int, nx: int) -> GeoBox:
    """A grid of 0.0001-degree pixels (about 11 x 7.5 m) in EPSG:4326 near 48° N."""
    res = 0.0001
    return GeoBox.from_bbox(
        (11.0, 48.0 - res * ny, 11.0 + res * nx, 48.0), "EPSG:4326", resolution=res
    )


def _landscape(ny: int = 96, nx: int = 80, seed: int = 7) -> np.ndarray:
    """Blobby classes 0-5 with nodata speckles and a nodata strip."""
    rng = np.random.default_rng(seed)
    noise = ndi.gaussian_filter(rng.normal(size=(ny, nx)), 4)
    cls = np.digitize(noise, np.quantile(noise, [0.2, 0.4, 0.6, 0.8, 0.9])).astype(np.uint8)
    cls[rng.random(cls.shape) < 0.01] = IGNORE_ID
    cls[40:44, 10:30] = IGNORE_ID
    return cls


def _maps(grid: GeoBox, tile: int, seed: int = 7) -> tuple[xr.DataArray, xr.DataArray]:
    cls = _landscape(*grid.shape.yx, seed=seed)
    conf = np.random.default_rng(seed + 1).integers(1, 256, cls.shape).astype(np.uint8)
    conf[cls == IGNORE_ID] = 0
    cls_da, conf_da = wrap_xr(cls, grid), wrap_xr(conf, grid)
    chunks = dict.fromkeys(cls_da.dims, tile)  # y/x, or latitude/longitude
    return cls_da.chunk(chunks), conf_da.chunk(chunks)


def _rasterize(gdf: gpd.GeoDataFrame, grid: GeoBox, values: np.ndarray) -> np.ndarray:
    return rasterio.features.rasterize(
        zip(gdf.geometry, values, strict=True),
        out_shape=grid.shape.yx,
        transform=grid.affine,
        fill=-1,
        dtype="int32",
    )


def _is_coverage(gdf: gpd.GeoDataFrame, grid: GeoBox) -> bool:
    """No overlaps, no gaps between neighbours, checked on the pixel outlines in grid
    pixel units (exact integers) with a vertex on every pixel corner (GEOS wants a vertex
    wherever a neighbour has one)."""
    inv = ~grid.affine
    pixels = shapely.transform(
        gdf.geometry.to_numpy(),
        lambda c: np.rint(
            np.column_stack(
                (
                    inv.a * c[:, 0] + inv.b * c[:, 1] + inv.c,
                    inv.d * c[:, 0] + inv.e * c[:, 1] + inv.f,
                )
            )
        ),
    )
    return bool(shapely.coverage_is_valid(shapely.segmentize(pixels, 1.0)))


def _components(cls: np.ndarray) -> int:
    """4-connected regions of one class, over all classes."""
    return sum(ndi.label(cls == c)[1] for c in np.unique(cls) if c != IGNORE_ID)


GRIDS = {"utm": utm_grid(96, 80), "epsg4326": _geographic_grid(96, 80)}


@pytest.mark.parametrize("kind", list(GRIDS), ids=list(GRIDS))
def test_polygons_reproduce_map_with_exact_attributes(kind: str) -> None:
    """Several tiles (24 px): rasterizing back gives the map, one polygon per 4-connected
    region (no seam cuts one), areas are the pixels' ellipsoidal areas, confidence their
    mean."""
    grid = GRIDS[kind]
    cls, conf = _maps(grid, 24)
    gdf = vectorize(cls, schema=DEMO_CLASSES, confidence=conf)
    back = _rasterize(gdf, grid, gdf["class_id"].to_numpy())
    np.testing.assert_array_equal(np.where(back < 0, IGNORE_ID, back), cls.values)
    assert len(gdf) == _components(cls.values)
    assert gdf.geometry.is_valid.all() and set(gdf.geom_type) == {"Polygon"}
    assert _is_coverage(gdf, grid)
    # Areas: per class, the same as eoseg.stats; per polygon, the geodesic area of its
    # outline in lon/lat (edges cut to 1 m so they follow the grid's lines).
    stats = class_areas(cls, DEMO_CLASSES)
    for cid in range(6):
        total = gdf.loc[gdf["class_id"] == cid, "area_m2"].sum()
        assert total == pytest.approx(stats.class_km2[cid] * 1e6, rel=1e-9)
    lonlat = gdf.to_crs("EPSG:4326").geometry
    step = 1.0 if kind == "utm" else 1e-5
    geodesic = [abs(GEOD.geometry_area_perimeter(shapely.segmentize(g, step))[0]) for g in lonlat]
    np.testing.assert_allclose(gdf["area_m2"], geodesic, rtol=1e-5)
    # Confidence: the mean of the map's confidence (0-1) over each polygon's pixels.
    index = _rasterize(gdf, grid, np.arange(len(gdf)))
    flat = index.ravel()
    inside = flat >= 0
    sums = np.bincount(flat[inside], weights=conf.values.ravel()[inside], minlength=len(gdf))
    counts = np.bincount(flat[inside], minlength=len(gdf))
    np.testing.assert_allclose(gdf["confidence"], sums / counts / 255, rtol=1e-6)


def _one_pixel_between_two_classes() -> np.ndarray:
    """Class 2 (large, west) and class 3 (smaller, east) with a pixel of class 1 on their
    border that shares 3 edges with class 3 and 1 with class 2; a pixel of class 4 alone in
    nodata; a 1-px line of class 5 cutting class 0 in two."""
    cls = np.full((20, 20), 2, np.uint8)
    cls[:10, 12:] = 3
    cls[4, 12] = 1  # west edge on class 2, three edges on class 3
    cls[10:, :] = IGNORE_ID
    cls[15, 3] = 4  # an island in nodata
    cls[12:19, 8:20] = 0
    cls[12:19, 13] = 5  # a line splitting class 0
    return cls


def test_min_area_merges_into_largest_neighbour_and_stays_gap_free() -> None:
    cls = _one_pixel_between_two_classes()
    grid = utm_grid(20, 20)
    da = wrap_xr(cls, grid).chunk({"y": 8, "x": 8})
    exact = vectorize(da, schema=DEMO_CLASSES)
    merged = vectorize(da, schema=DEMO_CLASSES, min_area_m2=1000)  # 10 pixels of ~100 m²
    back = _rasterize(merged, grid, merged["class_id"].to_numpy())
    assert back[4, 12] == 2  # the largest neighbour (by area), not the longest border
    assert back[15, 3] == 4  # an island keeps its pixel: no neighbour to take it
    assert (back[12:19, 8:20] == 0).all()  # the line joined class 0 ...
    assert (merged["class_id"] == 0).sum() == 1  # ... and its halves are one polygon
    assert 1 not in set(merged["class_id"]) and 5 not in set(merged["class_id"])
    has_neighbour = merged["class_id"] != 4
    assert (merged.loc[has_neighbour, "area_m2"] >= 1000).all()
    # Gap-free: the same valid area, no overlaps, no holes where the map has a class.
    np.testing.assert_array_equal(back < 0, cls == IGNORE_ID)
    geoms = merged.geometry.to_numpy()
    assert _is_coverage(merged, grid)
    assert shapely.union_all(geoms).area == pytest.approx(exact.geometry.area.sum())
    assert merged["area_m2"].sum() == pytest.approx(exact["area_m2"].sum(), rel=1e-12)


@pytest.mark.parametrize("kind", list(GRIDS), ids=list(GRIDS))
def test_min_area_then_simplify_keeps_the_coverage(kind: str) -> None:
    grid = GRIDS[kind]
    cls, conf = _maps(grid, 32)
    exact = vectorize(cls, schema=DEMO_CLASSES, confidence=conf)
    out = vectorize(cls, schema=DEMO_CLASSES, confidence=conf, min_area_m2=2000, simplify_m=15)
    geoms = out.geometry.to_numpy()
    assert out.geometry.is_valid.all()
    assert bool(shapely.coverage_is_valid(geoms))
    assert shapely.is_empty(shapely.coverage_invalid_edges(geoms)).all()
    assert len(out) < len(exact)
    assert shapely.union_all(geoms).area == pytest.approx(
        shapely.area(exact.geometry.to_numpy()).sum(), rel=0.02
    )
    assert out["area_m2"].sum() == pytest.approx(exact["area_m2"].sum(), rel=1e-12)
    vertices = shapely.get_num_coordinates(geoms).sum()
    assert vertices < 0.8 * shapely.get_num_coordinates(exact.geometry.to_numpy()).sum()


def test_tolerance_in_metres_per_crs() -> None:
    assert map_tolerance(utm_grid(8, 8), 15) == 15
    geo = _geographic_grid(96, 80)
    lat = 48.0 - 0.0048
    m_lat = GEOD.inv(11.004, lat - 0.5, 11.004, lat + 0.5)[2]  # ~111.2 km a degree
    m_lon = GEOD.inv(10.504, lat, 11.504, lat)[2]  # ~74.6 km a degree
    assert map_tolerance(geo, 15) == pytest.approx(15 / np.sqrt(m_lat * m_lon), rel=1e-6)
    feet = GeoBox.from_bbox((0, 0, 100, 100), "EPSG:2263", resolution=10)  # US survey feet
    assert map_tolerance(feet, 0.3048006096) == pytest.approx(1.0)


def _partition_of(folder: Path) -> dict[str, int]:
    """Partition (tile row) of each part file's polygons, by their top edge."""
    return {p.parent.name: len(pq.read_table(p)) for p in sorted(folder.glob("*/part.parquet"))}


def test_partitioned_geoparquet_reads_as_one_table(tmp_path: Path) -> None:
    cls = _landscape(100, 70)
    grid = utm_grid(100, 70)
    cmap = write_classmap(
        tmp_path / "map.zarr", cls, grid, DEMO_CLASSES, tile=32, attrs={"model_version": "m-7"}
    )
    out = tmp_path / "polygons.parquet"
    doc = export_classmap(cmap, polygons=out)
    assert identify(out).kind == "polygons"
    assert sorted(_partition_of(out)) == [f"tile_row={r:04d}" for r in range(4)]
    assert sum(_partition_of(out).values()) == doc["polygon_count"] == _components(cls)
    marker = json.loads((out / "_eoseg.json").read_text())
    assert marker["partitions"] == 4 and marker["rows"] == doc["polygon_count"]
    part = next(out.glob("tile_row=0001/*.parquet"))
    schema = pq.read_schema(part)
    geo = json.loads(schema.metadata[b"geo"])
    assert "bbox" in schema.names and "covering" in geo["columns"]["geometry"]
    assert "tile_row" not in schema.names  # the key lives in the folder name

    table = gpd.read_parquet(out)
    assert len(table) == doc["polygon_count"] and table.crs.to_epsg() == 32632
    assert list(table.columns[:5]) == [
        "class_id",
        "class_name",
        "area_m2",
        "confidence",
        "model_version",
    ]
    assert (table["model_version"] == "m-7").all()
    np.testing.assert_allclose(table["confidence"], 200 / 255, rtol=1e-6)
    # Each polygon lies in the partition of its top pixel row, and only there.
    top_rows = np.floor((5_300_000 - table.geometry.bounds["maxy"].to_numpy()) / 10 + 0.5)
    np.testing.assert_array_equal(table["tile_row"].astype(int), top_rows // 32)
    back = _rasterize(table, grid, table["class_id"].to_numpy())
    np.testing.assert_array_equal(np.where(back < 0, IGNORE_ID, back), cls)
    dataset = pads.dataset(out, format="parquet", partitioning="hive")
    assert dataset.count_rows() == len(table)
    sql = f"""select count(*), sum(area_m2), count(distinct tile_row)
              from read_parquet('{out}/**/*.parquet', hive_partitioning = true)"""
    count, area, rows = duckdb.sql(sql).fetchall()[0]
    assert (count, rows) == (len(table), 4)
    assert area == pytest.approx(table["area_m2"].sum(), rel=1e-12)


@pytest.mark.parametrize("suffix", [".gpkg", ".geojson"], ids=["gpkg", "geojson"])
def test_single_file_formats_hold_the_same_polygons(tmp_path: Path, suffix: str) -> None:
    cls = _landscape(70, 70)
    cmap = write_classmap(tmp_path / "map.zarr", cls, utm_grid(70, 70), DEMO_CLASSES, tile=32)
    parquet = tmp_path / "p.parquet"
    export_classmap(cmap, polygons=parquet, min_area=500)
    doc = export_classmap(cmap, polygons=tmp_path / f"p2{suffix}", min_area=500)
    one = gpd.read_file(doc["polygons"]).sort_values(["class_id", "area_m2"]).reset_index()
    many = gpd.read_parquet(parquet).sort_values(["class_id", "area_m2"]).reset_index()
    assert len(one) == len(many) == doc["polygon_count"]
    np.testing.assert_array_equal(one["class_id"], many["class_id"])
    np.testing.assert_allclose(one["area_m2"], many["area_m2"], rtol=1e-9)
    assert identify(doc["polygons"]).kind == "polygons"


def test_export_replaces_a_polygon_folder_only_with_overwrite(tmp_path: Path) -> None:
    cls = _landscape(40, 40)
    cmap = write_classmap(tmp_path / "map.zarr", cls, utm_grid(40, 40), DEMO_CLASSES, tile=16)
    out = tmp_path / "p.parquet"
    args = ["export", str(cmap), "--polygons", str(out), "--json"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert run_inprocess(args).exit_code == 2
    again = CliRunner().invoke(
        app, [*args, "--overwrite", "--min-area", "2000", "--simplify", "10"]
    )
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["polygon_count"] < json.loads(first.stdout)["polygon_count"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.zarr", "p.parquet", "p.qml"]
    bad = run_inprocess([*args, "--overwrite", "--min-area", "-5"])
    assert bad.exit_code == 2 and "--min-area" in bad.output
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep")
    refused = run_inprocess(
        ["export", str(cmap), "--polygons", str(tmp_path / "other"), "--overwrite"]
    )
    assert refused.exit_code == 2 and (tmp_path / "other" / "notes.txt").exists()


def test_empty_map_writes_a_readable_empty_table(tmp_path: Path) -> None:
    da = wrap_xr(np.full((16, 16), IGNORE_ID, np.uint8), utm_grid(16, 16))
    gdf = vectorize(da, schema=DEMO_CLASSES)
    path = write_polygon_product(gdf, tmp_path / "p.parquet")
    assert len(gpd.read_parquet(path)) == 0


def test_partitions_are_written_on_the_cluster(client: object, tmp_path: Path) -> None:
    """With a distributed client current, vectorising and writing run as its tasks."""
    from distributed import get_task_stream

    cls, conf = _maps(utm_grid(96, 80), 32)
    with get_task_stream(client) as stream:  # type: ignore[arg-type]
        gdf = vectorize(cls, schema=DEMO_CLASSES, confidence=conf)
        write_polygon_product(gdf, tmp_path / "p.parquet")
    names = [t["key"][0] if isinstance(t["key"], tuple) else t["key"] for t in stream.data]
    assert sum(str(n).startswith("_write_part") for n in names) == 3  # one per tile row
    assert sum(str(n).startswith("_vectorize_tile") for n in names) == 9  # one per tile
    assert len(gpd.read_parquet(tmp_path / "p.parquet")) == len(gdf)
