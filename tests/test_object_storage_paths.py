"""Every location on object storage (issue 12): rasterize -> train -> register -> predict
with the registry's model -> export polygons and quicklook -> evaluate with truth and
report -> sample + areas -> mosaic, all on s3:// URLs of one real S3 server on loopback
(tests/s3.py), each equal to the same command on local paths. No credential reaches an
object or a log; a missing bucket or missing credentials are refused naming the option."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import s3fs
from PIL import Image
from typer.testing import CliRunner

from eoseg.classmap import open_classmap
from eoseg.cli import app
from eoseg.labels import open_labels
from eoseg.storage import resolve
from tests.s3 import S3, SECRET, fresh_bucket

pytestmark = pytest.mark.slow
runner = CliRunner()
TRAIN = ["--epochs", "1", "--finetune-epochs", "0", "--base-width", "8", "--depth", "2",
         "--chip-size", "32", "--train-chips", "8", "--val-chips", "2", "--batch-size", "4",
         "--num-threads", "1", "--device", "cpu", "--precision", "fp32", "--seed", "0",
         "--no-refit"]  # fmt: skip
PREDICT = ["--chip-size", "32", "--overlap", "8", "--precision", "fp32"]


@pytest.fixture(scope="module")
def bucket(s3_endpoint: str) -> Iterator[S3]:
    """One bucket for the module, credentials and endpoint in the environment."""
    with fresh_bucket(s3_endpoint) as made:
        yield made


def _run(args: list[str], json_out: bool = True) -> dict[str, Any]:
    result = runner.invoke(app, [*args, "--json"] if json_out else args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout) if json_out else {}


def _pipeline(root: str, inputs: dict[str, str], client: Any) -> dict[str, dict[str, Any]]:
    """Every command of the module's docstring, each location under ``root``."""
    sched = ["--scheduler", client.scheduler.address]
    at = {k: f"{root}/{k}" for k in ("labels.zarr", "model", "registry", "map.zarr",
                                     "polygons.gpkg", "look.png", "report", "sample.csv",
                                     "mosaic.zarr")}  # fmt: skip
    docs: dict[str, dict[str, Any]] = {}
    docs["rasterize"] = _run(["rasterize", inputs["noisy"], "--cube", inputs["cube"],
                              "--out", at["labels.zarr"], *sched])  # fmt: skip
    docs["train"] = _run(["train", "--cube", inputs["cube"], "--labels", at["labels.zarr"],
                          "--out", at["model"], *TRAIN])  # fmt: skip
    docs["register"] = _run(["models", "register", at["model"], "--registry", at["registry"]])
    version = f"{at['registry']}/{docs['train']['name']}/{docs['train']['version']}"
    docs["predict"] = _run(["predict", "--cube", inputs["cube"], "--model", version,
                            "--out", at["map.zarr"], *PREDICT, *sched])  # fmt: skip
    docs["export"] = _run(["export", at["map.zarr"], "--polygons", at["polygons.gpkg"],
                           "--quicklook", at["look.png"]])  # fmt: skip
    docs["evaluate"] = _run(["evaluate", at["map.zarr"], "--truth", inputs["truth"],
                             "--report", at["report"]])  # fmt: skip
    docs["sample"] = _run(["sample", at["map.zarr"], "--out", at["sample.csv"], "--n", "60",
                           "--min-per-class", "5"])  # fmt: skip
    labelled = f"{root}/labelled.csv"  # the sample, labelled as mapped
    resolve(labelled).write_bytes(_labelled(resolve(at["sample.csv"]).read_bytes()))
    docs["areas"] = _run(["areas", at["map.zarr"], "--reference", labelled])
    docs["mosaic"] = _run(["mosaic", at["map.zarr"], inputs["other_map"],
                           "--out", at["mosaic.zarr"], *sched])  # fmt: skip
    return docs


def _bytes(where: str) -> bytes:
    return resolve(where).read_bytes()


def _labelled(sample_csv: bytes) -> bytes:
    """The drawn sample, labelled as mapped (the reference column filled)."""
    frame = pd.read_csv(io.BytesIO(sample_csv))
    frame["reference"] = frame["map_class_name"]
    return frame.to_csv(index=False).encode()


def test_every_command_on_s3_equals_local(
    bucket: S3, demo_data, cube_path: Path, tmp_path: Path, client, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    fs = s3fs.S3FileSystem()
    fs.put(str(cube_path), f"{bucket.bucket}/in/cube.zarr", recursive=True)
    fs.put_file(
        str(demo_data.noisy_labels), f"{bucket.bucket}/in/noisy{demo_data.noisy_labels.suffix}"
    )
    fs.put_file(str(demo_data.truth), f"{bucket.bucket}/in/truth{demo_data.truth.suffix}")
    local_in = {"cube": str(cube_path), "noisy": str(demo_data.noisy_labels),
                "truth": str(demo_data.truth)}  # fmt: skip
    remote_in = {"cube": bucket.url("in/cube.zarr"),
                 "noisy": bucket.url(f"in/noisy{demo_data.noisy_labels.suffix}"),
                 "truth": bucket.url(f"in/truth{demo_data.truth.suffix}")}  # fmt: skip
    # Both mosaics take the local map as second input: the remote one mixes a URL and a path.
    other = tmp_path / "local"
    local_in["other_map"] = remote_in["other_map"] = str(other / "map.zarr")
    local = _pipeline(str(other), local_in, client)
    remote = _pipeline(bucket.url("run"), remote_in, client)

    # rasterize, train, predict: the same pixels and the same model version (a content hash).
    root = bucket.url("run")
    np.testing.assert_array_equal(
        open_labels(f"{root}/labels.zarr").values, open_labels(other / "labels.zarr").values
    )
    assert remote["train"]["version"] == local["train"]["version"]
    assert remote["train"]["model"] == f"{root}/model"
    assert fs.exists(f"{bucket.bucket}/run/registry/{remote['train']['name']}/"
                     f"{remote['train']['version']}/model.json")  # fmt: skip
    a, b = open_classmap(f"{root}/map.zarr"), open_classmap(other / "map.zarr")
    for name in ("class", "confidence"):
        np.testing.assert_array_equal(a[name].values, b[name].values)
    # export: the same polygons and quicklook image, styled.
    with fs.open(f"{bucket.bucket}/run/polygons.gpkg") as f:
        remote_polys = gpd.read_file(f)
    local_polys = gpd.read_file(other / "polygons.gpkg")
    pd.testing.assert_frame_equal(
        remote_polys.drop(columns="geometry"), local_polys.drop(columns="geometry")
    )
    assert remote_polys.geometry.geom_equals_exact(local_polys.geometry, 0).all()
    assert len(remote_polys) > 0 and fs.exists(f"{bucket.bucket}/run/polygons.qml")
    looks = [np.asarray(Image.open(io.BytesIO(_bytes(p))))
             for p in (f"{root}/look.png", str(other / "look.png"))]  # fmt: skip
    np.testing.assert_array_equal(looks[0], looks[1])
    # evaluate: the same scores, the report uploaded whole.
    assert remote["evaluate"]["overall_accuracy"] == local["evaluate"]["overall_accuracy"]
    report = json.loads(_bytes(f"{root}/report/report.json"))
    assert report["overall_accuracy"] == local["evaluate"]["overall_accuracy"]
    assert remote["evaluate"]["report"]["html"] == f"{root}/report/report.html"
    assert fs.ls(f"{bucket.bucket}/run/report/figures")
    # sample, areas, mosaic: the same tables and pixels.
    assert _bytes(f"{root}/sample.csv") == (other / "sample.csv").read_bytes()
    assert remote["areas"] == local["areas"]
    m, n = open_classmap(f"{root}/mosaic.zarr"), open_classmap(other / "mosaic.zarr")
    for name in ("class", "confidence", "source"):
        np.testing.assert_array_equal(m[name].values, n[name].values)
    # Nothing staged is left, and no credential is in any object or the log.
    assert not fs.glob(f"{bucket.bucket}/run/*.partial")
    for key in fs.find(bucket.bucket):
        if not key.startswith(f"{bucket.bucket}/in/"):
            data = bytes(fs.cat_file(key))
            assert SECRET.encode() not in data, key
            assert bucket.env["AWS_ACCESS_KEY_ID"].encode() not in data, key
    assert SECRET not in caplog.text


NO_BUCKET = "s3://eoseg-no-such-bucket/x"
BAD = [
    ("missing-bucket-out", False, ["rasterize", "{noisy}", "--cube", "{cube}", "--out",
                                   f"{NO_BUCKET}/labels.zarr"], "--out"),
    ("missing-bucket-classmap", False, ["evaluate", f"{NO_BUCKET}/map.zarr", "--truth",
                                        "{truth}"], "CLASSMAP"),
    ("missing-bucket-model", False, ["predict", "--cube", "{cube}", "--model",
                                     f"{NO_BUCKET}/model", "--out", "{tmp}/m.zarr"], "--model"),
    ("no-credentials-cube", True, ["train", "--cube", "{s3}/cube.zarr", "--labels",
                                   "{s3}/labels.zarr", "--out", "{tmp}/model"], "--cube"),
    ("no-credentials-registry", True, ["models", "list", "--registry", "{s3}/models"],
     "--registry"),
    ("no-credentials-classmap", True, ["sample", "{s3}/map.zarr", "--out", "{tmp}/s.csv"],
     "CLASSMAP"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "anonymous", "args", "flag"), BAD, ids=[c[0] for c in BAD])
def test_unreachable_url_is_refused_naming_the_option(
    case: str,
    anonymous: bool,
    args: list[str],
    flag: str,
    bucket: S3,
    demo_data,
    cube_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if anonymous:  # no credentials anywhere botocore looks
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            monkeypatch.delenv(name)
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    s3fs.S3FileSystem.clear_instance_cache()
    values = {"noisy": str(demo_data.noisy_labels), "cube": str(cube_path), "tmp": str(tmp_path),
              "truth": str(demo_data.truth), "s3": bucket.url("run")}  # fmt: skip
    try:
        result = runner.invoke(app, [a.format(**values) for a in args])
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
    assert result.exit_code == 2, result.output
    assert flag in result.output and "Traceback" not in result.output
    assert ("does not exist" if not anonymous else "credentials") in result.output
    assert SECRET not in result.output
    assert not list(tmp_path.glob("*.zarr")) and not (tmp_path / "model").exists()


def test_aoi_and_regions_files_on_s3_read_as_local_ones(s3: S3, tmp_path: Path) -> None:
    """`query`/`evaluate`/`areas` read --aoi and --regions through `eoseg.aoi`: a file on
    object storage gives the geometries the same file gives locally."""
    import s3fs
    import shapely

    from eoseg.aoi import read_aoi, read_regions

    parts = [shapely.box(500_000, 5_000_000, 501_000, 5_001_000),
             shapely.box(501_000, 5_000_000, 502_500, 5_000_800)]  # fmt: skip
    gdf = gpd.GeoDataFrame({"name": ["a", "b"]}, geometry=parts, crs=32633)
    local = tmp_path / "regions.gpkg"
    gdf.to_file(local, engine="pyogrio")
    s3fs.S3FileSystem().put_file(str(local), f"{s3.bucket}/in/regions.gpkg")
    url = s3.url("in/regions.gpkg")
    assert read_aoi(url).equals(read_aoi(str(local)))
    remote, here = read_regions(url, "name"), read_regions(local, "name")
    assert remote.keys() == here.keys() == {"a", "b"}
    assert all(remote[k].equals(here[k]) for k in here)
    assert read_aoi(url).area > 0
