"""Per-band normalisation statistics of the model input, measured over the cube.

The card's mean and standard deviation standardise every pixel the model will map, so
they are measured on the cube's model input (`eoseg.model_input`) over the whole scene,
not only on the training chips: chips centred on a few small polygons show a few
fields and forests, and statistics of those alone put the rest of the scene (towns,
water, bare soil) far out in the tails of the standardised input. A small cube is read
whole; a large one through `WINDOWS` windows at seeded random places, so the cost does
not grow with the area.
"""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr

from eoseg.model_input import TimeMode
from eoseg.sampling import read_window

WINDOWS = 16
"""Windows read from a large cube."""
WINDOW = 128
"""Side of those windows in pixels."""


def cube_band_stats(
    cube: xr.Dataset, bands: tuple[str, ...], time: TimeMode, seed: int = 0
) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """Mean and standard deviation per band of the model input over the cube.

    Args:
        cube: Dataset with ``data (time, band, y, x)`` and ``valid``; may be lazy.
        bands: The model's bands, in order (all in the cube).
        time: The model input over the dates.
        seed: Places of the windows of a large cube.

    Returns:
        ``(mean, std)`` per band, or None when a band has no valid pixel in what was
        read (the caller then keeps the statistics of the training chips).
    """
    have = [str(b) for b in cube["data"]["band"].values]
    index = np.array([have.index(b) for b in bands])
    h, w = int(cube.sizes["y"]), int(cube.sizes["x"])
    if h * w <= WINDOWS * WINDOW * WINDOW:
        windows = [(slice(0, h), slice(0, w))]
    else:
        rng = np.random.default_rng(seed)
        sh, sw = min(WINDOW, h), min(WINDOW, w)
        windows = []
        for _ in range(WINDOWS):
            r, c = int(rng.integers(0, h - sh + 1)), int(rng.integers(0, w - sw + 1))
            windows.append((slice(r, r + sh), slice(c, c + sw)))
    parts = [
        np.moveaxis(read_window(cube, index, rows, cols, time), 1, 0).reshape(len(bands), -1)
        for rows, cols in windows
    ]
    flat = np.concatenate(parts, axis=1)
    if not np.isfinite(flat).any(axis=1).all():
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(flat, axis=1)
        std = np.maximum(np.nanstd(flat, axis=1), 1e-6)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)
