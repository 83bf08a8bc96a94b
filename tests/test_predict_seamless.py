"""Seamless maps (issue 11): the chip lattice is the grid's, so tile sizes, tilings that cut
the lattice elsewhere, and one in-memory image all give the same probabilities; every date
of a per-date model is predicted with the same window; bf16 stays close to fp32."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from eoseg.blend import Lattice
from eoseg.grid import Tile, iter_tiles
from eoseg.inference import PredictOptions, get_runner
from eoseg.predict import open_classmap, predict
from eoseg.store import open_store
from eoseg.tile_prediction import tile_probabilities

LATTICES = [Lattice(64, 8), Lattice(32, 16), Lattice(48, 0)]


def _mosaic(
    cube_path: Path,
    model_dir: Path,
    lattice: Lattice,
    tile_size: int | None,
    steps: slice | None = None,
) -> np.ndarray:
    """float32 ``(class, y, x)`` probabilities of the whole grid, tile by tile (``None``:
    the grid as one in-memory image, one window)."""
    cube = open_store(cube_path, chunks=None)
    model, card, accel = get_runner(str(model_dir), "fp32")
    grid = cube.odc.geobox
    tiles = (
        [Tile(0, 0, 0, 0, grid.shape.y, grid.shape.x)]
        if tile_size is None
        else list(iter_tiles(grid, tile_size))
    )
    out = np.zeros((len(card.classes), *grid.shape.yx), dtype="float32")
    for tile in tiles:
        probs, _ = tile_probabilities(
            cube, tile, steps or slice(None), model=model, card=card, lattice=lattice,
            accel=accel, batch_size=3,
        )  # fmt: skip
        out[:, tile.ys, tile.xs] = probs
    return out


def _agree(a: np.ndarray, b: np.ndarray) -> None:
    """Classes >= 99.9 % identical and probabilities within 1e-3."""
    assert (a.argmax(axis=0) == b.argmax(axis=0)).mean() >= 0.999
    np.testing.assert_allclose(a, b, atol=1e-3)


@pytest.mark.parametrize("lattice", LATTICES, ids=[f"{x.chip}-{x.overlap}" for x in LATTICES])
def test_tile_sizes_and_one_image_give_the_same_probabilities(
    cube_path: Path, model_dir: Path, lattice: Lattice
) -> None:
    """96 px tiles, 40 px tiles (cutting the lattice elsewhere: its stride does not divide
    them) and the grid as one image agree; the probabilities sum to one."""
    whole = _mosaic(cube_path, model_dir, lattice, None)
    np.testing.assert_allclose(whole.sum(axis=0), 1.0, atol=1e-5)
    for tile_size in (96, 40):
        _agree(_mosaic(cube_path, model_dir, lattice, tile_size), whole)


def test_class_maps_of_other_tile_sizes_agree(
    cube_path: Path, model_dir: Path, tmp_path: Path
) -> None:
    """Through `predict`: the cube's 96 px tiles and 40 px tiles (and so chunks) give the
    same stored class map; stored probabilities differ by at most one step of 1/255."""
    options = PredictOptions(chip_size=64, overlap=8, precision="fp32", probabilities=True)
    small = tmp_path / "cube-40.zarr"
    shutil.copytree(cube_path, small)
    zarr.open_group(str(small), mode="r+").attrs["tile_size"] = 40
    a = open_classmap(predict(cube_path, model_dir, tmp_path / "a.zarr", options=options).path)
    b = xr.open_zarr(predict(small, model_dir, tmp_path / "b.zarr", options=options).path)
    assert b["class"].encoding["chunks"] == (40, 40)
    assert (a["class"].values == b["class"].values).mean() >= 0.999
    diff = np.abs(a["probabilities"].values.astype(int) - b["probabilities"].values)
    assert diff.max() <= 1


def test_per_date_model_predicts_every_date_with_the_window(
    demo_data,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    """A per-date model on a --by-date cube: a class map per date, each the blend of that
    date's own input (the same as predicting the date as one image)."""
    from conftest import save_untrained_model

    from eoseg.cube import ingest

    cube = ingest([demo_data.catalog], tmp_path / "cube.zarr", by_date=True, tile_size=96).path
    model = save_untrained_model(tmp_path / "m", ("B02", "B03", "B04", "B08"), time="per-date")
    options = PredictOptions(chip_size=64, overlap=8, precision="fp32")
    cmap = open_classmap(predict(cube, model, tmp_path / "map.zarr", options=options).path)
    assert cmap["class"].dims == ("time", "y", "x") and cmap.sizes["time"] == 2
    valid = open_store(cube)["valid"].values.astype(bool)
    for t in range(2):
        probs = _mosaic(cube, model, Lattice(64, 8), None, slice(t, t + 1))
        expected = np.where(valid[t], probs.argmax(axis=0), 255)
        assert (cmap["class"].values[t] == expected).mean() >= 0.999
    assert (cmap["class"].values[0] != cmap["class"].values[1]).any()  # dates differ


@pytest.fixture(scope="module")
def trained_model(cube_path: Path, labels_path: Path, tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    """A small U-Net trained for a few steps on the demo's noisy labels."""
    from eoseg.train import TrainConfig
    from eoseg.train.stores import train_from_stores

    out = tmp_path_factory.mktemp("trained") / "m"
    config = TrainConfig(epochs=6, chip_size=32, train_chips=64, val_chips=8, base_width=8,
                         depth=2, device="cpu", seed=0)  # fmt: skip
    train_from_stores(cube_path, labels_path, out, config=config)
    return out


def test_bf16_class_map_matches_fp32(trained_model: Path, cube_path: Path, tmp_path: Path) -> None:
    """bf16 autocast (channels-last) keeps >= 99.5 % of a trained model's classes; the
    tiles say which precision made them."""
    from eoseg.models.card import read_card
    from eoseg.store import tile_provenance

    card = read_card(trained_model)
    assert card.inference == {"chip_size": 256, "overlap": 16}  # training records the default
    maps = {}
    for precision in ("fp32", "bf16"):
        options = PredictOptions(chip_size=64, overlap=8, precision=precision)  # type: ignore[arg-type]
        result = predict(cube_path, trained_model, tmp_path / f"{precision}.zarr", options=options)
        assert result.to_dict()["precision"] == precision
        assert {r["device"].split()[1] for r in tile_provenance(result.path)} == {precision}
        maps[precision] = open_classmap(result.path)["class"].values
    valid = maps["fp32"] != 255
    assert len(np.unique(maps["fp32"][valid])) >= 2  # a trained map, not one class
    assert (maps["bf16"] == maps["fp32"]).mean() >= 0.995
