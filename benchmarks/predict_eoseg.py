"""eoseg's side of `benchmarks/predict.py`: the model alone, and `predict` end to end.

The predict settings given to the benchmark (``--chip-size``, ``--overlap``,
``--precision``) reach eoseg through `predict_kwargs` (end to end) and `window_kwargs`
(model only), so both runs compute the same chips; the local cluster is sized as the CLI
sizes it (`eoseg.cluster.local_shape`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.predict_setup import TreeMemory
from eoseg.cube import open_cube
from eoseg.grid import iter_tiles
from eoseg.inference import PredictOptions, resolve_settings
from eoseg.model_input import time_slices
from eoseg.models import load_model
from eoseg.models.accel import resolve_accelerator
from eoseg.predict import predict
from eoseg.tile_prediction import predict_window, tile_input

SETTINGS = ("chip_size", "overlap", "precision")
"""Predict settings the benchmark passes through (eoseg's `PredictOptions` fields)."""


def predict_kwargs(options: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of `eoseg.predict.predict` for these settings (empty: defaults)."""
    return {"options": PredictOptions(**options)} if options else {}


def window_kwargs(card: Any, cube: Any, options: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of `tile_input` and `predict_window`: the lattice `predict`
    uses with these settings."""
    grid_shape = cube.odc.geobox.shape.yx
    return {"lattice": resolve_settings(card, grid_shape, PredictOptions(**options)).lattice}


def model_only(
    cube_path: Path, model_dir: Path, *, threads: int, options: dict[str, Any]
) -> dict[str, Any]:
    """Mpx/s of `predict_window` over every tile's window, read into memory first."""
    torch.set_num_threads(threads)
    cube = open_cube(cube_path)
    model, card = load_model(model_dir)
    accel = resolve_accelerator(precision=options.get("precision", "auto"), inference=True)
    model = accel.prepare(model)
    steps = next(iter(time_slices(int(cube.sizes["time"]), card.time)))
    tiles = list(iter_tiles(cube.odc.geobox, int(cube.attrs["tile_size"])))
    kwargs = window_kwargs(card, cube, options)
    windows = [tile_input(cube, card, t, steps, **kwargs)[0] for t in tiles]
    chip = kwargs["lattice"].chip
    with torch.inference_mode(), accel.autocast():  # oneDNN/cuDNN make kernels on first use
        model(accel.to_input(torch.zeros(2, len(card.bands), chip, chip)))
    if accel.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for window in windows:
        predict_window(model, card, window, accel=accel, **kwargs)
    if accel.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    megapixels = sum(t.height * t.width for t in tiles) / 1e6
    return {
        "megapixels": megapixels,
        "seconds": seconds,
        "mpx_s": megapixels / seconds,
        "tiles": len(tiles),
        "accelerator": accel.describe(),
        "threads": torch.get_num_threads(),
        "chip": chip,
    }


def cube_tiles(cube_path: Path, tile_size: int) -> int:
    """Tiles of a cube: what sizes the local cluster eoseg's CLI starts for it
    (`eoseg.cluster.local_shape`)."""
    return len(list(iter_tiles(open_cube(cube_path).odc.geobox, tile_size)))


def end_to_end_child(spec: dict[str, Any]) -> None:
    """Time `predict` of each cube of ``spec["runs"]`` on one fresh local cluster; prints
    one JSON line, a list of figures (one per run).

    The cluster is the one eoseg's CLI would start for the first cube's tiles (the caller
    groups cubes that get the same one). A first predict of ``spec["warm_cube"]`` loads
    the model on the workers and warms them up; then the timed ones, each with the peak
    memory of this process's tree (client, local scheduler, nannies, workers) during it.
    """
    from eoseg.cluster import connect

    kwargs = predict_kwargs(spec["options"])
    model = Path(spec["model"])
    first = Path(spec["runs"][0]["cube"])
    extra: dict[str, Any] = {"tasks": cube_tiles(first, spec["tile_size"]), "model": True}
    if spec["scheduler"] == "cuda":
        extra = {"gpu_threads": spec["gpu_threads"]}
    docs = []
    with (
        TreeMemory() as memory,
        TreeMemory(tree=False) as own,
        connect(spec["scheduler"], local_directory=Path(spec["dask_dir"]), **extra) as client,
    ):
        warm = predict(
            Path(spec["warm_cube"]), model, Path(spec["warm_out"]), client=client, **kwargs,
            overwrite=True, run_id="bench-warm-up",
        )  # fmt: skip
        idle = memory.now()
        threads = client.nthreads()
        torch_threads = client.run(torch.get_num_threads)
        for run in spec["runs"]:
            memory.reset()
            own.reset()
            timed = predict(
                Path(run["cube"]), model, Path(run["out"]), client=client, **kwargs,
                overwrite=True, run_id="bench",
            )  # fmt: skip
            docs.append(
                {
                    "megapixels": timed.megapixels,
                    "seconds": timed.seconds,
                    "mpx_s": timed.megapixels / timed.seconds,
                    "tiles": timed.tiles,
                    "first_mpx_s": warm.megapixels / warm.seconds,
                    "workers": len(threads),
                    "threads_per_worker": sorted(set(threads.values())),
                    "torch_threads_per_worker": sorted(set(torch_threads.values())),
                    "idle_tree_mb": idle / 2**20,
                    "peak_tree_mb": max(memory.peak, memory.now()) / 2**20,
                    # Where the tree's memory is: the process of client and local scheduler,
                    # and each worker that computed a tile (its lifetime peak, ru_maxrss).
                    "peak_client_mb": max(own.peak, own.now()) / 2**20,
                    "peak_worker_mb": sorted(timed.to_dict()["peak_memory_mib"].values()),
                }
            )
    print(json.dumps(docs))
