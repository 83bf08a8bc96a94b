from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import zarr

from eoseg.cube import ingest, open_cube
from eoseg.errors import BandMismatchError, OutputExistsError
from eoseg.store import staging_path, tile_provenance


def test_cube_layout_and_georeferencing(cube_path: Path) -> None:
    import rioxarray  # noqa: F401

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
