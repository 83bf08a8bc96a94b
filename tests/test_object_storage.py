"""Object storage end to end (issue 12): ingest -> predict -> export -> query entirely on
s3:// URLs of a real S3 server on loopback (tests/s3.py) equals the same run on local
paths; stores stay readable with plain xarray; no credential reaches a product or a log."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio
import s3fs
import xarray as xr
from typer.testing import CliRunner

from eoseg.classmap import open_classmap
from eoseg.cli import app
from eoseg.cube import open_cube
from tests.s3 import S3, SECRET

runner = CliRunner()
TILE = "64"


def _run(args: list[str]) -> dict:  # type: ignore[type-arg]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _pipeline(root: str, catalog: Path, model: Path, scheduler: str) -> dict[str, dict]:  # type: ignore[type-arg]
    """ingest -> predict -> export -> query, every location under ``root``."""
    cube, cmap, cog = f"{root}/cube.zarr", f"{root}/map.zarr", f"{root}/map.tif"
    sched = ["--scheduler", scheduler]
    return {
        "ingest": _run(["ingest", str(catalog), "--out", cube, "--tile-size", TILE, *sched]),
        "predict": _run(["predict", "--cube", cube, "--model", str(model), "--out", cmap,
                         "--chip-size", "64", "--overlap", "8", "--precision", "fp32", *sched]),
        "export": _run(["export", cmap, "--cog", cog]),
        "query": _run(["query", cmap, "--aoi", "11.99,47.995,12.01,48.005"]),
    }  # fmt: skip


@pytest.mark.slow
def test_pipeline_on_s3_equals_local(  # type: ignore[no-untyped-def]
    s3: S3, demo_data, model_dir: Path, client, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    local = _pipeline(str(tmp_path), demo_data.catalog, model_dir, client.scheduler.address)
    remote = _pipeline(s3.url("run"), demo_data.catalog, model_dir, client.scheduler.address)

    assert remote["predict"]["classmap"] == s3.url("run/map.zarr")
    for name in ("data", "valid"):
        np.testing.assert_array_equal(
            open_cube(s3.url("run/cube.zarr"))[name].values,
            open_cube(tmp_path / "cube.zarr")[name].values,
        )
    a, b = open_classmap(s3.url("run/map.zarr")), open_classmap(tmp_path / "map.zarr")
    for name in ("class", "confidence"):
        np.testing.assert_array_equal(a[name].values, b[name].values)
    assert (a["class"].values != 255).any()
    fs = s3fs.S3FileSystem()
    with (
        fs.open(f"{s3.bucket}/run/map.tif") as f,
        rasterio.open(f) as src,
        rasterio.open(tmp_path / "map.tif") as ref,
    ):
        np.testing.assert_array_equal(src.read(), ref.read())
        assert src.crs == ref.crs and src.transform == ref.transform
    assert remote["query"] == local["query"] and remote["query"]["tiles"] > 0
    cells = [a for dates in remote["query"]["regions"].values() for a in dates.values()]
    assert cells and all(a["valid_km2"] > 0 for a in cells)
    # Published whole: nothing staged is left, the map has consolidated metadata.
    assert not fs.exists(f"{s3.bucket}/run/map.zarr.partial")
    root = json.loads(fs.cat_file(f"{s3.bucket}/run/map.zarr/zarr.json"))
    assert "consolidated_metadata" in root and root["attributes"]["eoseg_complete"] is True
    # Plain xarray reads the store from the URL, CRS and coordinates included.
    plain = xr.open_zarr(s3.url("run/map.zarr"), storage_options={}, decode_coords="all")
    np.testing.assert_array_equal(plain["class"].values, b["class"].values)
    np.testing.assert_array_equal(plain["x"].values, b["x"].values)
    # No credential in any object written, nor in the log.
    for key in fs.find(s3.bucket):
        if key.endswith((".json", ".qml")):
            assert SECRET not in fs.cat_file(key).decode(), key
            assert s3.env["AWS_ACCESS_KEY_ID"] not in fs.cat_file(key).decode(), key
    assert SECRET not in caplog.text
