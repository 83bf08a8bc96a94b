"""Predicting one tile: its window read from the cube, chips through the model, blended.

Chips lie on the grid's chip lattice (`eoseg.blend.Lattice`), so a tile's window is the
span of its chips, read from the cube's Zarr store and mirrored beyond the grid's edge
(`read_window`); `predict_window` blends the chips' class probabilities with weights that
add up to one; `predict_tile` is the task a worker runs for each tile of a predict run
(`eoseg.predict`): the model input of each date (`eoseg.model_input`), one context or
several (`eoseg.contexts`), the encoded class map pixels and the tile's record.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from odc.geo.geobox import GeoBox

from eoseg.blend import Lattice, read_mirrored
from eoseg.classmap import encode
from eoseg.contexts import context_probabilities
from eoseg.grid import Tile
from eoseg.inference import PredictSettings, batch_size_for, get_runner, tile_report
from eoseg.input_signature import INPUT_KEY
from eoseg.model_input import input_stack, time_slices
from eoseg.models.accel import Accelerator, resolve_accelerator
from eoseg.models.card import ModelCard, adjust_logits, normalize
from eoseg.store import open_store, tile_record, write_tile


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
