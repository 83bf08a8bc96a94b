from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from shapely.geometry import box

from eoseg.cube import open_cube
from eoseg.errors import NoOverlapError, UnreadableVectorError
from eoseg.labels import open_labels, rasterize_labels


def test_noisy_labels_on_cube_grid(labels_path: Path, cube_path: Path) -> None:
    labels = open_labels(labels_path)
    cube = open_cube(cube_path)
    assert labels.dtype == np.uint8
    assert labels.shape == (cube.sizes["y"], cube.sizes["x"])
    np.testing.assert_array_equal(labels["x"].values, cube["x"].values)
    values = np.unique(labels.values)
    assert set(values) <= {0, 1, 2, 3, 4, 5, 255}
    assert 0.3 < (labels.values != 255).mean() < 0.95  # OSM-like: partly missing


def test_rasterized_square_matches_hand_mask(cube_path: Path, tmp_path: Path) -> None:
    """A square of exactly 5x7 pixels, given in EPSG:4326, burns exactly those pixels."""
    grid = open_cube(cube_path).odc.geobox
    x0, y0 = grid.affine.c + 10 * 20, grid.affine.f - 10 * 30
    square = box(x0, y0 - 70, x0 + 50, y0)
    frame = gpd.GeoDataFrame({"class_id": [3]}, geometry=[square], crs=grid.crs.wkt)
    path = tmp_path / "square.geojson"
    frame.to_crs("EPSG:4326").to_file(path)
    rasterize_labels(path, cube_path, tmp_path / "sq.zarr")
    got = open_labels(tmp_path / "sq.zarr").values
    expected = np.full(got.shape, 255, dtype="uint8")
    expected[30:37, 20:25] = 3
    np.testing.assert_array_equal(got, expected)


def test_class_id_geotiff_is_accepted(demo_data, cube_path: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rasterize_labels(demo_data.truth, cube_path, tmp_path / "truth.zarr")
    labels = open_labels(tmp_path / "truth.zarr").values
    assert (labels != 255).mean() > 0.7  # the truth grid is smaller than the two-scene union
    with rasterio.open(demo_data.truth) as src:
        assert set(np.unique(src.read(1))) - {255} >= set(np.unique(labels)) - {255}


def test_vector_outside_cube_is_refused(cube_path: Path, tmp_path: Path) -> None:
    frame = gpd.GeoDataFrame({"class_id": [1]}, geometry=[box(100, 10, 101, 11)], crs=4326)
    path = tmp_path / "far.geojson"
    frame.to_file(path)
    with pytest.raises(NoOverlapError, match="do not overlap the cube"):
        rasterize_labels(path, cube_path, tmp_path / "far.zarr")
    assert not (tmp_path / "far.zarr").exists()


def test_missing_class_field_is_refused(demo_data, cube_path: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UnreadableVectorError, match="--class-field"):
        rasterize_labels(
            demo_data.noisy_labels, cube_path, tmp_path / "x.zarr", class_field="landuse"
        )


def test_labels_with_a_wrong_crs_are_refused(cube_path: Path, tmp_path: Path) -> None:
    """UTM coordinates declared as EPSG:4326 (a classic sidecar mistake) do not overlap."""
    grid = open_cube(cube_path).odc.geobox
    x0, y0 = grid.affine.c, grid.affine.f
    frame = gpd.GeoDataFrame(
        {"class_id": [1]}, geometry=[box(x0, y0 - 100, x0 + 100, y0)], crs=grid.crs.wkt
    )
    path = tmp_path / "mislabelled.gpkg"
    frame.set_crs(4326, allow_override=True).to_file(path)
    with pytest.raises(NoOverlapError, match="check the labels' CRS"):
        rasterize_labels(path, cube_path, tmp_path / "x.zarr")


def test_geoparquet_labels(demo_data, cube_path: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """GeoParquet is read through pyarrow (GDAL's Parquet driver is optional)."""
    frame = gpd.read_file(demo_data.clean_labels)
    path = tmp_path / "clean.parquet"
    frame.to_parquet(path)
    rasterize_labels(path, cube_path, tmp_path / "p.zarr")
    rasterize_labels(demo_data.clean_labels, cube_path, tmp_path / "g.zarr")
    np.testing.assert_array_equal(
        open_labels(tmp_path / "p.zarr").values, open_labels(tmp_path / "g.zarr").values
    )
