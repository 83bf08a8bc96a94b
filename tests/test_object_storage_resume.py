"""Kill-and-resume on object storage (issue 12): ``eoseg predict`` to an s3:// URL killed
with SIGKILL mid-run, run again, writes only the missing tiles and equals an
uninterrupted run (the local version is tests/test_predict_resume.py)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import s3fs
import zarr

from eoseg.classmap import open_classmap
from eoseg.inference import PredictOptions
from eoseg.predict import predict
from eoseg.store import consolidate, staging_path, tile_provenance
from tests.s3 import S3

OPTIONS = PredictOptions(chip_size=64, overlap=8, precision="fp32", probabilities=True)
TILE = 48
"""Small tiles: 24 of them, so the kill (after 10) lands mid-run, and the resumed run
writes the other 14 (32 px tiles made 45: a resumed run twice as long on object storage)."""


@pytest.fixture(scope="module")
def small_cube(cube_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo cube with `TILE` px tiles, consolidated again."""
    out = tmp_path_factory.mktemp("s3tiles") / "cube.zarr"
    shutil.copytree(cube_path, out)
    zarr.open_group(str(out), mode="r+").attrs["tile_size"] = TILE
    consolidate(out)
    return out


@pytest.mark.slow
def test_sigkilled_predict_on_s3_resumes_to_identical_result(  # type: ignore[no-untyped-def]
    s3: S3, small_cube: Path, model_dir: Path, tmp_path: Path, client
) -> None:
    fs = s3fs.S3FileSystem()
    fs.put(str(small_cube), f"{s3.bucket}/cube.zarr", recursive=True)
    cube, out = s3.url("cube.zarr"), s3.url("map.zarr")
    # The reference and the resumed run on the module's threaded cluster (a process
    # cluster each took ~10 s to start on 2 cores); only the killed run starts its own.
    ref = predict(small_cube, model_dir, tmp_path / "ref.zarr", options=OPTIONS, client=client)
    reference = ref.path
    cmd = [sys.executable, "-m", "eoseg", "predict", "--cube", cube, "--model", str(model_dir),
           "--out", out, "--chip-size", "64", "--overlap", "8", "--precision", "fp32",
           "--probabilities"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env
    )
    marks = f"{s3.bucket}/map.zarr.partial/_eoseg_tiles/r*.json"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(fs.glob(marks)) < 10 and proc.poll() is None:
        time.sleep(0.2)
        fs.invalidate_cache()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {r["tile"]: r["run_id"] for r in tile_provenance(staging_path(out))}
    total = len(tile_provenance(reference))
    assert 10 <= len(before) < total and not fs.exists(f"{s3.bucket}/map.zarr")
    resumed = predict(cube, model_dir, out, options=OPTIONS, run_id="resumed", client=client)
    assert resumed.tiles_written == total - len(before)
    after = {r["tile"]: r["run_id"] for r in tile_provenance(out)}
    assert {t: after[t] for t in before} == before  # the killed run's tiles were kept
    assert sum(run == "resumed" for run in after.values()) == total - len(before)
    x, y = open_classmap(out), open_classmap(reference)
    for name in ("class", "confidence", "probabilities"):
        np.testing.assert_array_equal(x[name].values, y[name].values)
