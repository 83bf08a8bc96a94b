"""Resumable and cluster-independent prediction (issue 11): ``eoseg predict`` killed with
SIGKILL and run again writes only the missing tiles and equals an uninterrupted run; a
process-based 2-worker cluster makes the same map as prediction in this process."""

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
import zarr

from eoseg.inference import PredictOptions
from eoseg.predict import open_classmap, predict
from eoseg.store import staging_path, tile_provenance

OPTIONS = PredictOptions(chip_size=64, overlap=8, precision="fp32", probabilities=True)
TILE = 32
"""Small tiles: many of them, so the kill lands mid-run."""


@pytest.fixture(scope="module")
def small_tiles(cube_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo cube with 32 px tiles (about 50 of them)."""
    out = tmp_path_factory.mktemp("tiles") / "cube.zarr"
    shutil.copytree(cube_path, out)
    zarr.open_group(str(out), mode="r+").attrs["tile_size"] = TILE
    return out


@pytest.fixture(scope="module")
def reference(small_tiles: Path, model_dir: Path, tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    """The uninterrupted map, predicted in this process (no cluster)."""
    out = tmp_path_factory.mktemp("ref") / "map.zarr"
    return predict(small_tiles, model_dir, out, options=OPTIONS).path


def _same_map(a: Path, b: Path) -> None:
    x, y = open_classmap(a), open_classmap(b)
    for name in ("class", "confidence", "probabilities"):
        np.testing.assert_array_equal(x[name].values, y[name].values)


@pytest.mark.slow
def test_sigkilled_predict_resumes_to_identical_result(
    small_tiles: Path, model_dir: Path, reference: Path, tmp_path: Path
) -> None:
    """Killed (client and local workers at once) after some tiles, the same command run
    again writes only the tiles that were missing, and the map equals the reference."""
    out = tmp_path / "map.zarr"
    cmd = [sys.executable, "-m", "eoseg", "predict", "--cube", str(small_tiles), "--model",
           str(model_dir), "--out", str(out), "--chip-size", "64", "--overlap", "8",
           "--precision", "fp32", "--probabilities"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env
    )
    marks = staging_path(out) / "_eoseg_tiles"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and len(list(marks.glob("r*.json"))) < 10:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {r["tile"]: r["run_id"] for r in tile_provenance(staging_path(out))}
    total = len(tile_provenance(reference))
    assert 10 <= len(before) < total and not out.exists()
    resumed = predict(small_tiles, model_dir, out, options=OPTIONS, run_id="resumed")
    assert resumed.tiles_written == total - len(before)
    after = {r["tile"]: r["run_id"] for r in tile_provenance(out)}
    assert {t: after[t] for t in before} == before  # the killed run's tiles were kept
    assert sum(run == "resumed" for run in after.values()) == total - len(before)
    _same_map(out, reference)


@pytest.mark.slow
def test_process_cluster_equals_in_process(
    small_tiles: Path, model_dir: Path, reference: Path, tmp_path: Path
) -> None:
    """Two process workers (each loading the model through the plugin, with its own torch
    threads) make the map of the in-process run, pixel for pixel."""
    from eoseg.cluster import connect

    with connect(None, n_workers=2, processes=True, local_directory=tmp_path / "dask") as client:
        result = predict(small_tiles, model_dir, tmp_path / "map.zarr", client=client,
                         options=OPTIONS)  # fmt: skip
    doc = result.to_dict()
    assert len(doc["peak_memory_mib"]) == 2  # two worker processes reported
    assert doc["threads_per_worker"] == str(max(1, len(os.sched_getaffinity(0)) // 2))
    _same_map(result.path, reference)
