"""Zarr stores written tile by tile and published atomically.

Every raster product (cube, labels, class map) is written the same way:

1. `create_store` writes the metadata of the whole product from a lazy template into a
   *staging* directory beside the final path (``<out>.partial``);
2. workers call `write_tile`, each writing whole chunks of its own tile (aligned writes
   never race) and then a small provenance file that also marks the tile done;
3. `publish` marks the store complete and renames it into place.

A crash leaves only the staging directory, which a re-run with the same signature resumes
(tiles already marked done are skipped). Nothing half-written ever sits at the final path,
and a good product is only replaced when the caller asks for it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import xarray as xr
import zarr

from eoseg import __version__
from eoseg.errors import (
    EosegError,
    InputNotFoundError,
    InvalidStoreError,
    OutputExistsError,
)
from eoseg.grid import Tile
from eoseg.integrity import ALL_CHUNKS_ATTR, check_chunks, checked_reads
from eoseg.outputs import PRODUCT_KEY, check_existing, check_replaceable, identify, staging_path
from eoseg.storage import is_url, publish_prefix, resolve

log = logging.getLogger(__name__)

Where = TypeVar("Where", bound="str | Path")
"""A store's location: a local path or an fsspec URL (`eoseg.storage`)."""

_TILES_DIR = "_eoseg_tiles"
"""Group inside a store holding one provenance JSON per written tile."""


def create_store(
    path: Where, template: xr.Dataset, *, product: str, signature: str, attrs: Mapping[str, Any]
) -> Where:
    """Create (or reopen for resuming) the staging store of a product.

    Args:
        path: Final product path; the store is created at `staging_path(path)`.
        template: Lazy (dask-backed) dataset with the product's variables, coordinates,
            chunks (one chunk per tile) and encodings. Only metadata is written.
        product: ``"cube"``, ``"labels"`` or ``"classmap"``.
        signature: Digest of everything that determines the product's pixels; a staging
            store with the same signature is resumed, any other is discarded.
        attrs: Extra attributes recorded on the store (run id, sources, ...).

    Returns:
        The staging path.

    Raises:
        OutputExistsError: The staging path holds something eoseg did not put there (it
            is never deleted).
    """
    staging = staging_path(path)
    if resolve(staging).exists():
        found = identify(staging)
        if found.kind != product and not found.empty:
            raise OutputExistsError(
                f"{staging} holds {found.what}, but eoseg writes the {product} of {path} "
                "there until it is complete: move it away, or choose another output path"
            )
        old = None
        if not found.empty:
            try:
                old = zarr.open_group(str(staging), mode="r").attrs.get("eoseg_signature")
            except Exception:  # our own leftover, unreadable: discarded below
                old = None
        if old == signature:
            log.info("resuming %s: %d tiles already written", staging, len(done_tiles(staging)))
            return staging
        resolve(staging).remove()
    ds = template.copy()
    ds.attrs = {
        **dict(attrs),
        PRODUCT_KEY: product,
        "eoseg_version": __version__,
        "eoseg_signature": signature,
        "eoseg_complete": False,
        # Every chunk is written (see write_tile), so a missing one is damage, not fill.
        ALL_CHUNKS_ATTR: True,
    }
    ds.to_zarr(str(staging), mode="w", compute=False, zarr_format=3, consolidated=False)
    # A Zarr group (not a bare folder) so Zarr readers do not warn about a foreign object.
    zarr.open_group(str(staging), mode="r+").create_group(_TILES_DIR)
    return staging


def write_tile(
    staging: Path | str, tile: Tile, arrays: Mapping[str, np.ndarray], provenance: Mapping[str, Any]
) -> None:
    """Write one tile's arrays (already encoded) and its provenance record.

    Each array's last two axes are the tile's ``(y, x)``; leading axes are written whole.
    Every chunk is stored, even one equal to the fill value, so that a reader can tell a
    lost chunk from an empty one (`eoseg.integrity.check_chunks`). Idempotent: writing the
    same tile twice gives the same store.
    """
    group = zarr.open_group(str(staging), mode="r+")
    for name, values in arrays.items():
        target = group[name]
        if not isinstance(target, zarr.Array):
            raise InvalidStoreError(f"{staging} holds a group {name!r} where an array belongs")
        target = target.with_config({"write_empty_chunks": True})
        index = (slice(None),) * (values.ndim - 2) + (tile.ys, tile.xs)
        target[index] = values
    record = {"tile": tile.name, "y0": tile.y0, "x0": tile.x0, **provenance}
    # Written whole (a rename locally, one PUT on object storage): a marker is never half.
    resolve(staging).child(_TILES_DIR, f"{tile.name}.json").write_text(
        json.dumps(record, default=str)
    )


def done_tiles(store: Path | str) -> set[str]:
    """Names of the tiles whose writes finished (one listing on object storage)."""
    names = resolve(store).child(_TILES_DIR).names("r*_c*.json")
    return {n.removesuffix(".json") for n in names}


def tile_provenance(store: Path | str) -> list[dict[str, Any]]:
    """The provenance records of every written tile, sorted by tile name."""
    folder = resolve(store).child(_TILES_DIR)
    return [json.loads(folder.child(n).read_text()) for n in folder.names("r*_c*.json")]


def tile_record(store: Path | str, name: str) -> dict[str, Any] | None:
    """The provenance record of one tile (None when the tile was not written)."""
    path = resolve(store).child(_TILES_DIR, f"{name}.json")
    return json.loads(path.read_text()) if path.exists() else None


@contextmanager
def resumable(staging: Path | str, total: int) -> Iterator[None]:
    """Around the tile writes of a run: what an error or Ctrl-C leaves is a resumable
    staging store, and the message says so.

    On bad input (`EosegError`, e.g. a damaged chunk read by a worker) the staging store
    is kept only when it holds written tiles, and the message says where; on Ctrl-C a
    `RunInterrupted` says how many tiles are kept and how to resume.
    """
    try:
        yield
    except EosegError as exc:
        kept = len(done_tiles(staging))
        if not kept:
            resolve(staging).remove()  # nothing worth resuming
            raise
        raise type(exc)(
            f"{exc} ({kept} of {total} tiles written are kept in {staging}; once that is "
            "fixed, the same command resumes from them)"
        ) from exc
    except KeyboardInterrupt as exc:
        raise RunInterrupted(staging, total) from exc


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a tiled run; its message says what was kept and how to resume.

    A `KeyboardInterrupt`, not an `EosegError`: code that catches ``Exception`` still lets
    it through. The message counts the tiles when it is shown, after the cluster has
    stopped (tiles in flight may still land). The CLI prints it and exits with 130.
    """

    def __init__(self, staging: Path | str, total: int) -> None:
        super().__init__(staging, total)
        self.staging = staging
        self.total = total

    def __str__(self) -> str:
        kept = len(done_tiles(self.staging))
        return (
            f"interrupted: {kept} of {self.total} tiles are written and kept in "
            f"{self.staging}; run the same command again to resume from them"
        )


def publish(path: Where, *, overwrite: bool) -> Where:
    """Mark the staging store complete and move it to ``path``.

    An existing product at ``path`` is replaced only with ``overwrite``; locally it is
    moved aside first and deleted only after the new one is in place. On object storage
    the staging prefix is copied server-side, its root ``zarr.json`` last
    (`eoseg.storage.publish_prefix`).
    """
    staging = staging_path(path)
    group = zarr.open_group(str(staging), mode="r+")
    check_existing(path, group.attrs[PRODUCT_KEY], overwrite=overwrite)  # type: ignore[arg-type]
    group.attrs["eoseg_complete"] = True
    consolidate(staging)
    if is_url(path):
        publish_prefix(resolve(staging), resolve(path))
    else:
        swap_into_place(Path(staging), Path(path))
    log.info("published %s", path)
    return path


def consolidate(store: Path | str) -> None:
    """Write consolidated metadata, so that opening the store reads one key, not one per array.

    On object storage, listing every key of a large store costs seconds; readers that find
    consolidated metadata (xarray does by default) skip it. Call it last: the consolidated
    copy is not updated by later metadata writes.
    """
    with warnings.catch_warnings():
        # Zarr 3 warns that consolidated metadata is not yet in the v3 specification; xarray,
        # zarr-python and GDAL read it, and readers without it fall back to listing.
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        # Tile provenance records are plain JSON files inside the store, not Zarr nodes.
        warnings.filterwarnings(
            "ignore", message="Object at .* is not recognized", category=UserWarning
        )
        zarr.consolidate_metadata(str(store))


def open_store(path: Path | str, **kwargs: Any) -> xr.Dataset:
    """Open an eoseg store with xarray: consolidated metadata when present, CRS decoded.

    A chunk that cannot be decoded raises `InvalidStoreError` naming it when read.
    """
    with warnings.catch_warnings(), checked_reads():
        # Stores written before eoseg consolidated their metadata are listed instead.
        warnings.filterwarnings(
            "ignore", message=".*consolidated metadata", category=RuntimeWarning
        )
        return xr.open_zarr(str(resolve(path)), decode_coords="all", zarr_format=3, **kwargs)


def swap_into_place(src: Path, out: Path) -> None:
    """Move the finished folder ``src`` to ``out``, replacing what was there.

    The old ``out`` is moved aside first and deleted only once the new one is in place, so
    a crash leaves either the old or the new product at ``out``, never a half one. Only
    nothing, an empty folder or a product of the same kind is replaced.

    Raises:
        OutputExistsError: ``out`` holds something else (see `eoseg.outputs`).
    """
    check_replaceable(out, src)
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(out, old)
    os.replace(src, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()


@contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """Yield an empty folder beside ``out``; on success it replaces ``out`` atomically.

    On error the staged folder is removed and ``out`` is left as it was.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
        swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def open_product(path: Path | str, product: str, *, check: bool = True) -> xr.Dataset:
    """Open a published product lazily, checking that it is what it claims to be.

    Args:
        path: The store.
        product: ``"cube"``, ``"labels"`` or ``"classmap"``.
        check: Also check that no chunk is missing (`eoseg.integrity.check_chunks`); a
            caller that reads only the grid skips it.

    Raises:
        InputNotFoundError: Nothing at ``path``.
        InvalidStoreError: Not an eoseg store of that product, not complete, or damaged.
    """
    path = resolve(path).url
    if not resolve(path).exists():
        hint = (
            " (an unfinished run left it at .partial; re-run to finish)"
            if resolve(staging_path(path)).exists()
            else ""
        )
        raise InputNotFoundError(f"no {product} store at {path}{hint}: check the path")
    try:
        ds = open_store(path)
    except Exception as exc:
        raise InvalidStoreError(
            f"{path} is not a readable Zarr v3 store ({exc}): expected a {product} written "
            f"by eoseg; create it with 'eoseg {_COMMAND[product]}'"
        ) from exc
    found = ds.attrs.get(PRODUCT_KEY)
    if found != product:
        raise InvalidStoreError(
            f"{path} is a {found or 'non-eoseg'} store, expected a {product}: "
            f"create one with 'eoseg {_COMMAND[product]}'"
        )
    if not ds.attrs.get("eoseg_complete", False):
        raise InvalidStoreError(f"{path} is incomplete: re-run 'eoseg {_COMMAND[product]}'")
    if check:
        check_chunks(path, ds, fix=f"re-run 'eoseg {_COMMAND[product]} --overwrite'")
    return ds


_COMMAND = {"cube": "ingest", "labels": "rasterize", "classmap": "predict"}


def open_grid_store(path: Path | str) -> xr.Dataset:
    """Open any eoseg store (cube, labels or class map) to read its grid and tiling.

    Raises:
        InputNotFoundError: Nothing at ``path``.
        InvalidStoreError: Not an eoseg store.
    """
    loc = resolve(path)
    if not loc.child("zarr.json").exists():
        if not loc.exists():
            raise InputNotFoundError(f"no store at {path}: check the path")
        raise InvalidStoreError(f"{path} is not a Zarr v3 store written by eoseg")
    product = zarr.open_group(str(loc), mode="r").attrs.get(PRODUCT_KEY)
    if product not in _COMMAND:
        raise InvalidStoreError(f"{path} is not an eoseg store (cube, labels or classmap)")
    return open_product(path, str(product), check=False)  # only the grid is read
