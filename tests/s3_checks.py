"""What tests/test_object_storage.py checks of a chain run on s3:// against the same chain
on local paths: the same pixels, model, exports and tables; stores published whole and
readable with plain xarray; no credential in any object written or in the log."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import s3fs
import xarray as xr
from PIL import Image

from eoseg.classmap import open_classmap
from eoseg.cube import open_cube
from eoseg.labels import open_labels
from eoseg.storage import resolve
from tests.s3 import S3, SECRET

Docs = dict[str, dict[str, Any]]


def check_stores(bucket: S3, here: Path, remote: Docs, local: Docs) -> None:
    """ingest, rasterize, train, register, predict, mosaic: the same arrays and model."""
    fs, root = s3fs.S3FileSystem(), bucket.url("run")
    for name in ("data", "valid"):
        np.testing.assert_array_equal(
            open_cube(f"{root}/cube.zarr")[name].values, open_cube(here / "cube.zarr")[name].values
        )
    np.testing.assert_array_equal(
        open_labels(f"{root}/labels.zarr").values, open_labels(here / "labels.zarr").values
    )
    # The same model version (a content hash), in the registry on the bucket.
    assert remote["train"]["version"] == local["train"]["version"]
    assert remote["train"]["model"] == f"{root}/model"
    assert fs.exists(f"{bucket.bucket}/run/registry/{remote['train']['name']}/"
                     f"{remote['train']['version']}/model.json")  # fmt: skip
    assert remote["predict"]["classmap"] == f"{root}/map.zarr"
    a, b = open_classmap(f"{root}/map.zarr"), open_classmap(here / "map.zarr")
    for name in ("class", "confidence"):
        np.testing.assert_array_equal(a[name].values, b[name].values)
    assert (a["class"].values != 255).any()
    m, n = open_classmap(f"{root}/mosaic.zarr"), open_classmap(here / "mosaic.zarr")
    for name in ("class", "confidence", "source"):
        np.testing.assert_array_equal(m[name].values, n[name].values)
    # Published whole: nothing staged is left, the map has consolidated metadata.
    assert not fs.exists(f"{bucket.bucket}/run/map.zarr.partial")
    assert not fs.glob(f"{bucket.bucket}/run/*.partial")
    top = json.loads(fs.cat_file(f"{bucket.bucket}/run/map.zarr/zarr.json"))
    assert "consolidated_metadata" in top and top["attributes"]["eoseg_complete"] is True
    # Plain xarray reads the store from the URL, CRS and coordinates included.
    plain = xr.open_zarr(f"{root}/map.zarr", storage_options={}, decode_coords="all")
    np.testing.assert_array_equal(plain["class"].values, b["class"].values)
    np.testing.assert_array_equal(plain["x"].values, b["x"].values)


def check_exports(bucket: S3, here: Path, remote: Docs, local: Docs) -> None:
    """export, query, evaluate, sample, areas: the same files, scores and tables."""
    fs, root = s3fs.S3FileSystem(), bucket.url("run")
    with (
        fs.open(f"{bucket.bucket}/run/map.tif") as f,
        rasterio.open(f) as src,
        rasterio.open(here / "map.tif") as ref,
    ):
        np.testing.assert_array_equal(src.read(), ref.read())
        assert src.crs == ref.crs and src.transform == ref.transform
    with fs.open(f"{bucket.bucket}/run/polygons.gpkg") as f:
        remote_polys = gpd.read_file(f)
    local_polys = gpd.read_file(here / "polygons.gpkg")
    pd.testing.assert_frame_equal(
        remote_polys.drop(columns="geometry"), local_polys.drop(columns="geometry")
    )
    assert remote_polys.geometry.geom_equals_exact(local_polys.geometry, 0).all()
    assert len(remote_polys) > 0 and fs.exists(f"{bucket.bucket}/run/polygons.qml")
    looks = [np.asarray(Image.open(io.BytesIO(resolve(p).read_bytes())))
             for p in (f"{root}/look.png", str(here / "look.png"))]  # fmt: skip
    np.testing.assert_array_equal(looks[0], looks[1])
    assert remote["query"] == local["query"] and remote["query"]["tiles"] > 0
    cells = [a for dates in remote["query"]["regions"].values() for a in dates.values()]
    assert cells and all(a["valid_km2"] > 0 for a in cells)
    # evaluate: the same scores, the report uploaded whole.
    assert remote["evaluate"]["overall_accuracy"] == local["evaluate"]["overall_accuracy"]
    report = json.loads(resolve(f"{root}/report/report.json").read_bytes())
    assert report["overall_accuracy"] == local["evaluate"]["overall_accuracy"]
    assert remote["evaluate"]["report"]["html"] == f"{root}/report/report.html"
    assert fs.ls(f"{bucket.bucket}/run/report/figures")
    assert resolve(f"{root}/sample.csv").read_bytes() == (here / "sample.csv").read_bytes()
    assert remote["areas"] == local["areas"]


def check_no_secret(bucket: S3, log_text: str) -> None:
    """No credential in any object the chain wrote (inputs aside), nor in the log."""
    fs = s3fs.S3FileSystem()
    keys = [k for k in fs.find(bucket.bucket) if not k.startswith(f"{bucket.bucket}/in/")]
    assert any(k.endswith(".qml") for k in keys) and any(k.endswith(".json") for k in keys)
    for key in keys:
        data = bytes(fs.cat_file(key))
        assert SECRET.encode() not in data, key
        assert bucket.env["AWS_ACCESS_KEY_ID"].encode() not in data, key
    assert SECRET not in log_text
