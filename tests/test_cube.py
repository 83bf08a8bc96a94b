from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rioxarray  # noqa: F401  (registers the .rio accessor)
import zarr
from affine import Affine

from eoseg.cube import ingest, open_cube
from eoseg.errors import BandMismatchError, OutputExistsError
from eoseg.store import staging_path, tile_provenance


def test_cube_layout_and_georeferencing(cube_path: Path) -> None:
    cube = open_cube(cube_path)
    assert cube["data"].dims == ("time", "band", "y", "x")
    assert cube["data"].dtype == np.float32
    assert list(cube["band"].values) == ["B02", "B03", "B04", "B08"]
    assert cube.rio.crs.to_epsg() == 32632  # the first scene's CRS
    assert cube["data"].chunks[2][0] == 96
    raw = zarr.open_group(str(cube_path), mode="r")["data"]
    assert raw.dtype == np.uint16  # stored as the sensor's integers, decoded on read
    assert cube.attrs["eoseg_complete"] is True


def test_both_zones_are_used_and_clouds_masked(cube_path: Path) -> None:
    cube = open_cube(cube_path)
    used = {s for rec in tile_provenance(cube_path) for s in rec["scenes"]}
    assert len(used) == 2
    valid = cube["valid"].isel(time=0).values.astype(bool)
    data = cube["data"].isel(time=0).values
    assert np.isnan(data[:, ~valid]).all()
    assert not np.isnan(data[:, valid]).any()
    assert 0.5 < valid.mean() < 1.0  # clouds and corners outside both scenes are invalid


def test_no_seam_at_the_zone_switch(demo_data, cube_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Where the composite switches from the west (32632) to the east (33N) scene, values
    differ between neighbours no more than between neighbours inside one scene."""
    from eoseg.catalog import discover_scenes
    from eoseg.warp import read_scene

    cube = open_cube(cube_path)
    west = next(s for s in discover_scenes([demo_data.catalog]) if s.crs.epsg == 32632)
    _, from_west = read_scene(west, cube.odc.geobox)
    valid = cube["valid"].isel(time=0).values.astype(bool)
    data = cube["data"].isel(time=0).values
    # Pixel pairs (left from the west scene, right from the east one) across the switch.
    switch = from_west[:, :-1] & ~from_west[:, 1:] & valid[:, 1:] & valid[:, :-1]
    assert switch.sum() > 50
    across = np.abs(data[:, :, 1:] - data[:, :, :-1])[:, switch].mean()
    inside = np.roll(switch, -4, axis=1) & from_west[:, 1:] & from_west[:, :-1]
    within = np.abs(data[:, :, 1:] - data[:, :, :-1])[:, inside].mean()
    assert across < 1.5 * within


def test_ingest_resumes_to_identical_result(demo_data, cube_path: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "cube.zarr"

    class KilledError(Exception):
        pass

    def kill_after_three(done: int, total: int) -> None:
        if done == 3:
            raise KilledError

    with pytest.raises(KilledError):
        ingest([demo_data.catalog], out, tile_size=96, progress=kill_after_three)
    assert not out.exists() and staging_path(out).exists()  # nothing looks finished
    ingest([demo_data.catalog], out, tile_size=96)
    a, b = zarr.open_group(str(out), mode="r"), zarr.open_group(str(cube_path), mode="r")
    np.testing.assert_array_equal(a["data"][:], b["data"][:])
    np.testing.assert_array_equal(a["valid"][:], b["valid"][:])


def test_existing_output_is_not_overwritten(demo_data, cube_path: Path) -> None:  # type: ignore[no-untyped-def]
    before = (cube_path / "zarr.json").read_bytes()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        ingest([demo_data.catalog], cube_path, tile_size=96)
    assert (cube_path / "zarr.json").read_bytes() == before


def test_scenes_with_different_bands_are_refused(tmp_path: Path) -> None:
    from rasterio.transform import from_origin

    paths = []
    for name, count in (("a", 3), ("b", 4)):
        path = tmp_path / f"{name}.tif"
        with rasterio.open(
            path,
            "w",
            driver="GTiff",
            width=8,
            height=8,
            count=count,
            dtype="uint8",
            crs="EPSG:32632",
            transform=from_origin(500000, 5300000, 10, 10),
        ) as dst:
            dst.write(np.ones((count, 8, 8), dtype="uint8"))
        paths.append(path)
    with pytest.raises(BandMismatchError, match="same bands"):
        ingest(paths, tmp_path / "c.zarr")
    assert not (tmp_path / "c.zarr").exists()


def test_cube_records_provenance(cube_path: Path) -> None:
    recs = tile_provenance(cube_path)
    cube = open_cube(cube_path)
    ny, nx = cube.sizes["y"], cube.sizes["x"]
    assert len(recs) == -(-ny // 96) * -(-nx // 96)
    assert all({"tile", "scenes", "valid_fraction"} <= set(r) for r in recs)
    json.dumps(recs)


def _write_scene(path: Path, bounds: tuple[float, float], value: int, nodata: int = 0) -> Path:
    """A 4-band uint16 GeoTIFF in EPSG:32632 named like the demo bands."""
    from rasterio.transform import from_origin

    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=40,
        height=30,
        count=4,
        dtype="uint16",
        crs="EPSG:32632",
        transform=from_origin(*bounds, 10, 10),
        nodata=nodata,
    ) as dst:
        dst.write(np.full((4, 30, 40), value, dtype="uint16"))
        dst.descriptions = ("B02", "B03", "B04", "B08")
    return path


def test_report_lists_scenes_that_contributed_nothing(cube_path: Path, tmp_path: Path) -> None:
    grid = open_cube(cube_path).odc.geobox
    x0, y0 = grid.affine.c + 500, grid.affine.f - 300
    empty = _write_scene(tmp_path / "empty.tif", (x0, y0), value=0)  # all nodata
    good = _write_scene(tmp_path / "good.tif", (x0 + 1000, y0), value=1200)
    result = ingest([good, empty], tmp_path / "c.zarr", tile_size=64)
    assert result.scenes == ("good",)
    assert dict(result.skipped) == {"empty": "no valid pixel on the grid (all nodata or clouded)"}
    cube = open_cube(tmp_path / "c.zarr")
    valid = cube["valid"].isel(time=0).values.astype(bool)
    assert valid.sum() == 30 * 40  # the empty scene's area is invalid, not zero-filled
    assert np.isnan(cube["data"].isel(time=0).values[:, ~valid]).all()


def test_scene_outside_the_bbox_is_reported(demo_data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    far = _write_scene(tmp_path / "far.tif", (300000.0, 5100000.0), value=1000)
    west, south, east, north = demo_data.holdout_bbox
    result = ingest(
        [demo_data.catalog, far],
        tmp_path / "c.zarr",
        tile_size=128,
        bbox=(west, south, east, north),
    )
    assert ("far", "outside the grid") in result.skipped
    assert len(result.scenes) >= 1


def test_median_composite_and_time_steps(demo_data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from eoseg.catalog import discover_scenes
    from eoseg.warp import read_scene

    by_date = ingest([demo_data.catalog], tmp_path / "t.zarr", tile_size=96, by_date=True)
    assert by_date.times == ("2024-06-12", "2024-06-14")
    steps = open_cube(tmp_path / "t.zarr")
    assert steps.sizes["time"] == 2
    median = ingest([demo_data.catalog], tmp_path / "m.zarr", tile_size=96, composite="median")
    cube = open_cube(median.path)
    grid = cube.odc.geobox
    (a, ok_a), (b, ok_b) = (read_scene(s, grid) for s in discover_scenes([demo_data.catalog]))
    both = ok_a & ok_b
    assert both.sum() > 100  # the zones overlap
    got = cube["data"].isel(time=0).values[:, both]
    low = np.minimum(a[:, both], b[:, both])
    high = np.maximum(a[:, both], b[:, both])
    # The median of two scenes lies between them (GDAL's warper gives slightly different
    # resampled values per tile window than for the whole grid, hence the margin) ...
    assert ((got >= low - 0.003) & (got <= high + 0.003)).mean() > 0.99
    # ... and is not the first-valid value where the scenes differ.
    differ = np.abs(a[:, both] - b[:, both]) > 0.002
    assert (np.abs(got - a[:, both])[differ] > 0.0005).mean() > 0.8
    # Per date, each step holds only its own scene.
    for t, ok in enumerate((ok_a, ok_b)):
        np.testing.assert_array_equal(steps["valid"].isel(time=t).values.astype(bool), ok)


def test_sharded_cube_equals_chunked_cube(demo_data, cube_path: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "sharded.zarr"
    ingest([demo_data.catalog], out, tile_size=96, chunk_size=32)
    arr = zarr.open_group(str(out), mode="r")["data"]
    assert arr.shards == (1, 4, 96, 96) and arr.chunks == (1, 4, 32, 32)
    ref = zarr.open_group(str(cube_path), mode="r")["data"]
    np.testing.assert_array_equal(arr[:], ref[:])


def test_georeferencing_readable_without_xarray(cube_path: Path) -> None:
    attrs = json.loads((cube_path / "zarr.json").read_text())["attributes"]
    cube = open_cube(cube_path)
    assert attrs["proj:code"] == "EPSG:32632"
    assert attrs["spatial:transform"] == list(cube.rio.transform())[:6]
    assert attrs["spatial:shape"] == [cube.sizes["y"], cube.sizes["x"]]


def test_bad_scene_is_skipped_and_the_run_goes_on(cube_path: Path, tmp_path: Path) -> None:
    grid = open_cube(cube_path).odc.geobox
    good = _write_scene(tmp_path / "good.tif", (grid.affine.c + 500, grid.affine.f - 300), 900)
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00" + b"\x00" * 64)
    result = ingest([corrupt, good], tmp_path / "c.zarr", tile_size=64)
    assert result.scenes == ("good",)
    (reason,) = [r for s, r in result.skipped if "corrupt" in s]
    assert "GDAL" in reason
    assert result.to_dict()["skipped"][0]["reason"] == reason


@pytest.mark.parametrize(
    ("crs", "resolution"),
    [("EPSG:3035", 10.0), ("EPSG:4326", 0.0001)],
    ids=["equal-area-3035", "lonlat-4326"],
)
def test_any_grid_crs(demo_data, tmp_path: Path, crs: str, resolution: float) -> None:  # type: ignore[no-untyped-def]
    """Both UTM zones land on a grid in an equal-area or geographic CRS, seamlessly valid."""
    result = ingest(
        [demo_data.catalog], tmp_path / "c.zarr", crs=crs, resolution=resolution, tile_size=128
    )
    cube = open_cube(result.path)
    assert cube.rio.crs.to_string() == crs
    assert len(result.scenes) == 2 and result.valid_fraction > 0.5
    recs = tile_provenance(result.path)
    assert all(set(r["dates"]) == set(r["scenes"]) for r in recs)


def test_sensor_filter_reports_the_rest(demo_data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from eoseg.errors import InvalidParameterError

    with pytest.raises(InvalidParameterError, match="no scene of sensors"):
        ingest([demo_data.catalog], tmp_path / "c.zarr", sensors=["sentinel-1-grd"])
    result = ingest([demo_data.catalog], tmp_path / "c.zarr", sensors=["generic"], tile_size=128)
    assert len(result.scenes) == 2 and not result.skipped


@pytest.mark.slow
def test_sigkilled_ingest_resumes_to_identical_result(demo_data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`eoseg ingest` killed with SIGKILL mid-run, then re-run, equals an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    ref = ingest([demo_data.catalog], tmp_path / "ref.zarr", tile_size=32)
    out = tmp_path / "cube.zarr"
    cmd = [
        sys.executable,
        "-m",
        "eoseg",
        "ingest",
        str(demo_data.catalog),
        "--out",
        str(out),
        "--tile-size",
        "32",
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    marks = staging_path(out) / "_eoseg_tiles"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(marks.glob("r*.json"))) < 10:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the client and its local workers, at once
    proc.wait()
    done_before = len(list(marks.glob("r*.json")))
    assert 10 <= done_before < ref.tiles and not out.exists()
    resumed = ingest([demo_data.catalog], out, tile_size=32)
    assert resumed.tiles_written <= ref.tiles - done_before
    a, b = zarr.open_group(str(out), mode="r"), zarr.open_group(str(ref.path), mode="r")
    np.testing.assert_array_equal(a["data"][:], b["data"][:])
    np.testing.assert_array_equal(a["valid"][:], b["valid"][:])


# -- non-square source pixels -------------------------------------------------------------

NON_SQUARE = Affine(10.0, 0.0, 500003.7, 0.0, -12.0, 5300001.3)  # 10 x 12 m pixels


def _non_square_scene(path: Path) -> Path:
    """A 40x64 two-band scene of 10 x 12 m pixels, off the 10 m lattice, values 1..2560."""
    values = np.arange(1, 40 * 64 + 1, dtype="uint16").reshape(40, 64)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=64,
        height=40,
        count=2,
        dtype="uint16",
        crs="EPSG:32632",
        transform=NON_SQUARE,
        nodata=0,
    ) as dst:
        dst.write(np.stack([values, values + 3000]))
    return path


def test_non_square_scene_keeps_its_pixel_grid(tmp_path: Path) -> None:
    """Without --resolution the cube is the scene's own grid: same transform, shape and
    values, no nodata row; --resolution still gives square pixels."""
    scene = _non_square_scene(tmp_path / "scene.tif")
    result = ingest([scene], tmp_path / "c.zarr", tile_size=32)
    cube = open_cube(result.path)
    assert tuple(cube.rio.transform())[:6] == tuple(NON_SQUARE)[:6]
    assert (cube.sizes["y"], cube.sizes["x"]) == (40, 64)
    assert result.grid["resolution"] == [10.0, 12.0] and result.valid_fraction == 1.0
    with rasterio.open(scene) as src:
        np.testing.assert_array_equal(cube["data"].isel(time=0).values, src.read())
    square = ingest([scene], tmp_path / "s.zarr", tile_size=32, resolution=10.0)
    grid = open_cube(square.path).odc.geobox
    assert (grid.resolution.x, grid.resolution.y) == (10.0, -10.0)
    assert (grid.shape.y, grid.shape.x) == (48, 64)  # 40 rows of 12 m = 48 of 10 m


def test_non_square_grid_downstream(tmp_path: Path) -> None:
    """Labels, prediction, COG export and ellipsoidal areas all keep the 10 x 12 m grid."""
    import geopandas as gpd
    from conftest import save_untrained_model
    from shapely.geometry import box

    from eoseg.classmap import classmap_schema
    from eoseg.cog import write_cog
    from eoseg.labels import open_labels, rasterize_labels
    from eoseg.predict import open_classmap, predict
    from eoseg.stats import class_areas

    cube = ingest([_non_square_scene(tmp_path / "scene.tif")], tmp_path / "c.zarr", tile_size=32)
    # A field of 10 columns x 5 rows of pixels: 50 pixels of 120 m².
    x0, y0 = NON_SQUARE * (20, 10)
    field = box(x0, y0 - 5 * 12.0, x0 + 10 * 10.0, y0)
    frame = gpd.GeoDataFrame({"class_id": [2]}, geometry=[field], crs="EPSG:32632")
    frame.to_crs("EPSG:4326").to_file(tmp_path / "field.gpkg")
    rasterize_labels(tmp_path / "field.gpkg", cube.path, tmp_path / "labels.zarr")
    labels = open_labels(tmp_path / "labels.zarr").values
    assert labels.shape == (40, 64)
    assert (labels == 2).sum() == 50 and (labels[10:15, 20:30] == 2).all()
    model = save_untrained_model(tmp_path / "model", cube.bands)
    predict(cube.path, model, tmp_path / "map.zarr")
    classmap = open_classmap(tmp_path / "map.zarr")["class"]
    assert tuple(classmap.rio.transform())[:6] == tuple(NON_SQUARE)[:6]
    with rasterio.open(write_cog(tmp_path / "map.zarr", tmp_path / "map.tif")) as cog:
        assert tuple(cog.transform)[:6] == tuple(NON_SQUARE)[:6]
        assert cog.shape == (40, 64)
    areas = class_areas(classmap, classmap_schema(tmp_path / "map.zarr"))
    # 2560 pixels of 120 m² on the grid; UTM's scale factor 0.9996 near the central
    # meridian makes each 0.08% larger on the ellipsoid.
    assert areas.total_km2 == pytest.approx(2560 * 120 / 0.9996**2 / 1e6, rel=1e-4)


@pytest.mark.realdata
def test_real_non_square_scene_lines_up_with_its_label_raster(
    real_data: Path, tmp_path: Path
) -> None:
    """eo-learn's 9.995 x 9.997 m pixels: the cube is lulc.tif's grid, values unresampled."""
    folder = real_data / "eolearn_slovenia"
    result = ingest([folder / "s2_l1c_20150711.tif"], tmp_path / "c.zarr", tile_size=64)
    cube = open_cube(result.path)
    with rasterio.open(folder / "lulc.tif") as lulc:
        assert tuple(cube.rio.transform()) == tuple(lulc.transform)
        assert (cube.sizes["y"], cube.sizes["x"]) == lulc.shape == (101, 100)
    with rasterio.open(folder / "s2_l1c_20150711.tif") as src:
        np.testing.assert_array_equal(cube["data"].isel(time=0).values, src.read())
    assert result.valid_fraction == 1.0  # no nodata row added
