"""Tiled inference with seamless overlap blending, on a Dask cluster.

Chips lie on one chip lattice of the whole grid (`eoseg.blend.Lattice`): ``--chip-size``
px every ``chip - overlap`` px, each weighted by a window that is flat in its middle and
tapers over the ``--overlap`` px it shares with its neighbours, so that the weights add up
to one and every pixel's probabilities are a smooth blend. Because the lattice is the
grid's, a pixel gets the same prediction whichever tile computes it: tiles (and
therefore the mosaic) have no seams. Each tile reads its own window of chips straight from
the cube's Zarr store, mirrored beyond the grid's edge.

The input is the model card's (`eoseg.model_input`): a median model maps the composite of
the cube's dates into a ``(y, x)`` class map; a per-date model maps every date, into a
``(time, y, x)`` class map on the cube's dates, each date masked by its own validity.

The model is loaded once per worker (`eoseg.inference.ModelPlugin`); tasks carry only
the model path and the run's settings (`eoseg.inference.PredictSettings`), which every
tile records with the model, cube and run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Collection
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from distributed import Client
from odc.geo.geobox import GeoBox

from eoseg import __version__
from eoseg.blend import Lattice, read_mirrored
from eoseg.classmap import PARTIAL_KEY, class_map_dims, classmap_template, encode, open_classmap
from eoseg.cluster import ProgressFn, host_tasks, run_tiles
from eoseg.contexts import context_probabilities
from eoseg.cube import open_cube
from eoseg.errors import InvalidParameterError
from eoseg.grid import Tile, iter_tiles
from eoseg.inference import (
    ModelPlugin,
    PredictOptions,
    PredictResult,
    PredictSettings,
    batch_size_for,
    by_worker,
    get_model,
    get_runner,
    resolve_settings,
    tile_report,
)
from eoseg.input_signature import INPUT_KEY
from eoseg.locks import output_lock
from eoseg.model_input import input_stack, time_slices
from eoseg.models.accel import Accelerator, resolve_accelerator
from eoseg.models.card import ModelCard, adjust_logits, check_bands, normalize
from eoseg.models.weights import load_model
from eoseg.outputs import check_output
from eoseg.storage import location
from eoseg.store import (
    create_store,
    done_tiles,
    open_store,
    publish,
    resumable,
    tile_record,
    write_tile,
)

__all__ = [
    "ModelPlugin",
    "PredictOptions",
    "PredictResult",
    "get_model",
    "open_classmap",
    "predict",
    "predict_window",
    "read_window",
]

log = logging.getLogger(__name__)


def predict_window(
    model: torch.nn.Module,
    card: ModelCard,
    window: np.ndarray,
    *,
    lattice: Lattice,
    batch_size: int | None = None,
    accel: Accelerator | None = None,
) -> np.ndarray:
    """Class probabilities of a window by blended chips.

    Args:
        model: The network (eval mode).
        card: Its model card (normalisation, classes).
        window: float32 ``(band, H, W)`` physical values (NaN = nodata) whose chips fit
            exactly: ``H`` and ``W`` are ``stride * k + chip`` (`eoseg.blend.Lattice.span`).
        lattice: Chip size and overlap.
        batch_size: Chips per forward pass (bounds memory); default
            `eoseg.inference.batch_size_for`.
        accel: Device, precision and layout; default: the model's device with the
            automatic precision for prediction.

    Returns:
        float32 ``(class, H - 2 overlap, W - 2 overlap)`` probabilities of the window's
        interior, where the chips' weights add up to one.
    """
    chip, overlap = lattice.chip, lattice.overlap
    if accel is None:
        accel = resolve_accelerator(str(next(model.parameters()).device), inference=True)
    if batch_size is None:
        batch_size = batch_size_for(chip, card, accel)
    # The window goes to the device once and the blend accumulates there: copying every
    # chip's probabilities back to host memory would dominate on a GPU.
    x_t = torch.as_tensor(np.ascontiguousarray(normalize(window, card)), dtype=torch.float32)
    x_t = x_t.to(accel.device)
    _, height, width = x_t.shape
    starts = [(r, c) for r in lattice.starts(height) for c in lattice.starts(width)]
    acc = torch.zeros((len(card.classes), height, width), device=accel.device)
    weight = torch.as_tensor(lattice.weights(), device=accel.device)
    with torch.inference_mode(), accel.autocast():
        for i in range(0, len(starts), batch_size):
            batch = starts[i : i + batch_size]
            chips = torch.stack([x_t[:, r : r + chip, c : c + chip] for r, c in batch])
            logits = adjust_logits(model(accel.to_input(chips)).float(), card)
            probs = torch.softmax(logits, dim=1) * weight
            for (r, c), p in zip(batch, probs, strict=True):
                acc[:, r : r + chip, c : c + chip] += p
    return acc[:, overlap : height - overlap, overlap : width - overlap].cpu().numpy()


def read_window(data: xr.DataArray, grid: GeoBox, tile: Tile, lattice: Lattice) -> np.ndarray:
    """Read the window of a tile's chips from the cube, mirrored beyond the grid's edge.

    The window is `eoseg.blend.Lattice.span` of the tile's rows and columns, so its chips
    lie on the grid's lattice; a pixel beyond the edge takes the value of its mirror image
    inside (`eoseg.blend.mirror_index`), whichever tile reads it. ``data``'s last two axes
    are ``(y, x)``; leading axes (time, band) are read whole.

    The window is read one storage chunk at a time (`eoseg.blend.read_mirrored`).
    """
    rows = lattice.span(tile.y0, tile.y0 + tile.height)
    cols = lattice.span(tile.x0, tile.x0 + tile.width)
    return np.asarray(read_mirrored(data, rows, cols), dtype="float32")


def tile_input(
    cube: xr.Dataset, card: ModelCard, tile: Tile, steps: slice, lattice: Lattice
) -> tuple[np.ndarray, np.ndarray]:
    """The model input of a tile's window from the cube time steps ``steps``.

    Returns:
        ``(window, valid)``: float32 ``(band, H, W)`` for `predict_window` (from
        `eoseg.model_input.input_stack`, as training chips are), and bool
        ``(tile.height, tile.width)``, true where the input has a value.
    """
    grid: GeoBox = cube.odc.geobox
    data = cube["data"].isel(time=steps).sel(band=list(card.bands))
    valid = cube["valid"].isel(time=steps)
    images, ok = input_stack(
        read_window(data, grid, tile, lattice), read_window(valid, grid, tile, lattice), card.time
    )
    dy, dx = _offset(tile, lattice)
    return images[0], ok[0, dy : dy + tile.height, dx : dx + tile.width]


def _offset(tile: Tile, lattice: Lattice) -> tuple[int, int]:
    """Where the tile starts in its window."""
    return (
        tile.y0 - lattice.span(tile.y0, tile.y0 + tile.height)[0],
        tile.x0 - lattice.span(tile.x0, tile.x0 + tile.width)[0],
    )


def tile_probabilities(
    cube: xr.Dataset,
    tile: Tile,
    steps: slice,
    *,
    model: torch.nn.Module,
    card: ModelCard,
    lattice: Lattice,
    accel: Accelerator,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """float32 ``(class, h, w)`` probabilities of a tile from time steps ``steps``, and
    bool ``(h, w)`` where its input has a value."""
    window, valid = tile_input(cube, card, tile, steps, lattice)
    probs = predict_window(model, card, window, lattice=lattice, batch_size=batch_size, accel=accel)
    dy, dx = (d - lattice.overlap for d in _offset(tile, lattice))
    return probs[:, dy : dy + tile.height, dx : dx + tile.width], valid


def predict_tile(
    tile: Tile,
    *,
    cube_path: str,
    model_dir: str,
    staging: Path | str,
    settings: PredictSettings,
    provenance: dict[str, Any],
    tasks: int = 1,
) -> dict[str, Any]:
    """Predict one tile (each date, for a per-date model), write its class map pixels and
    provenance; returns `eoseg.inference.tile_report` (``tasks``: tiles running at once
    on this machine, which share its memory)."""
    model, card, accel = get_runner(model_dir, settings.precision)
    lattice = settings.lattice
    batch_size = batch_size_for(lattice.chip, card, accel, tasks)
    cube = open_store(cube_path, chunks=None)
    encoded = []
    for steps in time_slices(int(cube.sizes["time"]), card.time):
        if settings.fusion.single:
            probs, valid = tile_probabilities(
                cube, tile, steps, model=model, card=card, lattice=lattice, accel=accel,
                batch_size=batch_size,
            )  # fmt: skip
        else:  # each context on its own lattice, fused (eoseg.contexts)
            window_fn = partial(predict_window, batch_size=batch_size, accel=accel)
            probs, valid = context_probabilities(
                model, card, cube, tile, steps, settings.fusion, window_fn
            )
        encoded.append(encode(probs, valid, probabilities=settings.probabilities))
    # A median model makes one (y, x) map; a per-date model one per date, (time, y, x).
    arrays = {
        name: encoded[0][name] if card.time == "median" else np.stack([e[name] for e in encoded])
        for name in encoded[0]
    }
    record = {
        **provenance,
        INPUT_KEY: _input_signature(cube_path, tile),
        "device": accel.describe(),
        "batch_size": batch_size,
    }
    write_tile(staging, tile, arrays, record)
    return tile_report(tile.height * tile.width * len(encoded), accel, batch_size)


def _input_signature(cube_path: str, tile: Tile) -> str:
    """The cube tile's input signature (`eoseg.input_signature`); empty for a cube
    written before tiles recorded one (a regeneration then recomputes the tile)."""
    record = tile_record(cube_path, tile.name) or {}
    return str(record.get(INPUT_KEY, ""))


@dataclass(frozen=True, slots=True)
class PredictJob:
    """A predict run whose inputs are checked, ready to start (see `prepare_predict`)."""

    cube_path: Path | str
    model_dir: Path
    out: Path | str
    overwrite: bool
    card: ModelCard
    settings: PredictSettings
    tiles: tuple[Tile, ...]
    template: xr.Dataset
    attrs: dict[str, Any]
    signature: str
    megapixels: float
    dates: tuple[str, ...]
    started: float


def prepare_predict(
    cube_path: Path | str,
    model_dir: Path,
    out: Path | str,
    *,
    overwrite: bool = False,
    run_id: str = "",
    options: PredictOptions | None = None,
    tiles: Collection[str] | None = None,
) -> PredictJob:
    """Check everything a predict run needs, before any cluster starts or file is written.

    The model is loaded here, on the CPU, and verified against its card
    (`eoseg.models.load_model`): a damaged model fails with a message, not on a worker.

    ``tiles`` (tile names, e.g. ``"r0000_c0003"``) predicts only those: the published
    store is then a partial class map (attribute `PARTIAL_KEY` lists its tiles, the others
    are missing), which only `eoseg.version_publish.publish_classmap` with ``partial``
    reads, as `eoseg.regenerate` does.

    Raises:
        InvalidParameterError: Options the model cannot run (`resolve_settings`).
        OutputExistsError: ``out`` exists and ``overwrite`` is false.
        BandMismatchError: The cube lacks bands the model needs.
        InputNotFoundError: Cube or model missing.
        InvalidStoreError: Cube or model damaged.
        InvalidParameterError: ``tiles`` names tiles the grid does not have.
    """
    start = time.perf_counter()
    inputs = {"--cube": cube_path, "--model": model_dir}
    check_output(out, "classmap", overwrite=overwrite, inputs=inputs)
    cube = open_cube(cube_path)
    # On the CPU: the client never touches CUDA (dask-cuda pins workers to their GPUs).
    card = load_model(model_dir, device="cpu")[1]
    check_bands(card, tuple(str(b) for b in cube["band"].values))
    grid: GeoBox = cube.odc.geobox
    settings = resolve_settings(card, grid.shape.yx, options or PredictOptions())
    tile_size = int(cube.attrs["tile_size"])
    grid_tiles = tuple(iter_tiles(grid, tile_size))
    subset = _subset(grid_tiles, tiles)
    # Everything the pixels depend on: a staging store of other settings is not resumed.
    signature = hashlib.sha256(
        json.dumps(
            [cube.attrs["eoseg_signature"], card.version, tile_size, settings.to_dict()]
            + ([sorted(t.name for t in subset)] if tiles is not None else [])
        ).encode()
    ).hexdigest()[:16]
    dims, dates = class_map_dims(card.time, cube)
    attrs = {
        "run_id": run_id,
        "tile_size": tile_size,
        "classes": card.classes.to_dict(),
        "model": card.name,
        "model_version": card.version,
        "cube": str(cube_path),
        "cube_signature": cube.attrs["eoseg_signature"],
        "input_time": card.time,
        "predict_settings": settings.to_dict(),
    }
    if tiles is not None:
        attrs[PARTIAL_KEY] = sorted(t.name for t in subset)
    template = classmap_template(
        cube, dims, tile_size, card.classes, probabilities=settings.probabilities
    )
    return PredictJob(
        cube_path=location(cube_path),
        model_dir=Path(model_dir).resolve(),
        out=location(out),
        overwrite=overwrite,
        card=card,
        settings=settings,
        tiles=subset,
        template=template,
        attrs=attrs,
        signature=signature,
        megapixels=grid.shape.y * grid.shape.x * max(len(dates), 1) / 1e6,
        dates=dates,
        started=start,
    )


def _subset(grid_tiles: tuple[Tile, ...], names: Collection[str] | None) -> tuple[Tile, ...]:
    """The tiles named (all when ``names`` is None), in grid order.

    Raises:
        InvalidParameterError: A name that is no tile of the grid.
    """
    if names is None:
        return grid_tiles
    unknown = sorted(set(names) - {t.name for t in grid_tiles})
    if unknown:
        raise InvalidParameterError(
            f"tiles {unknown[:3]} are not tiles of the cube's grid (it has "
            f"{grid_tiles[0].name}..{grid_tiles[-1].name}): give names of its tiles"
        )
    return tuple(t for t in grid_tiles if t.name in set(names))


def run_predict(
    job: PredictJob, *, client: Client | None = None, progress: ProgressFn | None = None
) -> PredictResult:
    """Predict the tiles of a prepared run (those not written yet) and publish the map.

    An error or Ctrl-C keeps the tiles written in the staging store, which the same run
    resumes (`eoseg.store.resumable`).
    """
    run_id = str(job.attrs.get("run_id", ""))
    with output_lock(job.out, run_id=run_id):
        staging = create_store(
            job.out, job.template, product="classmap", signature=job.signature, attrs=job.attrs
        )
        todo = [t for t in job.tiles if t.name not in done_tiles(staging)]
        model_key = str(job.model_dir)
        tasks = 1
        with resumable(staging, len(job.tiles)):
            if client is not None:
                hosts = host_tasks(client)
                tasks = max(hosts.values(), default=1)
                client.register_plugin(ModelPlugin(model_key, job.settings.precision, hosts))
            reports = run_tiles(
                client,
                predict_tile,
                todo,
                progress=progress,
                cube_path=str(job.cube_path),
                model_dir=model_key,
                staging=staging,
                settings=job.settings,
                provenance=_provenance(job),
                tasks=tasks,
            )
        publish(job.out, overwrite=job.overwrite)
    return PredictResult(
        path=job.out,
        model=f"{job.card.name}@{job.card.version}",
        tiles=len(job.tiles),
        megapixels=job.megapixels,
        seconds=time.perf_counter() - job.started,
        dates=job.dates,
        tiles_written=len(reports),
        computed_megapixels=sum(r["pixels"] for r in reports) / 1e6,
        settings=job.settings.to_dict(),
        workers=by_worker(reports),
    )


def _provenance(job: PredictJob) -> dict[str, Any]:
    """What every tile records besides its place (`eoseg.store.write_tile`)."""
    return {
        "model": job.card.version,
        "cube": job.attrs["cube_signature"],
        "run_id": job.attrs.get("run_id", ""),
        "eoseg_version": __version__,
        "settings": job.settings.to_dict(),
    }


def predict(
    cube_path: Path | str,
    model_dir: Path,
    out: Path | str,
    *,
    client: Client | None = None,
    overwrite: bool = False,
    run_id: str = "",
    progress: ProgressFn | None = None,
    options: PredictOptions | None = None,
    tiles: Collection[str] | None = None,
) -> PredictResult:
    """Predict a class map for a whole cube (or its ``tiles``) and publish it:
    `prepare_predict` (which says what bad input raises and what ``tiles`` makes), then
    `run_predict`."""
    job = prepare_predict(
        cube_path, model_dir, out, overwrite=overwrite, run_id=run_id, options=options,
        tiles=tiles,
    )  # fmt: skip
    return run_predict(job, client=client, progress=progress)
