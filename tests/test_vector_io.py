from __future__ import annotations

import math
from pathlib import Path

import geopandas as gpd
import pyproj
import pytest
from shapely.geometry import box

from eoseg.errors import UnreadableVectorError
from eoseg.vector_io import is_text_field, read_vector, vector_info

BOXES = [box(0, 0, 10, 10), box(1000, 1000, 1010, 1010)]


def _write(path: Path, *, covering: bool = True) -> Path:
    frame = gpd.GeoDataFrame(
        {"class_id": [1, 2], "name": ["forest", "water"]}, geometry=BOXES, crs=32633
    )
    if path.suffix == ".parquet":
        frame.to_parquet(path, write_covering_bbox=covering)
    else:
        frame.to_file(path)
    return path


@pytest.mark.parametrize("name", ["v.gpkg", "v.geojson", "v.parquet", "nocover.parquet"])
def test_bbox_and_columns_limit_the_read(tmp_path: Path, name: str) -> None:
    path = _write(tmp_path / name, covering=not name.startswith("nocover"))
    near = read_vector(path, (-5, -5, 20, 20), columns=["class_id"])
    assert near["class_id"].tolist() == [1]
    assert list(near.columns) == ["class_id", "geometry"]
    assert len(read_vector(path)) == 2


@pytest.mark.parametrize("name", ["v.gpkg", "v.parquet"])
def test_info_gives_crs_fields_and_bounds_on_request(tmp_path: Path, name: str) -> None:
    path = _write(tmp_path / name)
    crs, fields, bounds = vector_info(path)
    assert crs is not None
    assert pyproj.CRS.from_user_input(crs).to_epsg() == 32633
    assert fields == ["class_id", "name"]
    assert bounds == pytest.approx((0, 0, 1010, 1010))
    assert is_text_field(path, "name") and not is_text_field(path, "class_id")
    if name.endswith(".gpkg"):
        assert all(math.isnan(v) for v in vector_info(path, bounds=False)[2])


def test_unreadable_files_are_explained(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gpkg"
    bad.write_text("not a geopackage")
    with pytest.raises(UnreadableVectorError, match="is not a vector file"):
        vector_info(bad)
    with pytest.raises(UnreadableVectorError, match="could not read"):
        read_vector(bad)
