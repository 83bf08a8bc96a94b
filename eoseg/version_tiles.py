"""The tile copy behind a new version: which tiles changed, and writing them.

A tile of the source (a class map store or an earlier version) is compared with the
latest version's record of it (`copy_tile`): equal provenance means unchanged (unless
pixels are compared), equal pixel digests mean a new record only, anything else means
its chunks are written. The copy runs on threads in this process, or with a Dask client
on the cluster: icechunk's distributed writes give every batch of tiles its own copy of
a forked session, and the coordinator merges what the batches return before the commit.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import icechunk
import numpy as np
import zarr
from distributed import Client

from eoseg.cluster import run_tiles
from eoseg.errors import InvalidStoreError
from eoseg.grid import Tile

Compare = Literal["provenance", "pixels"]
ProgressFn = Callable[[int, int], None]
Outcome = Literal["tiles_written", "tiles_unchanged", "tiles_recorded"]

DIGEST_KEY = "digest"
"""Key of a tile record holding the SHA-256 of the tile's pixels (all variables)."""
_THREADS = 8
"""Tiles copied at once in this process: on object storage each chunk is a request."""
BATCH = 16
"""Tiles per cluster task (each task carries, and returns, one forked session)."""


@dataclass(frozen=True, slots=True)
class CopyJob:
    """What every tile copy shares (small, sent to workers).

    Attributes:
        source: The source store: a class map path, or a read-only session of a version.
        names: The data variables to copy.
        compare: How unchanged tiles are found (see `copy_tile`).
    """

    source: str | icechunk.Session
    names: tuple[str, ...]
    compare: Compare

    def source_group(self) -> zarr.Group:
        store = self.source if isinstance(self.source, str) else self.source.store
        return zarr.open_group(store, mode="r")


def copy_tile(
    tile: Tile,
    job: CopyJob,
    source: zarr.Group,
    target: zarr.Group,
    new: dict[str, Any],
    old: dict[str, Any] | None,
) -> tuple[Outcome, dict[str, Any]]:
    """Write one tile into ``target`` if it changed; what happened and its new record.

    Args:
        new: The source's record of the tile (with a digest when the source is a version).
        old: The latest version's record (None: the tile is new to the product).
    """
    if old is not None and job.compare == "provenance" and same_record(old, new):
        return "tiles_unchanged", old
    new = dict(new)
    arrays = None
    if DIGEST_KEY not in new:
        arrays = read_tile(source, job.names, tile)
        new[DIGEST_KEY] = digest(arrays)
    if old is not None and old.get(DIGEST_KEY) == new[DIGEST_KEY]:
        return ("tiles_unchanged" if same_record(old, new) else "tiles_recorded"), new
    write_tile(target, arrays if arrays is not None else read_tile(source, job.names, tile), tile)
    return "tiles_written", new


def copy_tiles(
    client: Client | None,
    session: icechunk.Session,
    writer: icechunk.Session | icechunk.session.ForkSession,
    tiles: tuple[Tile, ...],
    job: CopyJob,
    pairs: dict[str, tuple[dict[str, Any], dict[str, Any] | None]],
    progress: ProgressFn | None = None,
) -> list[tuple[Outcome, dict[str, Any]]]:
    """`copy_tile` for every tile (``pairs``: tile name -> (new, old) records).

    Without a client the tiles are written through ``writer`` (``session`` itself) on
    threads; with one, ``writer`` is a fork of ``session`` (holding the layout if it was
    written) that every batch gets a copy of, merged back into ``session`` at the end.
    """
    if client is None:
        source, target = job.source_group(), zarr.open_group(writer.store, mode="r+")
        out = []
        with ThreadPoolExecutor(_THREADS) as pool:
            runs = pool.map(lambda t: copy_tile(t, job, source, target, *pairs[t.name]), tiles)
            for i, result in enumerate(runs, 1):
                out.append(result)
                if progress:
                    progress(i, len(tiles))
        return out
    state = pickle.dumps(writer)  # each batch writes into its own copy of the fork
    parts = [tiles[i : i + BATCH] for i in range(0, len(tiles), BATCH)]
    batches = [(part, pickle.loads(state), {t.name: pairs[t.name] for t in part}) for part in parts]

    def batch_progress(done: int, total: int) -> None:
        if progress:
            progress(min(done * BATCH, len(tiles)), len(tiles))

    results = run_tiles(client, _copy_batch, batches, progress=batch_progress, job=job)
    session.merge(*(fork for _, fork in results))
    return [r for batch, _ in results for r in batch]


def _copy_batch(
    batch: tuple[tuple[Tile, ...], Any, dict[str, tuple[dict[str, Any], dict[str, Any] | None]]],
    *,
    job: CopyJob,
) -> tuple[list[tuple[Outcome, dict[str, Any]]], Any]:
    """Copy a batch of tiles into its forked session on a worker; return both."""
    tiles, fork, pairs = batch
    source, target = job.source_group(), zarr.open_group(fork.store, mode="r+")
    return [copy_tile(t, job, source, target, *pairs[t.name]) for t in tiles], fork


def same_record(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Equal provenance, whether or not either carries a digest yet."""
    return {k: v for k, v in old.items() if k != DIGEST_KEY} == {
        k: v for k, v in new.items() if k != DIGEST_KEY
    }


def read_tile(group: zarr.Group, names: tuple[str, ...], tile: Tile) -> dict[str, np.ndarray]:
    """The tile's window of each variable (leading axes, dates or classes, whole)."""
    out = {}
    for name in names:
        array = _array(group, name)
        index = (slice(None),) * (array.ndim - 2) + (tile.ys, tile.xs)
        out[name] = np.asarray(array[index])
    return out


def digest(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 of a tile's pixels: every variable's name, shape, dtype and bytes."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        values = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{values.shape}:{values.dtype}".encode())
        h.update(values.tobytes())
    return h.hexdigest()


def write_tile(target: zarr.Group, arrays: dict[str, np.ndarray], tile: Tile) -> None:
    """Write a tile's arrays, every chunk stored (as eoseg's stores do, so that none
    reads as fill; see `eoseg.integrity`)."""
    for name, values in arrays.items():
        array = _array(target, name).with_config({"write_empty_chunks": True})
        array[(slice(None),) * (values.ndim - 2) + (tile.ys, tile.xs)] = values


def _array(group: zarr.Group, name: str) -> zarr.Array:
    array = group[name]
    if not isinstance(array, zarr.Array):
        raise InvalidStoreError(f"{group.store} holds a group {name!r} where an array belongs")
    return array
