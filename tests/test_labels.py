from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import zarr
from odc.geo.geobox import GeoBox
from rasterio.transform import from_origin
from shapely.geometry import box
from typer.testing import CliRunner

from eoseg.classes import ClassSchema, LandClass
from eoseg.cli import app
from eoseg.cube import open_cube
from eoseg.errors import InvalidParameterError, NoOverlapError, UnreadableVectorError
from eoseg.labels import labels_template, open_labels, rasterize_labels
from eoseg.store import create_store, publish, staging_path


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


# Code maps: a tiny 8 x 6 grid of 10 m pixels in UTM 33N with 4 px tiles (4 tiles, the
# south ones 2 px high). Rectangles are (e, s) metres east and south of the top-left
# corner; their edges sit 2-3 m from the nearest pixel centres (e, s = 5, 15, ...).
X0, Y0, W, H, N = 500_000.0, 5_300_000.0, 8, 6, 255
SCHEMA = ClassSchema(
    (
        LandClass(0, "water", "#1f78b4"),
        LandClass(1, "forest", "#1b7837"),
        LandClass(2, "grassland", "#a6dba0"),
        LandClass(3, "built-up", "#d73027"),
    )
)
WOOD, LAKE, TOWN, NORTH_EAST = (2, 2, 58, 48), (22, 12, 38, 28), (62, 32, 78, 58), (62, 2, 78, 18)
CODES = np.array(  # WorldCover-like: 10 tree cover, 20 shrubland, 30 grassland, 80 water
    [
        [10, 10, 10, 20, 20, 20, 80, 80],
        [10, 10, 10, 20, 20, 20, 80, 80],
        [10, 10, 0, 0, 20, 20, 80, 80],
        [30, 30, 0, 0, 10, 10, 80, 80],
        [30, 30, 10, 10, 10, 10, 80, 80],
        [30, 30, 10, 10, 10, 10, 80, 80],
    ]
)
CODES_MAPPED = np.array(  # "10=forest,80=water,30=ignore"; 0 is nodata, 20 is unmapped
    [
        [1, 1, 1, N, N, N, 0, 0],
        [1, 1, 1, N, N, N, 0, 0],
        [1, 1, N, N, N, N, 0, 0],
        [N, N, N, N, 1, 1, 0, 0],
        [N, N, 1, 1, 1, 1, 0, 0],
        [N, N, 1, 1, 1, 1, 0, 0],
    ],
    dtype="uint8",
)
runner = CliRunner()


@pytest.fixture(scope="module")
def grid_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    grid = GeoBox.from_bbox((X0, Y0 - 10 * H, X0 + 10 * W, Y0), "EPSG:32633", resolution=10)
    out = tmp_path_factory.mktemp("grid") / "grid.zarr"
    create_store(
        out, labels_template(grid, 4), product="labels", signature="g", attrs={"tile_size": 4}
    )
    return publish(out, overwrite=False)


def write_vector(
    path: Path, field: str, values: Sequence[object], rects: list[tuple[int, ...]]
) -> Path:
    """Rectangles in UTM, written in EPSG:4326 (the labels are reprojected per tile)."""
    geoms = [box(X0 + e0, Y0 - s1, X0 + e1, Y0 - s0) for e0, s0, e1, s1 in rects]
    frame = gpd.GeoDataFrame({field: values}, geometry=geoms, crs=32633).to_crs(4326)
    if path.suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_file(path)
    return path


def write_codes(path: Path, codes: np.ndarray, dtype: str, nodata: float) -> Path:
    profile = {"driver": "GTiff", "width": W, "height": H, "count": 1, "dtype": dtype}
    transform = from_origin(X0, Y0, 10, 10)
    with rasterio.open(
        path, "w", crs="EPSG:32633", transform=transform, nodata=nodata, **profile
    ) as dst:
        dst.write(codes.astype(dtype)[None])
    return path


@pytest.mark.parametrize("suffix", ["gpkg", "parquet"])
def test_text_field_maps_by_schema_names(grid_path: Path, tmp_path: Path, suffix: str) -> None:
    """Names in any case; the lake is burnt over the wood (later features win)."""
    names = ["Forest", "WATER", " built-up"]
    path = write_vector(tmp_path / f"names.{suffix}", "class", names, [WOOD, LAKE, TOWN])
    result = rasterize_labels(
        path, grid_path, tmp_path / "l.zarr", class_field="class", classes=SCHEMA
    )
    expected = np.array(
        [
            [1, 1, 1, 1, 1, 1, N, N],
            [1, 1, 0, 0, 1, 1, N, N],
            [1, 1, 0, 0, 1, 1, N, N],
            [1, 1, 1, 1, 1, 1, 3, 3],
            [1, 1, 1, 1, 1, 1, 3, 3],
            [N, N, N, N, N, N, 3, 3],
        ],
        dtype="uint8",
    )
    np.testing.assert_array_equal(open_labels(tmp_path / "l.zarr").values, expected)
    assert result.class_counts == {0: 4, 1: 26, 3: 6} and result.unmapped == {}
    doc: Any = zarr.open_group(str(tmp_path / "l.zarr"), mode="r").attrs["code_map"]
    assert doc["by_name"] and doc["values"]["forest"] == 1


def test_foreign_codes_with_a_toml_map_of_class_names(
    grid_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """CORINE-like codes stored as floats (311.0 matches "311"); 999 is not in the map."""
    codes = [311.0, 511.0, 999.0, 312.0]
    path = write_vector(tmp_path / "clc.gpkg", "code_18", codes, [WOOD, LAKE, TOWN, NORTH_EAST])
    table = tmp_path / "clc.toml"
    table.write_text('311 = "forest"\n312 = "Forest"\n"511" = "water"\n112 = 3\n')
    out = tmp_path / "clc.zarr"
    with caplog.at_level(logging.WARNING, logger="eoseg"):
        result = rasterize_labels(
            path, grid_path, out, class_field="code_18", classes=SCHEMA, code_map=table
        )
    expected = np.array(
        [
            [1, 1, 1, 1, 1, 1, 1, 1],
            [1, 1, 0, 0, 1, 1, 1, 1],
            [1, 1, 0, 0, 1, 1, N, N],
            [1, 1, 1, 1, 1, 1, N, N],
            [1, 1, 1, 1, 1, 1, N, N],
            [N, N, N, N, N, N, N, N],
        ],
        dtype="uint8",
    )
    np.testing.assert_array_equal(open_labels(out).values, expected)
    assert result.unmapped == {"999": 6} and result.to_dict()["unmapped_pixels"] == {"999": 6}
    assert "6 pixels hold values the code map does not list" in caplog.text
    doc: Any = zarr.open_group(str(out), mode="r").attrs["code_map"]
    assert doc["values"] == {"311": 1, "312": 1, "511": 0, "112": 3}


@pytest.mark.parametrize(
    ("dtype", "nodata", "scale"),
    [("uint8", 0, 1), ("uint16", 0, 700), ("int16", -1, 1)],
    ids=["uint8", "uint16-large-codes", "int16-negative-nodata"],
)
def test_raster_codes_with_an_inline_map(
    grid_path: Path, tmp_path: Path, dtype: str, nodata: int, scale: int
) -> None:
    codes = np.where(CODES == 0, nodata, CODES * scale)
    path = write_codes(tmp_path / "wc.tif", codes, dtype, nodata)
    spec = f"{10 * scale}=forest,{80 * scale}=water,{30 * scale}=ignore"
    result = rasterize_labels(path, grid_path, tmp_path / "wc.zarr", classes=SCHEMA, code_map=spec)
    np.testing.assert_array_equal(open_labels(tmp_path / "wc.zarr").values, CODES_MAPPED)
    assert result.unmapped == {str(20 * scale): 8}
    assert result.class_counts == {0: 12, 1: 18}


def test_another_map_does_not_resume_the_old_tiles(grid_path: Path, tmp_path: Path) -> None:
    path = write_codes(tmp_path / "wc.tif", CODES, "uint8", 0)
    out, calls = tmp_path / "resume.zarr", list[int]()

    def stop_after_two(done: int, total: int) -> None:
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rasterize_labels(path, grid_path, out, code_map={10: 0, 80: 0}, progress=stop_after_two)
    spec = "10=1,80=0,30=255"
    rasterize_labels(path, grid_path, out, code_map=spec, progress=lambda d, t: calls.append(t))
    assert set(calls) == {4}  # all tiles again
    np.testing.assert_array_equal(open_labels(out).values, CODES_MAPPED)


@pytest.mark.parametrize(
    ("source", "options", "error", "match"),
    [
        ("raster", {"code_map": "10=forest,20=lava"}, InvalidParameterError, "'lava' is no class"),
        (
            "raster",
            {"code_map": {"10": 7}},
            InvalidParameterError,
            r"7 is no class id: expected 0\.\.3",
        ),
        (
            "raster",
            {"code_map": "10=forest", "classes": None},
            InvalidParameterError,
            "pass --classes",
        ),
        ("raster", {"code_map": {"Forest": 1}}, InvalidParameterError, "integer codes 0..65535"),
        (
            "names",
            {"classes": None},
            UnreadableVectorError,
            "holds text, not class ids: pass --classes",
        ),
        (
            "names",
            {"classes": ClassSchema(SCHEMA.classes[:2])},
            UnreadableVectorError,
            r"\['built-up'\], which are no class names",
        ),
        (
            "names",
            {"code_map": "Forest=1", "osm": True},
            InvalidParameterError,
            "drop --code-map",
        ),
    ],
    ids=[
        "unknown-name",
        "id-outside-schema",
        "name-without-schema",
        "name-key-for-raster",
        "text-without-schema",
        "text-not-a-class",
        "osm",
    ],
)
def test_bad_code_maps_are_explained(
    grid_path: Path,
    tmp_path: Path,
    source: str,
    options: dict[str, Any],
    error: type[Exception],
    match: str,
) -> None:
    if source == "raster":
        path = write_codes(tmp_path / "wc.tif", CODES, "uint8", 0)
    else:
        path = write_vector(tmp_path / "n.gpkg", "class_id", ["Forest", "built-up"], [WOOD, TOWN])
    out = tmp_path / "bad.zarr"
    with pytest.raises(error, match=match):
        rasterize_labels(path, grid_path, out, **{"classes": SCHEMA, **options})
    assert not out.exists() and not staging_path(out).exists()


@pytest.mark.parametrize("flag", ["--code-map", "--class-map"], ids=["code-map", "old-name"])
def test_cli_maps_raster_codes_and_explains_a_bad_map(
    grid_path: Path, tmp_path: Path, client: object, flag: str
) -> None:
    """``--class-map`` is the old, hidden name of ``--code-map`` (kept for one release)."""
    path = write_codes(tmp_path / "wc.tif", CODES, "uint8", 0)
    schema = tmp_path / "schema.toml"
    schema.write_text(SCHEMA.to_toml())
    address = client.scheduler.address  # type: ignore[attr-defined]
    common = [str(path), "--classes", str(schema), "--cube", str(grid_path), "--scheduler", address]
    out = tmp_path / "cli.zarr"
    args = ["rasterize", *common, "--out", str(out), "--json"]
    result = runner.invoke(app, [*args, flag, "10=forest,80=water,30=ignore"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["unmapped_pixels"] == {"20": 8}
    np.testing.assert_array_equal(open_labels(out).values, CODES_MAPPED)
    bad = tmp_path / "bad.zarr"
    args = ["rasterize", *common, "--out", str(bad), flag, "10=forest,20=lava"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "'lava' is no class of the schema" in result.stderr and "Traceback" not in result.output
    assert not bad.exists() and not staging_path(bad).exists()


def test_fractional_class_ids_are_refused(grid_path: Path, tmp_path: Path) -> None:
    """1.5 is no class id: refused instead of truncated to 1."""
    path = write_vector(tmp_path / "f.gpkg", "class_id", [1.0, 1.5], [WOOD, TOWN])
    out = tmp_path / "f.zarr"
    with pytest.raises(UnreadableVectorError, match=r"whole class ids; found \[1\.5\]"):
        rasterize_labels(path, grid_path, out)
    assert not out.exists() and not staging_path(out).exists()
    whole = write_vector(tmp_path / "w.gpkg", "class_id", [1.0, 2.0], [WOOD, TOWN])
    rasterize_labels(whole, grid_path, tmp_path / "w.zarr")
