"""The model input: what a model reads from a cube, defined once for training and prediction.

A cube window holds ``data (time, band, y, x)`` and ``valid (time, y, x)``. The model reads
its bands (in card order) in one of two ways over the dates (``time``):

- ``"median"``: the per-pixel median of the valid observations of all dates, one image;
  a pixel is valid where any date is. The class map is ``(y, x)``.
- ``"per-date"``: each date on its own, masked by its own ``valid``; training chips are
  single dates with the (timeless) labels, and prediction maps every date: the class map
  is ``(time, y, x)`` on the cube's dates.

`input_stack` is the one function that turns a window into input images; chip sampling
(`eoseg.sampling`) and prediction (`eoseg.predict`) both call it. Normalisation (per band,
``(x - mean) / std`` with the card's statistics, nodata set to 0) follows in
`eoseg.models.card.normalize`, also shared. `input_record` is how the card writes it all.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import xarray as xr

from eoseg.classes import IGNORE_ID
from eoseg.errors import InvalidParameterError

TimeMode = Literal["median", "per-date"]
"""How the model reads the dates of a cube (see the module docstring)."""
TIME_MODES: tuple[TimeMode, ...] = ("median", "per-date")
LEGACY_TIME: TimeMode = "median"
"""What cards written before the input was recorded mean: training took the median."""


def cube_time_mode(cube: xr.Dataset) -> TimeMode:
    """The default model input for a cube: per date for a ``--by-date`` cube, else median.

    Cubes written before ``by_date`` was recorded count as by date when they have more
    than one time step (only ``--by-date`` makes those).
    """
    by_date = cube.attrs.get("by_date")
    if by_date is None:
        by_date = int(cube.sizes.get("time", 1)) > 1
    return "per-date" if by_date else "median"


def check_time_mode(time: str) -> TimeMode:
    """``time`` as a `TimeMode`.

    Raises:
        InvalidParameterError: If it is not one of `TIME_MODES`.
    """
    if time not in TIME_MODES:
        raise InvalidParameterError(
            f"time must be one of {TIME_MODES}; got {time!r}: choose 'median' (one "
            "composite of all dates) or 'per-date' (every date on its own), e.g. --time per-date"
        )
    return time


def composite(data: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Per-pixel median over time of the valid observations.

    Args:
        data: ``(time, band, y, x)`` float reflectance, NaN = nodata.
        valid: Optional ``(time, y, x)`` mask, nonzero where an observation is usable.

    Returns:
        ``(band, y, x)`` float32; NaN where a pixel has no valid observation.
    """
    arr = _masked(data, valid)
    if arr.shape[0] == 1:
        return np.ascontiguousarray(arr[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels stay NaN
        return np.nanmedian(arr, axis=0).astype(np.float32)


def input_stack(
    data: np.ndarray, valid: np.ndarray | None, time: TimeMode
) -> tuple[np.ndarray, np.ndarray]:
    """The model's input images of a cube window, and where each is valid.

    Args:
        data: ``(time, band, y, x)`` float physical values of the model's bands, NaN =
            nodata.
        valid: ``(time, y, x)`` mask, nonzero where an observation is usable; ``None``
            trusts every non-NaN value.
        time: ``"median"`` or ``"per-date"``.

    Returns:
        ``(images, ok)``: float32 ``(n, band, y, x)`` images, NaN where nodata, with
        ``n = 1`` for the median and ``n = time`` per date; and bool ``(n, y, x)``, true
        where every band of the image has a value (for the median: where any date is
        valid).
    """
    if time == "median":
        images = composite(data, valid)[None]
    else:
        images = np.ascontiguousarray(_masked(data, valid))
    return images, ~np.isnan(images).any(axis=1)


def time_slices(n_time: int, time: TimeMode) -> list[slice]:
    """The cube time steps that make each model input: one slice per date, or all of them.

    Prediction reads one slice at a time, so memory holds one date's window per date.
    """
    if time == "median":
        return [slice(0, n_time)]
    return [slice(t, t + 1) for t in range(n_time)]


def pick_date(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    ignore: int,
    min_labelled: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray] | None:
    """One date's chip whose labelled, valid share reaches ``min_labelled``.

    Args:
        images: ``(n, band, h, w)`` input images of the chip window (`input_stack`).
        labels: ``(h, w)`` class ids of the window, ``ignore`` = no label.
        ignore: Label id meaning *no label*.
        min_labelled: Least share of the chip that must be labelled and valid.
        rng: Draws among the qualifying dates (not used when at most one qualifies, so
            a single-image input samples exactly as before dates existed).

    Returns:
        ``(x, y)``: float32 ``(band, h, w)`` and uint8 ``(h, w)``, 255 where the label is
        ``ignore`` or the image is nodata; ``None`` if no date qualifies.
    """
    missing = np.isnan(images).any(axis=1) | (labels == ignore)[None]
    share = 1.0 - missing.reshape(len(images), -1).mean(axis=1)
    ok = np.flatnonzero(share >= min_labelled)
    if ok.size == 0:
        return None
    t = int(ok[0] if ok.size == 1 else rng.choice(ok))
    y = labels.astype(np.uint8, copy=True)
    y[missing[t]] = IGNORE_ID
    return np.ascontiguousarray(images[t], dtype=np.float32), y


def input_record(
    bands: Sequence[str], mean: Sequence[float], std: Sequence[float], time: TimeMode
) -> dict[str, Any]:
    """The ``input`` entry of a model card: bands, dates and normalisation."""
    return {
        "time": time,
        "bands": list(bands),
        "normalisation": {
            "method": "per-band standard score (x - mean) / std; nodata becomes 0",
            "mean": list(mean),
            "std": list(std),
        },
    }


def read_input_record(
    card: Mapping[str, Any],
) -> tuple[tuple[str, ...], tuple[float, ...], tuple[float, ...], TimeMode]:
    """``(bands, mean, std, time)`` of a card dict; older cards (top-level ``bands``,
    ``mean``, ``std``, no ``input``) read as the median input they were trained on."""
    record = card.get("input")
    if record is None:
        bands, mean, std, time = card["bands"], card["mean"], card["std"], LEGACY_TIME
    else:
        norm = record["normalisation"]
        bands, mean, std = record["bands"], norm["mean"], norm["std"]
        time = check_time_mode(str(record["time"]))
    return (
        tuple(str(b) for b in bands),
        tuple(float(v) for v in mean),
        tuple(float(v) for v in std),
        time,
    )


def _masked(data: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    arr = np.asarray(data, dtype=np.float32)
    if valid is not None:
        arr = np.where(np.asarray(valid)[:, None] != 0, arr, np.float32(np.nan))
    return arr
