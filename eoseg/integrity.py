"""Damage in a published store is an error, never data.

Two kinds of damage can hide in a Zarr store that is marked complete:

- **a missing chunk**: Zarr reads it as the array's fill value, so a lost class-map chunk
  would read as a class. eoseg writes every chunk of every tile (even one that equals the
  fill value) and records it in the store (``eoseg_all_chunks``), so `check_chunks` can
  compare the chunk keys present with those the array's shape implies. It lists keys
  once per array: on object storage a listing returns 1,000 keys per request, and there
  is one key per tile (tiles are chunks, or shards of smaller chunks) and date, so a
  country mapped at 10 m in 2,048 px tiles (~1,300 tiles) costs two requests per array,
  against one request per chunk for the read itself. The fill value of every uint8
  product is its nodata value besides, so a chunk lost after the check reads as nodata.
- **a corrupted chunk** (garbage bytes): decoding fails deep inside Zarr with an error
  that names neither store nor chunk. Stores opened by `eoseg.store.open_store` read
  through `CheckedCodecPipeline`, which turns that failure into an `InvalidStoreError`
  naming the chunk, wherever the read runs (client thread or Dask worker).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import product
from pathlib import Path
from typing import Any

import xarray as xr
import zarr
from fsspec.core import url_to_fs
from zarr.core.codec_pipeline import BatchedCodecPipeline
from zarr.registry import register_pipeline
from zarr.storage import StorePath

from eoseg.errors import EosegError, InvalidStoreError

log = logging.getLogger(__name__)

ALL_CHUNKS_ATTR = "eoseg_all_chunks"
"""Store attribute: true when every chunk of every data variable was written."""

_MISSING_SHOWN = 5
"""Missing chunk keys named in a message (the count says how many more)."""


def check_chunks(path: Path | str, ds: xr.Dataset, fix: str) -> None:
    """Refuse a store whose data variables lack chunks it was written with.

    Stores written before eoseg recorded `ALL_CHUNKS_ATTR` may legitimately lack chunks
    equal to the fill value; they are not checked.

    Args:
        path: The store (local path or fsspec URL).
        ds: The store opened with xarray (its attributes and data variables).
        fix: What to do about damage, e.g. ``"re-run 'eoseg predict --overwrite'"``.

    Raises:
        InvalidStoreError: A chunk of a data variable is missing.
    """
    if not ds.attrs.get(ALL_CHUNKS_ATTR):
        log.debug("%s predates the chunk record: chunks not checked", path)
        return
    group = zarr.open_group(str(path), mode="r")
    fs, root = url_to_fs(str(path))
    for name in ds.data_vars:
        array = group[str(name)]
        if not isinstance(array, zarr.Array):
            continue
        missing = _missing_keys(fs, f"{root.rstrip('/')}/{name}", array)
        if missing:
            shown = ", ".join(f"{name}/{k}" for k in missing[:_MISSING_SHOWN])
            extra = len(missing) - _MISSING_SHOWN
            more = f" and {extra} more" if extra > 0 else ""
            raise InvalidStoreError(
                f"{path} is marked complete but {len(missing)} chunk(s) of {name!r} are "
                f"missing ({shown}{more}): the store was damaged after it was written (an "
                f"interrupted copy or sync?); copy it again from its source, or {fix}"
            )


def _missing_keys(fs: Any, folder: str, array: zarr.Array) -> list[str]:
    """Chunk keys (``c/0/1``) the array's shape implies but its folder lacks."""
    step = array.shards or array.chunks  # with sharding, a shard is one stored object
    counts = [math.ceil(n / s) for n, s in zip(array.shape, step, strict=True)]
    expected = math.prod(counts)
    present = {p[len(folder) + 1 :] for p in fs.find(f"{folder}/c")}  # one listing
    if array.ndim == 0 or len(present) >= expected:
        return []
    keys = (array.metadata.encode_chunk_key(ix) for ix in product(*map(range, counts)))
    return [k for k in keys if k not in present]


class CheckedCodecPipeline(BatchedCodecPipeline):
    """Zarr's default pipeline, but a chunk that cannot be read or decoded raises an
    `InvalidStoreError` that names it (and the store), not a codec's bare error."""

    async def read(
        self,
        batch_info: Iterable[tuple[Any, ...]],
        out: Any,
        drop_axes: tuple[int, ...] = (),
    ) -> None:
        items = list(batch_info)
        try:
            await super().read(items, out, drop_axes)
        except EosegError:
            raise
        except Exception as exc:
            # Read the batch's chunks one by one to find the damaged one.
            for item in items:
                getter = item[0]
                if not isinstance(getter, StorePath):
                    raise  # an inner chunk of a shard: the shard's read names the shard
                try:
                    await super().read([item], out, drop_axes)
                except Exception as one:
                    raise damaged_chunk_error(getter, one) from one
            # Every chunk read on its own: the failure was passing (a network error).
            log.warning("reading %d chunks failed once (%s); read again", len(items), exc)


def damaged_chunk_error(getter: StorePath, exc: BaseException) -> InvalidStoreError:
    """The error for a chunk that cannot be read or decoded."""
    store = str(getter.store).removeprefix("file://")
    detail = f"{type(exc).__name__}: {exc}"
    return InvalidStoreError(
        f"chunk {getter.path} of store {store} cannot be read or decoded ({detail}): the "
        "store is damaged; copy it again from its source, or re-run the eoseg command "
        "that wrote it (ingest, rasterize or predict) with --overwrite"
    )


register_pipeline(CheckedCodecPipeline)
_CHECKED = f"{CheckedCodecPipeline.__module__}.{CheckedCodecPipeline.__qualname__}"


@contextmanager
def checked_reads() -> Iterator[None]:
    """Arrays opened inside read through `CheckedCodecPipeline` (for their lifetime)."""
    with zarr.config.set({"codec_pipeline.path": _CHECKED}):
        yield
