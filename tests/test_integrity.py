"""Tests of eoseg.integrity: a lost or corrupted chunk of a published store is an error.

Real Zarr stores written by eoseg's own store functions; chunks removed or overwritten
with garbage on disk, as an interrupted copy or a bad disk would.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from odc.geo.geobox import GeoBox

from eoseg.classes import IGNORE_ID
from eoseg.cube import ingest, open_cube
from eoseg.errors import InvalidStoreError
from eoseg.grid import iter_tiles
from eoseg.integrity import ALL_CHUNKS_ATTR, check_chunks
from eoseg.labels import labels_template, open_labels
from eoseg.store import consolidate, create_store, open_store, publish, write_tile

GRID = GeoBox.from_bbox((600000, 5000000, 600080, 5000060), "EPSG:32633", resolution=10)
"""8 x 6 pixels: with 4 px tiles, 2 x 2 tiles, the east ones 4 px wide, the south 2 px."""


def labels_store(path: Path, fill: int | None = None) -> Path:
    """A published labels store, every tile written; tile r0_c0 all ignore (= fill value)."""
    staging = create_store(
        path, labels_template(GRID, 4), product="labels", signature="s", attrs={"tile_size": 4}
    )
    for tile in iter_tiles(GRID, 4):
        value = IGNORE_ID if tile.name == "r0000_c0000" else 1 + tile.y0 // 4 + tile.x0 // 4
        write_tile(
            staging, tile, {"labels": np.full((tile.height, tile.width), value, "uint8")}, {}
        )
    return publish(path, overwrite=False)


def test_labels_fill_with_ignore_and_every_chunk_is_written(tmp_path: Path) -> None:
    store = labels_store(tmp_path / "labels.zarr")
    meta = json.loads((store / "labels" / "zarr.json").read_text())
    assert meta["fill_value"] == IGNORE_ID
    chunks = sorted(p.relative_to(store / "labels").as_posix() for p in store.rglob("c/*/*"))
    assert chunks == ["c/0/0", "c/0/1", "c/1/0", "c/1/1"]  # c/0/0 equals the fill value
    labels = open_labels(store)
    assert labels.dtype == np.uint8
    assert (labels.values[:4, :4] == IGNORE_ID).all() and (labels.values[4:, 4:] == 3).all()


def test_missing_chunk_is_refused_with_its_key(tmp_path: Path) -> None:
    store = labels_store(tmp_path / "labels.zarr")
    (store / "labels" / "c" / "1" / "0").unlink()
    with pytest.raises(
        InvalidStoreError, match=r"1 chunk\(s\) of 'labels' are missing \(labels/c/1/0\)"
    ):
        open_labels(store)


def test_store_without_the_chunk_record_is_not_checked(tmp_path: Path) -> None:
    """Stores written before every chunk was: a missing chunk may be a legit empty one."""
    store = labels_store(tmp_path / "labels.zarr")
    group = zarr.open_group(str(store), mode="r+")
    del group.attrs[ALL_CHUNKS_ATTR]
    consolidate(store)
    (store / "labels" / "c" / "1" / "0").unlink()
    assert (open_labels(store).values[4:, :4] == IGNORE_ID).all()  # the fill: no label


def test_corrupted_chunk_names_store_and_chunk(tmp_path: Path) -> None:
    store = labels_store(tmp_path / "labels.zarr")
    (store / "labels" / "c" / "0" / "1").write_bytes(b"\x00garbage" * 20)
    labels = open_labels(store)  # lazy: nothing decoded yet
    assert (labels[4:, :4].values == 2).all()  # another chunk reads fine
    with pytest.raises(InvalidStoreError, match=rf"chunk labels/c/0/1 of store {store}"):
        labels.values  # noqa: B018


def test_corrupted_shard_of_a_sharded_cube(demo_data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Tiles stored as shards of smaller chunks: the damaged shard is named."""
    cube = ingest(
        [demo_data.catalog],
        tmp_path / "cube.zarr",
        bbox=demo_data.holdout_bbox,
        tile_size=64,
        chunk_size=32,
    ).path
    shards = [p for p in sorted((cube / "data" / "c").rglob("*")) if p.is_file()]
    first, last = shards[0], shards[-1]
    assert len(shards) >= 2
    first.write_bytes(first.read_bytes()[:100])  # truncated
    data = open_cube(cube)["data"]
    with pytest.raises(InvalidStoreError, match=f"chunk {first.relative_to(cube)} of store"):
        data.values  # noqa: B018
    last.unlink()  # a lost shard: one missing key, whatever the chunks inside
    with pytest.raises(InvalidStoreError, match=rf"missing \({last.relative_to(cube)}\)"):
        open_cube(cube)


def test_listing_chunks_is_quick(tmp_path: Path) -> None:
    """One listing per array (2,500 chunks here; 40,000 take ~0.7 s on a busy 2-core machine)."""
    store = tmp_path / "big.zarr"
    group = zarr.open_group(str(store), mode="w", zarr_format=3)
    array = group.create_array(
        "v",
        shape=(50, 50),
        chunks=(1, 1),
        dtype="uint8",
        fill_value=0,
        dimension_names=("y", "x"),
    )
    array.with_config({"write_empty_chunks": True})[:] = 0
    group.attrs[ALL_CHUNKS_ATTR] = True
    ds = open_store(store)
    start = time.perf_counter()
    check_chunks(store, ds, fix="")
    assert time.perf_counter() - start < 1.0
    (store / "v" / "c" / "49" / "49").unlink()
    with pytest.raises(InvalidStoreError, match=r"1 chunk\(s\) of 'v' are missing \(v/c/49/49\)"):
        check_chunks(store, ds, fix="")
