"""Tiled inference with smooth overlap blending, on a Dask cluster.

Chips are laid on one *global* chip lattice (origin at the grid corner shifted by half a
chip, stride half a chip), weighted by a separable ``sin²`` window and summed. With a
stride of half the chip, the ``sin²`` weights of overlapping chips add up to exactly one,
so every pixel's probabilities are a smooth blend of four chips. Because the lattice is
global, a pixel gets the same prediction whichever tile computes it: tiles (and therefore
the mosaic) have no seams. Each tile reads its own window plus half a chip of halo
straight from the cube's Zarr store.

The input is the model card's (`eoseg.model_input`): a median model maps the composite of
the cube's dates into a ``(y, x)`` class map; a per-date model maps every date, into a
``(time, y, x)`` class map on the cube's dates, each date masked by its own validity.

The model is loaded once per worker (`ModelPlugin`); tasks carry only the model path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import torch
import xarray as xr
from distributed import Client, WorkerPlugin
from odc.geo.geobox import GeoBox

from eoseg.classes import IGNORE_ID
from eoseg.cluster import ProgressFn, run_tiles
from eoseg.contexts import SINGLE, Fusion, context_probabilities, resolve_fusion
from eoseg.cube import open_cube
from eoseg.dates import date_labels
from eoseg.grid import Tile, grid_coords, iter_tiles
from eoseg.locks import output_lock
from eoseg.model_input import input_stack, time_slices
from eoseg.models.accel import Accelerator, resolve_accelerator
from eoseg.models.card import ModelCard, adjust_logits, check_bands, normalize
from eoseg.models.weights import load_model
from eoseg.outputs import check_output
from eoseg.store import (
    create_store,
    done_tiles,
    open_product,
    open_store,
    publish,
    resumable,
    write_tile,
)

log = logging.getLogger(__name__)

_MODELS: dict[str, tuple[torch.nn.Module, ModelCard]] = {}
_MODELS_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class PredictResult:
    """What a predict run wrote."""

    path: Path
    model: str
    tiles: int
    megapixels: float
    seconds: float
    dates: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (what ``eoseg predict --json`` prints)."""
        return {
            "classmap": str(self.path),
            "model": self.model,
            "tiles": self.tiles,
            "megapixels": self.megapixels,
            "seconds": round(self.seconds, 2),
            **({"dates": list(self.dates)} if self.dates else {}),
        }


class ModelPlugin(WorkerPlugin):
    """Loads the model once on every worker (and sets torch's thread count)."""

    name = "eoseg-model"

    def __init__(self, model_dir: str, threads: int = 1) -> None:
        self.model_dir = model_dir
        self.threads = threads

    def setup(self, worker: Any) -> None:
        # Nannies pin OMP_NUM_THREADS=1; torch needs its thread count set explicitly.
        torch.set_num_threads(self.threads)
        get_model(self.model_dir)


def get_model(model_dir: str) -> tuple[torch.nn.Module, ModelCard]:
    """The model of ``model_dir``, loaded at most once per process."""
    with _MODELS_LOCK:
        if model_dir not in _MODELS:
            # On a dask-cuda worker CUDA_VISIBLE_DEVICES names its one GPU, so "cuda" is it.
            accel = resolve_accelerator()
            model, card = load_model(Path(model_dir), device=str(accel.device))
            _MODELS[model_dir] = (accel.prepare(model), card)
        return _MODELS[model_dir]


def blend_window(chip: int) -> np.ndarray:
    """The 2-D ``sin²`` weights of one chip; shifted by ``chip/2`` they sum to one."""
    ramp = np.sin(np.pi * (np.arange(chip) + 0.5) / chip) ** 2
    return np.outer(ramp, ramp).astype("float32")


def predict_window(
    model: torch.nn.Module,
    card: ModelCard,
    window: np.ndarray,
    *,
    batch_size: int | None = None,
    accel: Accelerator | None = None,
) -> np.ndarray:
    """Class probabilities of a padded window by blended chips.

    Args:
        model: The network (eval mode).
        card: Its model card (chip size, normalisation).
        window: float32 ``(band, H, W)`` physical values (NaN = nodata), with ``H`` and
            ``W`` equal to ``chip/2 * k + chip/2`` so the chip lattice fits exactly.
        batch_size: Chips per forward pass (bounds memory); default 32 on CUDA, 8 on
            the CPU.
        accel: Device, precision and layout; default: the model's device with its
            automatic precision (bf16 and channels-last on CUDA, fp32 on the CPU).

    Returns:
        float32 ``(class, H - chip, W - chip)`` probabilities of the window's interior
        (the window minus half a chip on each side).
    """
    chip = card.chip_size
    stride = chip // 2
    if accel is None:
        accel = resolve_accelerator(str(next(model.parameters()).device))
    if batch_size is None:
        batch_size = 32 if accel.device.type == "cuda" else 8
    # The window goes to the device once and the blend accumulates there: copying every
    # chip's probabilities back to host memory would dominate on a GPU.
    x_t = torch.as_tensor(np.ascontiguousarray(normalize(window, card)), dtype=torch.float32)
    x_t = x_t.to(accel.device)
    _, height, width = x_t.shape
    starts = [
        (r, c)
        for r in range(0, height - chip + 1, stride)
        for c in range(0, width - chip + 1, stride)
    ]
    acc = torch.zeros((len(card.classes), height, width), device=accel.device)
    weight = torch.as_tensor(blend_window(chip), device=accel.device)
    with torch.inference_mode(), accel.autocast():
        for i in range(0, len(starts), batch_size):
            batch = starts[i : i + batch_size]
            chips = torch.stack([x_t[:, r : r + chip, c : c + chip] for r, c in batch])
            logits = adjust_logits(model(accel.to_input(chips)).float(), card)
            probs = torch.softmax(logits, dim=1) * weight
            for (r, c), p in zip(batch, probs, strict=True):
                acc[:, r : r + chip, c : c + chip] += p
    half = chip // 2
    return acc[:, half : height - half, half : width - half].cpu().numpy()


def read_window(data: xr.DataArray, grid: GeoBox, tile: Tile, chip: int) -> np.ndarray:
    """Read a tile plus halo from the cube, mirrored where it passes the grid edge.

    The window starts half a chip before the tile and is rounded up to whole strides, so
    chips fall on the global lattice. ``data``'s last two axes are ``(y, x)``; leading
    axes (time, band) are read whole.
    """
    stride = chip // 2
    half = chip // 2
    rows = -(-tile.height // stride) * stride
    cols = -(-tile.width // stride) * stride
    y0, x0 = tile.y0 - half, tile.x0 - half
    y1, x1 = tile.y0 + rows + half, tile.x0 + cols + half
    ny, nx = grid.shape.y, grid.shape.x
    sy0, sx0, sy1, sx1 = max(y0, 0), max(x0, 0), min(y1, ny), min(x1, nx)
    core = np.asarray(data[..., sy0:sy1, sx0:sx1].values, dtype="float32")
    lead = ((0, 0),) * (core.ndim - 2)
    pads = (*lead, (sy0 - y0, y1 - sy1), (sx0 - x0, x1 - sx1))
    mode = "reflect" if min(core.shape[-2:]) > max(max(p) for p in pads[-2:]) else "edge"
    return np.pad(core, pads, mode=mode)  # type: ignore[call-overload]


def tile_input(
    cube: xr.Dataset, card: ModelCard, tile: Tile, steps: slice
) -> tuple[np.ndarray, np.ndarray]:
    """The model input of a tile plus halo from the cube time steps ``steps``.

    Returns:
        ``(window, valid)``: float32 ``(band, H, W)`` for `predict_window` (from
        `eoseg.model_input.input_stack`, as training chips are), and bool
        ``(tile.height, tile.width)``, true where the input has a value.
    """
    grid: GeoBox = cube.odc.geobox
    chip = card.chip_size
    data = cube["data"].isel(time=steps).sel(band=list(card.bands))
    valid = cube["valid"].isel(time=steps)
    images, ok = input_stack(
        read_window(data, grid, tile, chip), read_window(valid, grid, tile, chip), card.time
    )
    half = chip // 2
    return images[0], ok[0, half : half + tile.height, half : half + tile.width]


def predict_tile(
    tile: Tile, *, cube_path: str, model_dir: str, staging: Path, fusion: Fusion = SINGLE
) -> int:
    """Predict one tile (each date, for a per-date model) and write its class and
    confidence; returns its pixel count (over all dates). ``fusion``: the contexts fused
    (`eoseg.contexts`)."""
    model, card = get_model(model_dir)
    cube = open_store(cube_path, chunks=None)
    classes, confidences = [], []
    for steps in time_slices(int(cube.sizes["time"]), card.time):
        if fusion.single:
            window, valid = tile_input(cube, card, tile, steps)
            probs = predict_window(model, card, window)[:, : tile.height, : tile.width]
        else:  # each context on its own lattice, fused (eoseg.contexts)
            probs, valid = context_probabilities(
                model, card, cube, tile, steps, fusion, predict_window
            )
        cls = probs.argmax(axis=0).astype("uint8")
        conf = np.clip(np.rint(probs.max(axis=0) * 255), 0, 255).astype("uint8")
        cls[~valid] = IGNORE_ID
        conf[~valid] = 0
        classes.append(cls)
        confidences.append(conf)
    # A median model makes one (y, x) map; a per-date model one per date, (time, y, x).
    squeeze = card.time == "median"
    write_tile(
        staging,
        tile,
        {
            "class": classes[0] if squeeze else np.stack(classes),
            "confidence": confidences[0] if squeeze else np.stack(confidences),
        },
        {"model": card.version, "cube": cube.attrs.get("eoseg_signature")},
    )
    return tile.height * tile.width * len(classes)


@dataclass(frozen=True, slots=True)
class PredictJob:
    """A predict run whose inputs are checked, ready to start (see `prepare_predict`)."""

    cube_path: Path
    model_dir: Path
    out: Path
    overwrite: bool
    card: ModelCard
    tiles: tuple[Tile, ...]
    template: xr.Dataset
    attrs: dict[str, Any]
    signature: str
    megapixels: float
    dates: tuple[str, ...]
    started: float
    fusion: Fusion = SINGLE


def prepare_predict(
    cube_path: Path,
    model_dir: Path,
    out: Path,
    *,
    overwrite: bool = False,
    run_id: str = "",
    contexts: tuple[int, ...] | None = None,
) -> PredictJob:
    """Check everything a predict run needs, before any cluster starts or file is written.

    The model is loaded here, on the CPU, and verified against its card
    (`eoseg.models.load_model`): a damaged model fails with a message, not on a worker.
    ``contexts`` (default: the card's choice) are the contexts fused
    (`eoseg.contexts.resolve_fusion`).

    Raises:
        OutputExistsError: ``out`` exists and ``overwrite`` is false.
        BandMismatchError: The cube lacks bands the model needs.
        InputNotFoundError: Cube or model missing.
        InvalidStoreError: Cube or model damaged.
    """
    start = time.perf_counter()
    inputs = {"--cube": cube_path, "--model": model_dir}
    check_output(out, "classmap", overwrite=overwrite, inputs=inputs)
    cube = open_cube(cube_path)
    # On the CPU: the client never touches CUDA (dask-cuda pins workers to their GPUs).
    card = load_model(model_dir, device="cpu")[1]
    check_bands(card, tuple(str(b) for b in cube["band"].values))
    fusion = resolve_fusion(card, contexts)
    grid: GeoBox = cube.odc.geobox
    tile_size = int(cube.attrs["tile_size"])
    signature = hashlib.sha256(
        json.dumps(
            [cube.attrs["eoseg_signature"], card.version, tile_size, fusion.to_dict()]
        ).encode()
    ).hexdigest()[:16]
    dims, dates = class_map_dims(card, cube)
    attrs = {
        "run_id": run_id,
        "tile_size": tile_size,
        "classes": card.classes.to_dict(),
        "model": card.name,
        "model_version": card.version,
        "cube": str(cube_path),
        "cube_signature": cube.attrs["eoseg_signature"],
        "input_time": card.time,
        "contexts": fusion.to_dict(),
    }
    return PredictJob(
        cube_path=Path(cube_path),
        model_dir=Path(model_dir).resolve(),
        out=Path(out),
        overwrite=overwrite,
        card=card,
        tiles=tuple(iter_tiles(grid, tile_size)),
        template=_template(cube, dims, tile_size),
        attrs=attrs,
        signature=signature,
        megapixels=grid.shape.y * grid.shape.x * max(len(dates), 1) / 1e6,
        dates=dates,
        started=start,
        fusion=fusion,
    )


def _template(cube: xr.Dataset, dims: tuple[str, ...], tile_size: int) -> xr.Dataset:
    """The lazy class map (one chunk per tile, and date) whose metadata is written first."""
    grid: GeoBox = cube.odc.geobox
    shape: tuple[int, ...] = grid.shape.yx
    chunks: tuple[int, ...] = (tile_size, tile_size)
    if "time" in dims:  # one map per date, each date its own chunks
        shape, chunks = (int(cube.sizes["time"]), *shape), (1, *chunks)
    zeros = da.zeros(shape, chunks=chunks, dtype="uint8")
    template = xr.Dataset(
        {"class": (dims, zeros), "confidence": (dims, zeros)}, coords=grid_coords(grid)
    )
    if "time" in dims:
        template = template.assign_coords(time=cube["time"].values)
    # Zarr's fill value is each variable's nodata value (what a pixel without input gets),
    # so a chunk that is not there can never read as a class.
    for name, long_name, nodata in (
        ("class", "class id, 255 = nodata", IGNORE_ID),
        ("confidence", "top-class probability x 255", 0),
    ):
        template[name].attrs.update(long_name=long_name, grid_mapping="spatial_ref")
        template[name].encoding["fill_value"] = nodata
    return template


def run_predict(
    job: PredictJob, *, client: Client | None = None, progress: ProgressFn | None = None
) -> PredictResult:
    """Predict the tiles of a prepared run (those not written yet) and publish the map.

    An error or Ctrl-C keeps the tiles written in the staging store, which the same run
    resumes (`eoseg.store.resumable`).
    """
    with output_lock(job.out, run_id=str(job.attrs.get("run_id", ""))):
        staging = create_store(
            job.out, job.template, product="classmap", signature=job.signature, attrs=job.attrs
        )
        todo = [t for t in job.tiles if t.name not in done_tiles(staging)]
        model_key = str(job.model_dir)
        with resumable(staging, len(job.tiles)):
            if client is not None:
                client.register_plugin(ModelPlugin(model_key))
            run_tiles(
                client,
                predict_tile,
                todo,
                progress=progress,
                cube_path=str(job.cube_path),
                model_dir=model_key,
                staging=staging,
                fusion=job.fusion,
            )
        publish(job.out, overwrite=job.overwrite)
    return PredictResult(
        path=job.out,
        model=f"{job.card.name}@{job.card.version}",
        tiles=len(job.tiles),
        megapixels=job.megapixels,
        seconds=time.perf_counter() - job.started,
        dates=job.dates,
    )


def predict(
    cube_path: Path,
    model_dir: Path,
    out: Path,
    *,
    client: Client | None = None,
    overwrite: bool = False,
    run_id: str = "",
    progress: ProgressFn | None = None,
    contexts: tuple[int, ...] | None = None,
) -> PredictResult:
    """Predict a class map for a whole cube and publish it: `prepare_predict` (which says
    what bad input raises), then `run_predict`."""
    job = prepare_predict(
        cube_path, model_dir, out, overwrite=overwrite, run_id=run_id, contexts=contexts
    )
    return run_predict(job, client=client, progress=progress)


def class_map_dims(card: ModelCard, cube: xr.Dataset) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Dimensions of the class map a model makes of a cube, and its dates.

    A median model makes one ``(y, x)`` map (no dates); a per-date model a
    ``(time, y, x)`` map on the cube's dates (ISO days).
    """
    if card.time == "median":
        return ("y", "x"), ()
    return ("time", "y", "x"), date_labels(cube)


def open_classmap(path: Path | str) -> xr.Dataset:
    """Open a class map lazily (``class``, ``confidence``): ``(y, x)``, or
    ``(time, y, x)`` for a per-date model (choose a date with `eoseg.dates.select_date`)."""
    return open_product(path, "classmap")
