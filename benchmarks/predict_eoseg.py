"""eoseg's side of `benchmarks/predict.py`: the model alone, and `predict` end to end.

The predict settings given to the benchmark (``--chip-size``, ``--overlap``,
``--precision``) reach eoseg only through `predict_kwargs` and `window_kwargs`, and the
local cluster is sized by `local_workers`: the three places that know how this eoseg
takes them. An eoseg without those settings refuses them before anything runs.
"""

from __future__ import annotations

import inspect
import json
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.predict_setup import TreeMemory
from eoseg.cube import open_cube
from eoseg.grid import iter_tiles
from eoseg.model_input import time_slices
from eoseg.models import load_model
from eoseg.models.accel import resolve_accelerator
from eoseg.predict import predict, predict_window, tile_input

SETTINGS = ("chip_size", "overlap", "precision")
"""Predict settings the benchmark passes through (eoseg's `PredictOptions` fields)."""


def predict_kwargs(options: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of `eoseg.predict.predict` for these settings (empty: defaults).

    Raises:
        SystemExit: Settings given to an eoseg that has none.
    """
    if not options:
        return {}
    try:
        from eoseg.predict import PredictOptions  # type: ignore[attr-defined]
    except ImportError:
        raise SystemExit(
            f"this eoseg's predict takes no {', '.join(options)} setting: leave the flags out"
        ) from None
    return {"options": PredictOptions(**options)}


def window_kwargs(card: Any, cube: Any, options: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of `tile_input` and `predict_window` that give them the chips
    `predict` uses with these settings (none where eoseg has a single lattice)."""
    try:
        from eoseg.inference import PredictOptions, resolve_settings  # type: ignore[import-not-found]
    except ImportError:
        return {}
    grid_shape = cube.odc.geobox.shape.yx
    return {"lattice": resolve_settings(card, grid_shape, PredictOptions(**options)).lattice}


def local_workers(tiles: int) -> int | None:
    """Workers of the local cluster eoseg's CLI starts for ``tiles`` (None: its default)."""
    try:
        from eoseg.cluster import local_workers as workers  # type: ignore[attr-defined]
    except ImportError:
        return None
    return int(workers(tiles))


def model_only(
    cube_path: Path, model_dir: Path, *, threads: int, options: dict[str, Any]
) -> dict[str, Any]:
    """Mpx/s of `predict_window` over every tile's window, read into memory first."""
    torch.set_num_threads(threads)
    cube = open_cube(cube_path)
    model, card = load_model(model_dir)
    inference = "inference" in inspect.signature(resolve_accelerator).parameters
    accel = resolve_accelerator(
        precision=options.get("precision", "auto"), **({"inference": True} if inference else {})
    )
    model = accel.prepare(model)
    steps = next(iter(time_slices(int(cube.sizes["time"]), card.time)))
    tiles = list(iter_tiles(cube.odc.geobox, int(cube.attrs["tile_size"])))
    kwargs = window_kwargs(card, cube, options)
    windows = [tile_input(cube, card, t, steps, **kwargs)[0] for t in tiles]
    chip = kwargs["lattice"].chip if "lattice" in kwargs else card.chip_size
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


def end_to_end_child(spec: dict[str, Any]) -> None:
    """Time `predict` of one cube on a fresh local cluster; prints one JSON line.

    The cluster is the one eoseg's CLI would start for the cube's tiles. A first predict
    of ``spec["warm_cube"]`` loads the model on the workers and warms them up; then the
    timed one, with the peak memory of this process's tree (client, local scheduler,
    nannies, workers) during it.
    """
    from eoseg.cluster import connect

    kwargs = predict_kwargs(spec["options"])
    cube, model = Path(spec["cube"]), Path(spec["model"])
    tiles = len(list(iter_tiles(open_cube(cube).odc.geobox, spec["tile_size"])))
    extra: dict[str, Any] = {"n_workers": local_workers(tiles)}
    if spec["scheduler"] == "cuda":
        extra = {"gpu_threads": spec["gpu_threads"]}
    with (
        TreeMemory() as memory,
        connect(spec["scheduler"], local_directory=Path(spec["dask_dir"]), **extra) as client,
    ):
        warm_out = Path(spec["warm_out"])
        warm = predict(
            Path(spec["warm_cube"]),
            model,
            warm_out,
            client=client,
            **kwargs,
            overwrite=True,
            run_id="bench-warm-up",
        )
        idle = memory.now()
        memory.reset()
        timed = predict(
            cube, model, Path(spec["out"]), client=client, **kwargs, overwrite=True, run_id="bench"
        )
        peak = max(memory.peak, memory.now())
        threads = client.nthreads()
        torch_threads = client.run(torch.get_num_threads)
    doc = {
        "megapixels": timed.megapixels,
        "seconds": timed.seconds,
        "mpx_s": timed.megapixels / timed.seconds,
        "tiles": timed.tiles,
        "first_mpx_s": warm.megapixels / warm.seconds,
        "workers": len(threads),
        "threads_per_worker": sorted(set(threads.values())),
        "torch_threads_per_worker": sorted(set(torch_threads.values())),
        "idle_tree_mb": idle / 2**20,
        "peak_tree_mb": peak / 2**20,
    }
    print(json.dumps(doc))
