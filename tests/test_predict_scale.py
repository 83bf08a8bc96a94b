"""Scale without a country: many tiles through `run_tiles` on a real cluster, and the
benchmark of issue 11 (`benchmarks/predict.py`) returning its figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.predict_scale import country_grid
from benchmarks.predict_torchgeo import DEFAULT_VENV, has_torchgeo
from eoseg.cluster import in_flight_limit, run_tiles
from eoseg.errors import InvalidParameterError
from eoseg.grid import Tile, iter_tiles

ROOT = Path(__file__).resolve().parents[1]


def _malloc_trim() -> str | None:
    """The worker's own ``MALLOC_TRIM_THRESHOLD_`` (run there: a bound ``os.environ.get``
    would carry this process's environment along)."""
    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def _pixels(tile: Tile, *, scale: int) -> int:
    """A tile task that does no pixel work."""
    return tile.height * tile.width * scale


_STARTED: list[str] = []  # tiles run by the in-process (threaded) cluster of `client`


def _refuse_r0001(tile: Tile) -> int:
    _STARTED.append(tile.name)
    if tile.row == 1:
        raise InvalidParameterError(f"tile {tile.name} refused: expected a row 0 tile")
    return 1


def test_two_thousand_tiles_keep_in_flight_bounded(client) -> None:  # type: ignore[no-untyped-def]
    grid = country_grid(2000, 2048)
    tiles = list(iter_tiles(grid, 2048))
    held: list[int] = []

    def progress(done: int, total: int) -> None:
        held.append(len(client.futures))

    results = run_tiles(client, _pixels, tiles, progress=progress, max_in_flight=50, scale=3)

    assert len(tiles) == 2025  # 45 x 45 tiles: the grid's pixel count is Brazil's / 10
    assert results == [3 * 2048 * 2048] * len(tiles)  # in tile order, each once
    assert len(held) == len(tiles)
    # Bounded by the window, not by the tiles (released futures leave the client's table
    # a moment later, so a few more may show).
    assert 25 <= max(held) < 2 * 50
    assert in_flight_limit(client) == 64  # 2 threads x 4, at least 64


def test_error_in_a_tile_reaches_the_caller_and_stops_submitting(client) -> None:  # type: ignore[no-untyped-def]
    tiles = list(iter_tiles(country_grid(400, 64), 64))  # 20 x 20 tiles, row 1 refused
    _STARTED.clear()
    with pytest.raises(InvalidParameterError, match="tile r0001_c"):
        run_tiles(client, _refuse_r0001, tiles, max_in_flight=10)
    # The error came within the first 40 tiles; at most a window more were submitted.
    assert 20 < len(_STARTED) <= 40 + 10


def _torchgeo_args() -> list[str]:
    return [] if has_torchgeo(DEFAULT_VENV) else ["--no-torchgeo"]


@pytest.mark.slow
def test_benchmark_small_json_has_its_figures(tmp_path: Path) -> None:
    # A tiny network and scene: the test checks the figures are there and make sense,
    # not the speed (the benchmark's own --small is for people, and takes minutes).
    cmd = [sys.executable, str(ROOT / "benchmarks" / "predict.py"), "--small", "--json",
           "--scene-size", "256", "--tile-size", "128", "--scale", "4", "--card-chip", "64",
           "--base-width", "8", "--depth", "2", "--threads", "1", "--workdir", str(tmp_path),
           *_torchgeo_args()]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads(done.stdout)

    assert doc["scene_px"] == [256, 256] and doc["scale_px"] == [512, 512]
    assert doc["end_to_end"]["tiles"] == 4 and doc["end_to_end_big"]["tiles"] == 16
    assert doc["end_to_end"]["megapixels"] == pytest.approx(256 * 256 / 1e6)
    assert doc["end_to_end_big"]["megapixels"] == pytest.approx(512 * 512 / 1e6)
    for key in ("model_only_mpx_s", "end_to_end_mpx_s", "end_to_end_first_mpx_s"):
        assert doc[key] > 0
    assert doc["end_to_end_over_model_only"] == pytest.approx(
        doc["end_to_end_mpx_s"] / doc["model_only_mpx_s"]
    )
    assert 100 < doc["memory_1x_mb"] < 20_000 and 100 < doc["memory_big_mb"] < 20_000
    assert doc["memory_big_over_1x"] == pytest.approx(doc["memory_big_mb"] / doc["memory_1x_mb"])
    for size in ("1x", "big"):  # the tree's parts: the busiest worker, client and scheduler
        worker, client = doc[f"memory_worker_{size}_mb"], doc[f"memory_client_{size}_mb"]
        assert 100 < worker < doc[f"memory_{size}_mb"] and 100 < client < doc[f"memory_{size}_mb"]
    assert doc["memory_worker_big_over_1x"] == pytest.approx(
        doc["memory_worker_big_mb"] / doc["memory_worker_1x_mb"]
    )
    if "--no-torchgeo" in cmd:
        assert doc["ratio"] is None and doc["torchgeo_mpx_s"] is None
    else:
        assert doc["torchgeo"]["chips"] == 16  # 256 px scene, 64 px chips, no overlap
        assert doc["ratio"] == pytest.approx(doc["end_to_end_mpx_s"] / doc["torchgeo_mpx_s"])
        # Same network and weights: classes agree away from the chips' edges.
        assert doc["agreement"] > 0.75  # 0.85 here: 64 px chips, blended or not


@pytest.mark.parametrize(("tasks", "model"), [(1, True), (3, True), (None, True), (3, False)])
def test_local_cluster_shape(
    tasks: int | None, model: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The local cluster computes as many tiles at once as cores (at most 4, no more than
    the run's tiles): for a model as threads of one worker process (which holds it once),
    otherwise as processes of one thread; its workers keep glibc's malloc defaults."""
    from eoseg.cluster import MAX_LOCAL_THREADS, available_cores, connect

    # A nanny started earlier in this process without eoseg's settings (a test's own
    # LocalCluster) set the variable here, in the parent, and workers would inherit it.
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    cores = available_cores()
    parallel = min(cores, MAX_LOCAL_THREADS, tasks or cores)
    with connect(None, tasks=tasks, model=model, local_directory=tmp_path / "dask") as client:
        threads = sorted(client.nthreads().values())
        pids = set(client.run(os.getpid).values())
        trim = set(client.run(_malloc_trim).values())
    assert threads == ([parallel] if model else [1] * parallel)
    assert trim == {None}  # glibc's dynamic mmap threshold stays on (eoseg.cluster)
    assert len(pids) == len(threads) and os.getpid() not in pids  # processes of their own
