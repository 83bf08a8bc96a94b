"""Object storage end to end (issue 12): one chain of every command - ingest -> rasterize
-> train -> models register -> predict with the registry's model -> export (COG, polygons,
quicklook) -> query -> evaluate with truth and report -> sample + areas -> mosaic - on
s3:// URLs of a real S3 server on loopback (tests/s3.py) equals the same chain on local
paths; stores stay readable with plain xarray; no credential reaches an object or a log.

The local chain runs once per module (`reference`), before any credential is in the
environment; the remote chain runs in the test with the module's bucket. The data are
the session's small demo (6 tiles of 96 px) and a 1-epoch U-Net of width 8: the test
checks that URLs give what paths give, not training quality."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import s3fs
from typer.testing import CliRunner

from eoseg.cli import app
from eoseg.storage import resolve
from tests.s3 import S3, fresh_bucket
from tests.s3_checks import check_exports, check_no_secret, check_stores

pytestmark = pytest.mark.slow
runner = CliRunner()
TILE = "96"
"""The cube's tile size: 6 tiles of the session demo, so every command works tile-wise."""
TRAIN = ["--epochs", "1", "--finetune-epochs", "0", "--base-width", "8", "--depth", "2",
         "--chip-size", "32", "--train-chips", "8", "--val-chips", "2", "--batch-size", "4",
         "--num-threads", "1", "--device", "cpu", "--precision", "fp32", "--seed", "0",
         "--no-refit"]  # fmt: skip
PREDICT = ["--chip-size", "32", "--overlap", "8", "--precision", "fp32"]
AOI = "11.99,47.995,12.01,48.005"
OUTPUTS = ("cube.zarr", "labels.zarr", "model", "registry", "map.zarr", "map.tif",
           "polygons.gpkg", "look.png", "report", "sample.csv", "mosaic.zarr")  # fmt: skip


def _run(args: list[str]) -> dict[str, Any]:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def chain(root: str, inputs: dict[str, str], scheduler: str) -> dict[str, dict[str, Any]]:
    """Every command of the module's docstring, each output under ``root``."""
    sched = ["--scheduler", scheduler]
    at = {k: f"{root}/{k}" for k in OUTPUTS}
    docs: dict[str, dict[str, Any]] = {}
    docs["ingest"] = _run(["ingest", inputs["catalog"], "--out", at["cube.zarr"],
                           "--tile-size", TILE, *sched])  # fmt: skip
    docs["rasterize"] = _run(["rasterize", inputs["noisy"], "--cube", at["cube.zarr"],
                              "--out", at["labels.zarr"], *sched])  # fmt: skip
    docs["train"] = _run(["train", "--cube", at["cube.zarr"], "--labels", at["labels.zarr"],
                          "--out", at["model"], *TRAIN])  # fmt: skip
    docs["register"] = _run(["models", "register", at["model"], "--registry", at["registry"]])
    version = f"{at['registry']}/{docs['train']['name']}/{docs['train']['version']}"
    docs["predict"] = _run(["predict", "--cube", at["cube.zarr"], "--model", version,
                            "--out", at["map.zarr"], *PREDICT, *sched])  # fmt: skip
    docs["export"] = _run(["export", at["map.zarr"], "--cog", at["map.tif"], "--polygons",
                           at["polygons.gpkg"], "--quicklook", at["look.png"]])  # fmt: skip
    docs["query"] = _run(["query", at["map.zarr"], "--aoi", AOI])
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


def _labelled(sample_csv: bytes) -> bytes:
    """The drawn sample, labelled as mapped (the reference column filled)."""
    frame = pd.read_csv(io.BytesIO(sample_csv))
    frame["reference"] = frame["map_class_name"]
    return frame.to_csv(index=False).encode()


@pytest.fixture(scope="module")
def reference(demo_data, tmp_path_factory, client) -> tuple[Path, dict[str, dict[str, Any]]]:  # type: ignore[no-untyped-def]
    """The chain on local paths, once for the module: its folder and its JSON outputs.
    Its mosaic's second map is its own class map (the remote mosaic takes the same)."""
    root = tmp_path_factory.mktemp("local")
    inputs = {"catalog": str(demo_data.catalog), "noisy": str(demo_data.noisy_labels),
              "truth": str(demo_data.truth), "other_map": str(root / "map.zarr")}  # fmt: skip
    return root, chain(str(root), inputs, client.scheduler.address)


@pytest.fixture(scope="module")
def bucket(s3_endpoint: str) -> Iterator[S3]:
    """One bucket for the module, credentials and endpoint in the environment."""
    with fresh_bucket(s3_endpoint) as made:
        yield made


@pytest.fixture
def debug_log(
    caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest
) -> Iterator[pytest.LogCaptureFixture]:
    """Every logger at DEBUG into ``caplog`` (the credentials check reads it all). pytest's
    log-file handler, which writes to /dev/null unless --log-file is given, formats every
    record too (botocore's DEBUG lines for each request: ~10 s of a 2-core run); muted
    for the test in that case only."""
    plugin = request.config.pluginmanager.get_plugin("logging-plugin")
    handler = getattr(plugin, "log_file_handler", None)
    mute = handler if getattr(handler, "baseFilename", "") == os.path.abspath(os.devnull) else None
    level = mute.level if mute is not None else logging.NOTSET
    caplog.set_level(logging.DEBUG)
    if mute is not None:
        mute.setLevel(logging.WARNING)
    try:
        yield caplog
    finally:
        if mute is not None:
            mute.setLevel(level)


def test_every_command_on_s3_equals_local(  # type: ignore[no-untyped-def]
    reference, bucket: S3, demo_data, client, debug_log: pytest.LogCaptureFixture
) -> None:
    local_root, local = reference
    fs = s3fs.S3FileSystem()
    noisy, truth = (f"in/{p.name}" for p in (demo_data.noisy_labels, demo_data.truth))
    fs.put_file(str(demo_data.noisy_labels), f"{bucket.bucket}/{noisy}")
    fs.put_file(str(demo_data.truth), f"{bucket.bucket}/{truth}")
    # The catalog stays local; the mosaic's second map is the local one: the remote
    # mosaic mixes a URL and a path.
    remote_in = {"catalog": str(demo_data.catalog), "noisy": bucket.url(noisy),
                 "truth": bucket.url(truth), "other_map": str(local_root / "map.zarr")}  # fmt: skip
    remote = chain(bucket.url("run"), remote_in, client.scheduler.address)

    check_stores(bucket, local_root, remote, local)
    check_exports(bucket, local_root, remote, local)
    assert "botocore" in debug_log.text  # DEBUG lines of every library were read
    check_no_secret(bucket, debug_log.text)
