"""The class map product: its layout on the grid, and how probabilities become its pixels.

A class map holds ``class`` (uint8 class id, 255 = nodata) and ``confidence`` (the top
class's probability x 255), and with ``--probabilities`` ``probabilities`` (each class's
probability x 255 along a ``class_id`` axis). A median model makes ``(y, x)`` maps; a
per-date model ``(time, y, x)`` maps on the cube's dates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from odc.geo.geobox import GeoBox

from eoseg.classes import IGNORE_ID, ClassSchema
from eoseg.dates import date_labels
from eoseg.grid import grid_coords
from eoseg.model_input import TimeMode
from eoseg.store import create_store, open_product

CLASS_AXIS = "class_id"
"""The dimension of ``probabilities`` (one entry per class id)."""
PARTIAL_KEY = "eoseg_partial_tiles"
"""Attribute of a class map holding only some tiles (``eoseg predict``'s ``tiles=``):
their names. Such a map is published only on top of a version that has the others
(`eoseg.version_publish.publish_classmap` with ``partial``)."""


def class_map_dims(time: TimeMode, cube: xr.Dataset) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Dimensions of the class map a model makes of a cube, and its dates.

    A median model makes one ``(y, x)`` map (no dates); a per-date model a
    ``(time, y, x)`` map on the cube's dates (ISO days).
    """
    if time == "median":
        return ("y", "x"), ()
    return ("time", "y", "x"), date_labels(cube)


def encode(probs: np.ndarray, valid: np.ndarray, *, probabilities: bool) -> dict[str, np.ndarray]:
    """The pixels of a class map from float ``(class, y, x)`` probabilities.

    Args:
        probs: Blended class probabilities (they sum to one per pixel).
        valid: bool ``(y, x)``, true where the input had a value; elsewhere class 255 and
            zero confidence and probabilities.
        probabilities: Also return ``probabilities`` (uint8 ``(class, y, x)``).
    """
    cls = probs.argmax(axis=0).astype("uint8")
    conf = _to_uint8(probs.max(axis=0))
    cls[~valid] = IGNORE_ID
    conf[~valid] = 0
    out = {"class": cls, "confidence": conf}
    if probabilities:
        out["probabilities"] = np.where(valid, _to_uint8(probs), np.uint8(0))
    return out


def _to_uint8(p: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(p * 255), 0, 255).astype("uint8")


def classmap_template(
    cube: xr.Dataset,
    dims: tuple[str, ...],
    tile_size: int,
    classes: ClassSchema,
    *,
    probabilities: bool = False,
) -> xr.Dataset:
    """The lazy class map (one chunk per tile, and date) whose metadata is written first."""
    grid: GeoBox = cube.odc.geobox
    shape: tuple[int, ...] = grid.shape.yx
    chunks: tuple[int, ...] = (tile_size, tile_size)
    lead: tuple[int, ...] = ()
    if "time" in dims:  # one map per date, each date its own chunks
        lead = (int(cube.sizes["time"]),)
    zeros = da.zeros((*lead, *shape), chunks=((1,) * len(lead) + chunks), dtype="uint8")
    variables = {"class": (dims, zeros), "confidence": (dims, zeros)}
    if probabilities:
        n = len(classes)
        pdims = (*dims[:-2], CLASS_AXIS, *dims[-2:])
        pchunks = (1,) * len(lead) + (n, *chunks)
        variables["probabilities"] = (pdims, da.zeros((*lead, n, *shape), chunks=pchunks))
    template = xr.Dataset(variables, coords=grid_coords(grid))
    if "time" in dims:
        template = template.assign_coords(time=cube["time"].values)
    if probabilities:
        template = template.assign_coords({CLASS_AXIS: np.arange(len(classes), dtype="uint8")})
        template["probabilities"] = template["probabilities"].astype("uint8")
    # Zarr's fill value is each variable's nodata value (what a pixel without input gets),
    # so a chunk that is not there can never read as a class.
    for name, long_name, nodata in (
        ("class", "class id, 255 = nodata", IGNORE_ID),
        ("confidence", "top-class probability x 255", 0),
        ("probabilities", "probability of each class_id x 255", 0),
    ):
        if name in template:
            template[name].attrs.update(long_name=long_name, grid_mapping="spatial_ref")
            template[name].encoding["fill_value"] = nodata
    return template


def create_classmap(
    out: Path | str,
    grid: GeoBox,
    tile_size: int,
    classes: ClassSchema,
    *,
    signature: str,
    attrs: dict[str, Any],
    extra: dict[str, str] | None = None,
) -> Path | str:
    """Create (or reopen to resume) the staging store of a ``(y, x)`` class map on ``grid``
    for products made without a cube (a mosaic, a generated map); see
    `eoseg.store.create_store`.

    Args:
        out: The class map's final path.
        grid: Its grid.
        tile_size: Its tiles (one chunk each).
        classes: Its classes.
        signature: Digest of what determines its pixels (resuming needs the same one).
        attrs: Attributes recorded on the store (``classes`` and ``tile_size`` are added).
        extra: More uint8 ``(y, x)`` variables, by name: their long name (fill 255).

    Returns:
        The staging path, where `eoseg.store.write_tile` writes tiles.
    """
    on_grid = xr.Dataset(coords=grid_coords(grid))
    template = classmap_template(on_grid, ("y", "x"), tile_size, classes)
    for name, long_name in (extra or {}).items():
        template[name] = template["class"].copy()
        template[name].attrs["long_name"] = long_name
        template[name].encoding["fill_value"] = IGNORE_ID
    doc = {"tile_size": tile_size, "classes": classes.to_dict()}
    attrs = {**attrs, **doc}
    return create_store(out, template, product="classmap", signature=signature, attrs=attrs)


def open_classmap(path: Path | str) -> xr.Dataset:
    """Open a class map lazily (``class``, ``confidence``, maybe ``probabilities``):
    ``(y, x)``, or ``(time, y, x)`` for a per-date model (choose a date with
    `eoseg.dates.select_date`)."""
    return open_product(path, "classmap")


def classmap_schema(path: Path | str) -> ClassSchema:
    """The class schema recorded in a class map."""
    return ClassSchema.from_dict(open_classmap(path).attrs["classes"])
