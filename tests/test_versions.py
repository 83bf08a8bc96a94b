"""Versioned products: publish, regenerate, kill, roll back and diff real icechunk repos."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from odc.geo.geobox import GeoBox
from typer.testing import CliRunner

from eoseg import __version__
from eoseg.classes import generic_schema
from eoseg.classmap import classmap_template, open_classmap
from eoseg.cli import app
from eoseg.errors import InputNotFoundError, InvalidParameterError
from eoseg.grid import grid_coords, iter_tiles
from eoseg.store import create_store, publish, write_tile
from eoseg.version_diff import diff_versions
from eoseg.version_publish import publish_classmap, rollback
from eoseg.versions import list_versions, open_repository, open_version, tile_records

TILE = 128
GRID = GeoBox.from_bbox(
    (500000, 5300000, 500000 + 1280 * 10, 5300000 + 1280 * 10), "EPSG:32632", resolution=10
)  # 1280 x 1280 px: 10 x 10 tiles
TILES = list(iter_tiles(GRID, TILE))
SCHEMA = generic_schema(5)
CHANGED = [TILES[i] for i in (3, 12, 27, 35, 44, 58, 61, 70, 86, 99)]  # 10% of the tiles

runner = CliRunner()


def _record(model: str, run: str) -> dict[str, Any]:
    """A tile's provenance as `eoseg.predict` records it."""
    return {
        "model": model,
        "cube": "cube-sig-1",
        "run_id": run,
        "eoseg_version": __version__,
        "settings": {"chip_size": 64},
    }


def _pixels(seed: int) -> dict[str, np.ndarray]:
    """Class ids 0..4 with some nodata, and a confidence band (both barely compressible)."""
    rng = np.random.default_rng(seed)
    cls = rng.integers(0, 5, GRID.shape.yx, dtype="uint8")
    cls[rng.random(GRID.shape.yx) < 0.02] = 255
    conf = rng.integers(60, 256, GRID.shape.yx, dtype="uint8")
    return {"class": cls, "confidence": conf}


def write_map(
    path: Path, pixels: dict[str, np.ndarray], records: dict[str, dict[str, Any]], run: str
) -> Path:
    """A class map written as `eoseg predict` writes one (template, tiles, records)."""
    cube = xr.Dataset(coords=grid_coords(GRID))
    template = classmap_template(cube, ("y", "x"), TILE, SCHEMA)
    attrs = {
        "run_id": run,
        "tile_size": TILE,
        "classes": SCHEMA.to_dict(),
        "model": "lc",
        "model_version": records[TILES[0].name]["model"],
        "cube_signature": "cube-sig-1",
        "input_time": "median",
    }
    staging = create_store(path, template, product="classmap", signature=run, attrs=attrs)
    for tile in TILES:
        arrays = {k: v[tile.ys, tile.xs] for k, v in pixels.items()}
        write_tile(staging, tile, arrays, records[tile.name])
    return publish(path, overwrite=True)


@pytest.fixture(scope="module")
def maps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """v1: every tile by model m1 in run r1; v2: the `CHANGED` tiles recomputed by m2 in
    run r2, the others carried over with their records (what a regeneration makes). Read
    only: each test publishes them into its own repository (`repo`)."""
    tmp_path = tmp_path_factory.mktemp("maps")
    px1 = _pixels(1)
    rec1 = {t.name: _record("m1", "r1") for t in TILES}
    px2 = {k: v.copy() for k, v in px1.items()}
    new = _pixels(2)
    rec2 = dict(rec1)
    for tile in CHANGED:
        for k in px2:
            px2[k][tile.ys, tile.xs] = new[k][tile.ys, tile.xs]
        rec2[tile.name] = _record("m2", "r2")
    return {
        "v1": write_map(tmp_path / "map1.zarr", px1, rec1, "r1"),
        "v2": write_map(tmp_path / "map2.zarr", px2, rec2, "r2"),
        "px1": px1,
        "px2": px2,
    }


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """Where a test's product repository goes (the first publish creates it)."""
    return tmp_path / "product"


def du(path: Path) -> int:
    """Bytes of every file under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_regeneration_writes_changed_tiles_and_grows_store_by_them(maps: dict, repo: Path) -> None:
    first = publish_classmap(maps["v1"], repo, tag="2026-06")
    assert (first.committed, first.tiles_written, first.parent) == (True, 100, None)
    v1_bytes = du(repo)
    reader = open_version(repo)  # opened before the next publish, read after it
    second = publish_classmap(maps["v2"], repo, message="regenerated 10 tiles")
    growth = (du(repo) - v1_bytes) / v1_bytes
    assert (second.tiles_written, second.tiles_unchanged, second.tiles_recorded) == (10, 90, 0)
    assert second.parent == first.version
    # 10% of the tiles recomputed: about 10% more bytes (measured 0.105: the chunks plus
    # a new manifest, snapshot and tile records), nowhere near the 100% of a full copy.
    assert 0.08 < growth < 0.14, growth
    latest = open_version(repo)
    for name, values in maps["px2"].items():
        np.testing.assert_array_equal(latest[name].values, values)
        np.testing.assert_array_equal(reader[name].values, maps["px1"][name])  # no mix
    for version in (first.version, "2026-06", "1"):
        old = open_version(repo, version)
        for name, values in maps["px1"].items():
            np.testing.assert_array_equal(old[name].values, values)
    versions = list_versions(open_repository(repo))
    assert [v.number for v in versions] == [2, 1]
    assert versions[0].message == "regenerated 10 tiles"
    assert versions[1].tags == ("2026-06",)
    assert versions[0].metadata["tiles_written"] == 10


def test_every_tile_records_its_provenance_and_the_version_its_code(maps: dict, repo: Path) -> None:
    publish_classmap(maps["v1"], repo)
    result = publish_classmap(maps["v2"], repo)
    repository = open_repository(repo)
    records = tile_records(repository.readonly_session(snapshot_id=result.version))
    changed = {t.name for t in CHANGED}
    assert {n for n, r in records.items() if r["model"] == "m2"} == changed
    assert {r["run_id"] for n, r in records.items() if n not in changed} == {"r1"}
    assert all(r["cube"] == "cube-sig-1" and len(r["digest"]) == 64 for r in records.values())
    meta = list_versions(repository)[0].metadata
    assert meta["eoseg_version"] == __version__
    assert (meta["run_id"], meta["model_version"], meta["cube_signature"]) == (
        "r2",
        "m1",
        "cube-sig-1",
    )
    assert meta["tile_models"] == ["m1", "m2"] and meta["tile_runs"] == ["r1", "r2"]


def test_publishing_the_same_map_again_makes_no_version(
    maps: dict, repo: Path, tmp_path: Path
) -> None:
    first = publish_classmap(maps["v1"], repo)
    again = publish_classmap(maps["v1"], repo, tag="again")
    assert (again.committed, again.version, again.tiles_unchanged) == (False, first.version, 100)
    assert open_repository(repo).lookup_tag("again") == first.version
    # The same pixels from another run: new provenance records, no pixels written.
    rerun = write_map(
        tmp_path / "rerun.zarr", maps["px1"], {t.name: _record("m1", "r9") for t in TILES}, "r9"
    )
    third = publish_classmap(rerun, repo, compare="pixels")
    assert (third.committed, third.tiles_written, third.tiles_recorded) == (True, 0, 100)


_KILLED = """
import sys, time
from pathlib import Path
from eoseg.version_publish import publish_classmap

def stall(done, total):
    if done == 5:  # tiles written into the session, nothing committed
        Path(sys.argv[3]).write_text("5")
        time.sleep(600)

publish_classmap(sys.argv[1], sys.argv[2], progress=stall)
"""


@pytest.mark.slow
def test_killed_publish_leaves_the_published_version(
    maps: dict, repo: Path, tmp_path: Path
) -> None:
    first = publish_classmap(maps["v1"], repo)
    before = du(repo)
    marker = tmp_path / "stalled"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    args = [sys.executable, "-c", textwrap.dedent(_KILLED), str(maps["v2"]), str(repo), marker]
    proc = subprocess.Popen(args, env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "the publish never reached its fifth tile"
        time.sleep(0.1)
    time.sleep(0.5)  # let the copy threads write more chunks
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert du(repo) > before  # chunks were written...
    repository = open_repository(repo)
    assert [v.id for v in list_versions(repository)] == [first.version]  # ...never committed
    latest = open_version(repo)
    for name, values in maps["px1"].items():
        np.testing.assert_array_equal(latest[name].values, values)
    # The killed run's lock is stale (its pid is gone): the next publish takes it over.
    second = publish_classmap(maps["v2"], repo)
    assert (second.parent, second.tiles_written) == (first.version, 10)
    np.testing.assert_array_equal(open_version(repo)["class"].values, maps["px2"]["class"])


def test_rollback_is_a_new_version_equal_to_the_earlier_one(maps: dict, repo: Path) -> None:
    first = publish_classmap(maps["v1"], repo, tag="june")
    second = publish_classmap(maps["v2"], repo)
    back = rollback(repo, "june")
    assert (back.parent, back.tiles_written, back.tiles_unchanged) == (second.version, 10, 90)
    latest = open_version(repo)
    for name, values in maps["px1"].items():
        np.testing.assert_array_equal(latest[name].values, values)
    versions = list_versions(open_repository(repo))
    assert [v.id for v in versions] == [back.version, second.version, first.version]
    assert versions[0].metadata["eoseg_kind"] == "rollback"
    assert versions[0].metadata["rollback_to"] == first.version
    records = tile_records(open_repository(repo).readonly_session(snapshot_id=back.version))
    assert {r["model"] for r in records.values()} == {"m1"}
    np.testing.assert_array_equal(open_version(repo, "2")["class"].values, maps["px2"]["class"])


def test_diff_counts_class_changes_that_sum_to_zero(maps: dict, repo: Path) -> None:
    publish_classmap(maps["v1"], repo, tag="june")
    publish_classmap(maps["v2"], repo)
    diff = diff_versions(repo, "june", "latest")
    assert set(diff.changed_tiles) == {t.name for t in CHANGED}
    assert diff.class_names == (*SCHEMA.names, "nodata")
    change = diff.pixel_change()
    assert change.sum() == 0
    assert abs(diff.km2_change().sum()) < 1e-9
    codes = [*range(5), 255]
    expected = [
        int((maps["px2"]["class"] == c).sum()) - int((maps["px1"]["class"] == c).sum())
        for c in codes
    ]
    np.testing.assert_array_equal(change, expected)
    # 10 m UTM pixels near the central meridian: 100 m² each on the ellipsoid, to 0.1%.
    np.testing.assert_allclose(diff.km2_change(), np.array(expected) * 1e-4, rtol=1e-3, atol=1e-9)
    assert diff.pixels.sum() == len(CHANGED) * TILE * TILE
    doc = diff.to_dict()
    assert sum(r["pixels_change"] for r in doc["classes"]) == 0
    assert diff_versions(repo, "latest", "latest").changed_tiles == ()


def test_a_version_opens_with_xarray_and_rioxarray_on_the_grid(maps: dict, repo: Path) -> None:
    publish_classmap(maps["v1"], repo)
    ds = open_version(repo)
    assert ds["class"].dtype == np.uint8 and ds["class"].shape == GRID.shape.yx
    assert ds.rio.crs.to_epsg() == 32632
    assert tuple(ds.rio.transform())[:6] == tuple(GRID.affine)[:6]
    assert ds.attrs["tile_size"] == TILE
    assert ds.attrs["eoseg_product_version"] == list_versions(open_repository(repo))[0].id


def test_bad_names_are_refused(maps: dict, repo: Path, tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="no product repository"):
        open_version(tmp_path / "nothing")
    publish_classmap(maps["v1"], repo, tag="june")
    with pytest.raises(InvalidParameterError, match="names no version"):
        open_version(repo, "july")
    with pytest.raises(InvalidParameterError, match="already names"):
        publish_classmap(maps["v2"], repo, tag="june")
    for tag in ("latest", "7", "9ZECGCMXP718R80018X0", "a/b"):
        with pytest.raises(InvalidParameterError, match="not a usable tag"):
            publish_classmap(maps["v2"], repo, tag=tag)
    assert len(list_versions(open_repository(repo))) == 1  # nothing published by those


@pytest.mark.slow
def test_a_published_predict_map_reads_back_equal(
    cube_path: Path, model_dir: Path, tmp_path: Path
) -> None:
    from eoseg.predict import predict

    out = predict(cube_path, model_dir, tmp_path / "map.zarr", run_id="run-a").path
    result = publish_classmap(out, tmp_path / "product")
    source, version = open_classmap(out), open_version(tmp_path / "product")
    assert result.tiles == result.tiles_written > 1
    for name in source.data_vars:
        np.testing.assert_array_equal(version[name].values, source[name].values)
    records = tile_records(open_repository(tmp_path / "product").readonly_session(branch="main"))
    assert {r["run_id"] for r in records.values()} == {"run-a"}
    assert version.rio.transform() == source.rio.transform()


def test_products_cli(maps: dict, tmp_path: Path) -> None:
    repo = str(tmp_path / "product")
    args = ["products", "publish", str(maps["v1"]), "--to", repo, "--tag", "june", "--json"]
    ok = runner.invoke(app, args)
    assert ok.exit_code == 0, ok.output
    first = json.loads(ok.stdout)["version"]
    runner.invoke(app, ["products", "publish", str(maps["v2"]), "--to", repo])
    listed = json.loads(runner.invoke(app, ["products", "list", repo, "--json"]).stdout)
    assert [v["number"] for v in listed["versions"]] == [2, 1]
    shown = json.loads(runner.invoke(app, ["products", "show", repo, "june", "--json"]).stdout)
    assert shown["version"]["id"] == first and len(shown["tiles"]) == 100
    args = ["products", "diff", repo, "june", "latest", "--json"]
    diff = json.loads(runner.invoke(app, args).stdout)
    assert len(diff["changed_tiles"]) == 10
    back = runner.invoke(app, ["products", "rollback", repo, "--to", "june", "--json"])
    assert json.loads(back.stdout)["tiles_written"] == 10
    bad = runner.invoke(app, ["products", "show", repo, "nope"])
    assert bad.exit_code == 2 and "names no version" in bad.output
    table = runner.invoke(app, ["products", "list", repo])
    assert table.exit_code == 0 and first[:10] in table.stdout.replace("│", "")


def test_a_multi_date_map_is_versioned_and_diffed_per_date(tmp_path: Path) -> None:
    grid = GRID[:256, :256]
    tiles = list(iter_tiles(grid, TILE))
    dates = np.array(["2024-05-01", "2024-07-01"], dtype="datetime64[ns]")
    cube = xr.Dataset(coords={**grid_coords(grid), "time": dates})
    rng = np.random.default_rng(5)
    cls = rng.integers(0, 5, (2, *grid.shape.yx), dtype="uint8")

    def write(path: Path, values: np.ndarray, run: str) -> Path:
        template = classmap_template(cube, ("time", "y", "x"), TILE, SCHEMA)
        attrs = {"run_id": run, "tile_size": TILE, "classes": SCHEMA.to_dict()}
        staging = create_store(path, template, product="classmap", signature=run, attrs=attrs)
        for tile in tiles:
            arrays = {
                "class": values[:, tile.ys, tile.xs],
                "confidence": values[:, tile.ys, tile.xs],
            }
            write_tile(staging, tile, arrays, _record("m1", run if tile == tiles[1] else "r1"))
        return publish(path, overwrite=True)

    repo = tmp_path / "product"
    publish_classmap(write(tmp_path / "a.zarr", cls, "r1"), repo)
    changed = cls.copy()
    changed[1, tiles[1].ys, tiles[1].xs] = (changed[1, tiles[1].ys, tiles[1].xs] + 1) % 5
    second = publish_classmap(write(tmp_path / "b.zarr", changed, "r2"), repo)
    assert (second.tiles_written, second.tiles_unchanged) == (1, 3)
    np.testing.assert_array_equal(open_version(repo)["class"].values, changed)
    assert open_version(repo, "1")["time"].values.tolist() == dates.tolist()
    with pytest.raises(InvalidParameterError, match="--date"):
        diff_versions(repo, "1", "2")
    july, may = diff_versions(repo, "1", "2", date="2024-07"), diff_versions(repo, "1", "2", date=0)
    assert july.changed_tiles == may.changed_tiles == (tiles[1].name,)
    assert july.pixels.trace() == 0 and july.pixels.sum() == TILE * TILE  # every pixel moved
    assert (may.pixel_change() == 0).all() and july.pixel_change().sum() == 0


def test_publish_on_a_dask_cluster_merges_the_workers_writes(
    maps: dict, repo: Path, client: Any
) -> None:
    first = publish_classmap(maps["v1"], repo, client=client)
    second = publish_classmap(maps["v2"], repo, client=client)
    assert (first.tiles_written, second.tiles_written, second.tiles_unchanged) == (100, 10, 90)
    for version, pixels in (("1", maps["px1"]), ("latest", maps["px2"])):
        ds = open_version(repo, version)
        for name, values in pixels.items():
            np.testing.assert_array_equal(ds[name].values, values)
    back = rollback(repo, "1", client=client)
    assert back.tiles_written == 10
    np.testing.assert_array_equal(open_version(repo)["class"].values, maps["px1"]["class"])
