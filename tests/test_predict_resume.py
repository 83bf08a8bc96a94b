"""Resumable and cluster-independent prediction (issue 11): ``eoseg predict`` stopped by
Ctrl-C or killed with SIGKILL and run again writes only the missing tiles and equals an
uninterrupted run; a process-based 2-worker cluster makes the same map as prediction in
this process.

The interrupted runs must still be running when the signal lands, whatever the load of
the machine: the cube is cut into 45 tiles of 32 px and the model is a U-Net of base width
32 (about 0.1 s a tile on one core), so the tiles after the first take seconds while the
signal follows the first tile's record within a few tens of milliseconds.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import zarr

from eoseg.inference import PredictOptions
from eoseg.models import ModelCard, UNet, save_model
from eoseg.predict import open_classmap, predict
from eoseg.store import staging_path, tile_provenance
from tests.badinput import run_inprocess

OPTIONS = PredictOptions(chip_size=64, overlap=8, precision="fp32", probabilities=True)
FLAGS = ["--chip-size", "64", "--overlap", "8", "--precision", "fp32", "--probabilities"]
"""`OPTIONS` on the command line."""
TILE = 32
"""Small tiles: many of them, so that the signal lands mid-run."""
WIDTH = 32
"""Base width of the model: heavy enough that the tiles left after the first take seconds."""
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


@pytest.fixture(scope="module")
def small_tiles(cube_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo cube with 32 px tiles (45 of them)."""
    out = tmp_path_factory.mktemp("tiles") / "cube.zarr"
    shutil.copytree(cube_path, out)
    zarr.open_group(str(out), mode="r+").attrs["tile_size"] = TILE
    return out


@pytest.fixture(scope="module")
def heavy_model(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's untrained model made `WIDTH` wide (seeded)."""
    card = ModelCard.from_dict(json.loads((model_dir / "model.json").read_text()))
    torch.manual_seed(0)
    net = UNet(len(card.bands), len(card.classes), WIDTH, card.architecture["depth"])
    arch = {**card.architecture, "base_width": WIDTH}
    out = tmp_path_factory.mktemp("heavy") / "model"
    save_model(net, dataclasses.replace(card, name="heavy", architecture=arch), out)
    return out


@pytest.fixture(scope="module")
def reference(small_tiles: Path, heavy_model: Path, client: Any, tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    """The uninterrupted map, predicted on the session's threaded cluster (one torch thread
    per task, as on the process workers of the interrupted runs)."""
    out = tmp_path_factory.mktemp("ref") / "map.zarr"
    result = predict(small_tiles, heavy_model, out, client=client, options=OPTIONS)
    assert result.tiles == 45
    return result.path


def _same_map(a: Path, b: Path) -> None:
    x, y = open_classmap(a), open_classmap(b)
    for name in ("class", "confidence", "probabilities"):
        np.testing.assert_array_equal(x[name].values, y[name].values)


def _as_foreground_job() -> None:
    """In the child before exec: SIGINT back to its default action. A job started in the
    background of a non-interactive shell (``make test > log &``) ignores SIGINT, the
    ignored signal survives fork and exec, and Python then installs no KeyboardInterrupt
    handler: Ctrl-C would be ignored by the run under test, while a terminal's
    foreground job gets it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_predict(cube: Path, model: Path, out: Path) -> subprocess.Popen[str]:
    """``eoseg predict`` in its own process group, as a terminal's foreground job."""
    args = ["predict", "--cube", str(cube), "--model", str(model), "--out", str(out), *FLAGS]
    return subprocess.Popen(
        [sys.executable, "-m", "eoseg", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=_as_foreground_job,
        env=ENV,
    )


def _signal_after(proc: subprocess.Popen[str], out: Path, tiles: int, sig: int) -> str:
    """Send ``sig`` to the run's process group once ``tiles`` tiles are recorded in its
    staging store; returns what the run printed."""
    marks = staging_path(out) / "_eoseg_tiles"
    deadline = time.monotonic() + 180
    try:
        while not (marks.is_dir() and len(list(marks.glob("r*_c*.json"))) >= tiles):
            assert proc.poll() is None, f"predict ended before {tiles} tiles: {proc.communicate()}"
            assert time.monotonic() < deadline, f"fewer than {tiles} tiles written in 180 s"
            time.sleep(0.02)
        os.killpg(proc.pid, sig)
        return proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _kept(out: Path) -> dict[str, tuple[str, int]]:
    """Tiles recorded in a run's staging store: run id and the record's mtime, by tile."""
    folder = staging_path(out) / "_eoseg_tiles"
    return {
        r["tile"]: (r["run_id"], (folder / f"{r['tile']}.json").stat().st_mtime_ns)
        for r in tile_provenance(staging_path(out))
    }


def _check_unpublished(out: Path) -> None:
    """The interrupted run left only its staging store, not marked complete."""
    assert not out.exists()
    assert zarr.open_group(str(staging_path(out)), mode="r").attrs["eoseg_complete"] is False


def _check_resumed(out: Path, kept: dict[str, tuple[str, int]], total: int) -> None:
    """The rerun kept the interrupted run's tiles (same records, untouched) and wrote the
    others, each once, under its own run id."""
    records = {r["tile"]: r["run_id"] for r in tile_provenance(out)}
    assert len(records) == total
    folder = out / "_eoseg_tiles"
    assert {t: (records[t], (folder / f"{t}.json").stat().st_mtime_ns) for t in kept} == kept
    new_runs = {run for tile, run in records.items() if tile not in kept}
    assert len(new_runs) == 1 and not new_runs & {run for run, _ in kept.values()}


@pytest.mark.slow
def test_predict_ctrl_c_keeps_tiles_and_resumes(
    small_tiles: Path, heavy_model: Path, reference: Path, client: Any, tmp_path: Path
) -> None:
    """Ctrl-C (SIGINT to the process group) after the first tile: one line says what is
    kept and how to resume, the exit status is 130 (128 + SIGINT, what shells report), the
    written tiles stay and the map is not published; the same command resumes from them
    to the map of an uninterrupted run."""
    out = tmp_path / "map.zarr"
    proc = _start_predict(small_tiles, heavy_model, out)
    output = _signal_after(proc, out, 1, signal.SIGINT)
    assert proc.returncode == 130, output
    lines = [ln for ln in output.splitlines() if ln.strip() and not ln.startswith("predict ")]
    text = " ".join(" ".join(lines).split())
    kept = _kept(out)
    assert text == (
        f"interrupted: {len(kept)} of 45 tiles are written and kept in {staging_path(out)}; "
        "run the same command again to resume from them"
    ), output
    assert 0 < len(kept) < 45 and "Traceback" not in output
    _check_unpublished(out)

    # Resumed in-process on the session's threaded cluster: no second process to start.
    args = ["predict", "--cube", str(small_tiles), "--model", str(heavy_model), "--out",
            str(out), *FLAGS, "--scheduler", client.scheduler.address]  # fmt: skip
    resumed = run_inprocess(args)
    assert resumed.exit_code == 0, resumed.output
    _check_resumed(out, kept, 45)
    _same_map(out, reference)


@pytest.mark.slow
def test_sigkilled_predict_resumes_to_identical_result(
    small_tiles: Path, heavy_model: Path, reference: Path, tmp_path: Path
) -> None:
    """Killed (client and local workers at once) after some tiles, the same command run
    again writes only the tiles that were missing, and the map equals the reference."""
    out = tmp_path / "map.zarr"
    proc = _start_predict(small_tiles, heavy_model, out)
    _signal_after(proc, out, 3, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    kept = _kept(out)
    assert 3 <= len(kept) < 45
    _check_unpublished(out)
    resumed = predict(small_tiles, heavy_model, out, options=OPTIONS, run_id="resumed")
    assert resumed.tiles_written == 45 - len(kept)
    _check_resumed(out, kept, 45)
    _same_map(out, reference)


@pytest.mark.slow
def test_process_cluster_equals_in_process(
    small_tiles: Path, heavy_model: Path, reference: Path, tmp_path: Path
) -> None:
    """Two process workers (each loading the model through the plugin, with its own torch
    threads) make the map of the in-process run, pixel for pixel."""
    from eoseg.cluster import connect

    with connect(None, n_workers=2, processes=True, local_directory=tmp_path / "dask") as client:
        result = predict(small_tiles, heavy_model, tmp_path / "map.zarr", client=client,
                         options=OPTIONS)  # fmt: skip
    doc = result.to_dict()
    assert len(doc["peak_memory_mib"]) == 2  # two worker processes reported
    assert doc["threads_per_worker"] == str(max(1, len(os.sched_getaffinity(0)) // 2))
    _same_map(result.path, reference)
