"""Tests of multi-context segmentation: eoseg.contexts, eoseg.train.contexts and the proof
on the context landscape (eoseg.synthetic_context, benchmarks/context.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from eoseg.blend import mirror_index, read_mirrored
from eoseg.blocks import BlockSplit
from eoseg.classes import IGNORE_ID, generic_schema
from eoseg.contexts import (
    SINGLE,
    Fusion,
    context_lattice,
    context_span,
    parse_contexts,
    pool,
    resolve_fusion,
)
from eoseg.errors import InvalidParameterError, InvalidStoreError
from eoseg.models.card import ModelCard, read_card
from eoseg.predict import PredictOptions, open_classmap, predict
from eoseg.sampling import sample_chips
from eoseg.train import TrainConfig, train_model
from eoseg.train.contexts import widen_chips


def test_pool_averages_blocks_and_skips_nodata() -> None:
    img = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    img[0, 0, 0] = np.nan
    img[0, 2:, 2:] = np.nan
    out = pool(img, 2)
    np.testing.assert_allclose(out[0, 0, 0], (1 + 4 + 5) / 3)
    np.testing.assert_allclose(out[0, 0, 1], (2 + 3 + 6 + 7) / 4)
    assert np.isnan(out[0, 1, 1]) and out.shape == (1, 2, 2)


def test_mirror_is_numpys_reflect_far_beyond_the_edge() -> None:
    row = np.arange(5)
    want = np.pad(row, 12, mode="reflect")
    np.testing.assert_array_equal(row[mirror_index(-12, 17, 5)], want)
    data = xr.DataArray(np.arange(30.0).reshape(5, 6), dims=("y", "x"))
    win = read_mirrored(data, (-3, 8), (4, 9))
    np.testing.assert_array_equal(win, np.pad(data.values, 3, mode="reflect")[0:11, 7:12])


@pytest.mark.parametrize("context", [1, 2, 4], ids=["c1", "c2", "c4"])
def test_context_windows_lie_on_one_global_lattice(context: int) -> None:
    """Any tile's window starts on the context's lattice (multiples of half a coarse chip)
    and covers the tile with the upsampling margin."""
    chip = 32
    stride = context * chip // 2
    for start, stop in [(0, 96), (96, 192), (37, 101), (200, 203)]:
        n0, n1, r0 = context_span(start, stop, context, chip)
        assert n0 % stride == 0 and n1 % stride == 0
        assert n0 == context * r0 - stride  # the interior starts half a chip in
        margin = context if context > 1 else 0
        assert n0 + stride <= start - margin and n1 - stride >= stop + margin


def test_contexts_are_parsed_and_refused_with_the_flag() -> None:
    assert parse_contexts("4, 1,2") == (1, 2, 4) and parse_contexts(None) is None
    for bad in ["0", "1,x", "1,2,3,4,5,6", "", "17"]:
        with pytest.raises(InvalidParameterError, match="--contexts"):
            parse_contexts(bad)
    with pytest.raises(InvalidParameterError, match=r"--contexts .* 1 among them"):
        TrainConfig(contexts=(2, 4))
    assert TrainConfig(contexts=(4, 1)).contexts == (1, 4)


def _card(contexts: dict[str, object]) -> ModelCard:
    return ModelCard(
        name="m", bands=("a",), mean=(0.0,), std=(1.0,), classes=generic_schema(2),
        chip_size=32, architecture={"name": "unet"}, contexts=contexts,
    )  # fmt: skip


def test_fusion_follows_the_card_or_the_contexts_asked() -> None:
    card = _card({"contexts": [1, 2, 4], "weights": {"1": 0.5, "2": 0.0, "4": 0.5}})
    assert resolve_fusion(card) == Fusion((1, 4), (0.5, 0.5), "model card (fitted)")
    asked = resolve_fusion(card, (1, 2))
    assert asked.contexts == (1, 2) and asked.weights == (1.0, 0.0)
    assert resolve_fusion(card, (1,)) is SINGLE
    assert resolve_fusion(card, (2,)) == Fusion((2,), (1.0,), "one context asked")
    zero = _card({"contexts": [1, 2, 4], "weights": {"1": 1.0, "2": 0.0, "4": 0.0}})
    assert resolve_fusion(zero, (2, 4)).weights == (0.5, 0.5)
    plain = _card({})
    assert resolve_fusion(plain) is SINGLE
    equal = resolve_fusion(plain, (1, 4))
    assert equal.weights == (0.5, 0.5) and equal.source.startswith("equal")


def test_damaged_fusion_weights_are_refused(tmp_path: Path) -> None:
    from eoseg.models.card import check_card

    with pytest.raises(InvalidStoreError, match=r"contexts\.weights"):
        check_card(_card({"weights": {"1": -1.0}}), str(tmp_path))
    with pytest.raises(InvalidStoreError, match=r"contexts\.weights"):
        check_card(_card({"weights": {"x": 1.0}}), str(tmp_path))


def _cube(labels: np.ndarray, seed: int = 0) -> xr.Dataset:
    """A one-date cube whose two bands tell the labelled classes apart."""
    rng = np.random.default_rng(seed)
    h, w = labels.shape
    level = np.where(labels == IGNORE_ID, 0, labels).astype(np.float32)
    data = 0.1 + 0.2 * level[None, None] + rng.normal(0, 0.02, (1, 2, h, w)).astype(np.float32)
    coords = {"y": 5_300_000 - np.arange(h) * 10.0 - 5, "x": 600_000 + np.arange(w) * 10.0 + 5}
    return xr.Dataset(
        {"data": (("time", "band", "y", "x"), data),
         "valid": (("time", "y", "x"), np.ones((1, h, w), np.uint8))},
        coords={"band": ["B04", "B08"], "time": [0], **coords},
    )  # fmt: skip


def test_wider_chips_are_centred_on_the_sampled_ones() -> None:
    """A context-2 chip holds the sampled chip in its middle: its labels there, its
    pixels pooled; labels of validation blocks are hidden from training chips."""
    labels = np.zeros((96, 96), np.uint8)
    labels[:, 48:] = 1
    cube = _cube(labels)
    lab = xr.DataArray(labels, dims=("y", "x"), coords={"y": cube.y, "x": cube.x})
    split = BlockSplit((96, 96), 48, frozenset({(0, 1)}))
    chips = sample_chips(cube, lab, chip_size=16, count=12, seed=0, split=split, part="train")
    wide = widen_chips(cube, chips, lab, split=split, part="train", context=2, time="median")
    assert wide.x.shape == chips.x.shape and wide.y.shape == (12, 32, 32)
    np.testing.assert_array_equal(wide.y[:, 8:24, 8:24], chips.y)
    np.testing.assert_allclose(wide.x[:, :, 4:12, 4:12], pool(chips.x, 2), rtol=1e-6)
    for (r, c), y in zip(chips.origins, wide.y, strict=True):
        rows, cols = np.arange(r - 8, r + 24), np.arange(c - 8, c + 24)
        hidden = (rows[:, None] < 48) & (cols[None, :] >= 48)  # block (0, 1): validation
        assert (y[hidden] == IGNORE_ID).all()
        inside = ((rows >= 0) & (rows < 96))[:, None] & ((cols >= 0) & (cols < 96))[None]
        assert (y[~inside] == IGNORE_ID).all()


@pytest.fixture(scope="module")
def trained(cube_path: Path, labels_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained briefly on the demo cube at contexts 1, 2 and 4 (trained weights
    make predictions depend on where a pixel lies in its chip, as seams would show)."""
    from eoseg.classes import DEMO_CLASSES
    from eoseg.cube import open_cube
    from eoseg.labels import open_labels

    config = TrainConfig(
        chip_size=32, base_width=16, depth=2, epochs=3, train_chips=32, val_chips=8,
        block_size=64, refit=False, num_threads=1, contexts=(1, 2, 4),
    )  # fmt: skip
    out = tmp_path_factory.mktemp("contexts") / "model"
    train_model(
        open_cube(cube_path), open_labels(labels_path), out, schema=DEMO_CLASSES,
        config=config, resume=False,
    )  # fmt: skip
    return out


def test_fusion_weights_are_stored_in_and_read_from_the_card(
    trained: Path, cube_path: Path, tmp_path: Path
) -> None:
    """Training on contexts 1, 2 and 4 records weights summing to one and each context's
    validation mIoU; predict applies the card's weights and records them in the map."""
    card = read_card(trained)
    record = card.contexts
    assert record["contexts"] == [1, 2, 4] and record["view"] == "pooled"
    weights = {int(c): w for c, w in record["weights"].items()}
    assert set(weights) == {1, 2, 4} and sum(weights.values()) == pytest.approx(1.0)
    assert set(record["val_miou"]) == {"1", "2", "4", "fused"}
    assert all(0.0 <= v <= 1.0 for v in record["val_miou"].values())
    assert len(card.metrics["pretrain"]["val_miou_fused"]) == 3  # the epochs were scored fused
    classmap = tmp_path / "map.zarr"
    predict(cube_path, trained, classmap)
    used = open_classmap(classmap).attrs["predict_settings"]["contexts"]
    expected = resolve_fusion(card)
    assert used["contexts"] == [c for c in (1, 2, 4) if weights[c] > 0]
    assert used["contexts"] == list(expected.contexts) and used["source"].startswith("model card")
    assert used["weights"] == pytest.approx(list(expected.weights))


def _with_tile_size(cube: Path, size: int, where: Path) -> Path:
    copy = where / f"cube-{size}.zarr"
    shutil.copytree(cube, copy)
    zarr.open_group(str(copy), mode="r+").attrs["tile_size"] = size
    return copy


@pytest.mark.parametrize("contexts", [(4,), (1, 2, 4)], ids=["c4", "c124"])
def test_prediction_is_seamless_at_every_context(
    contexts: tuple[int, ...], cube_path: Path, trained: Path, tmp_path: Path
) -> None:
    """Tiles of 96 px, of 40 px and one whole-grid tile give the same class map (each
    context on its own global lattice, the halo covering the widest window). One context
    asked alone (the widest: 4) and the card's fusion; every context's own lattice is
    checked to 3e-5 by `test_tile_probabilities_match_the_whole_grid`."""
    maps = {}
    for size in (96, 40, 4096):
        cube = cube_path if size == 96 else _with_tile_size(cube_path, size, tmp_path)
        out = tmp_path / f"map-{size}.zarr"
        predict(cube, trained, out, options=PredictOptions(contexts=contexts))
        maps[size] = xr.open_zarr(out, consolidated=False).load()
        assert maps[size].attrs["predict_settings"]["contexts"]["contexts"] == list(contexts)
    ref = maps[96]
    assert len(np.unique(ref["class"].values)) > 1
    for size in (40, 4096):
        same = (maps[size]["class"].values == ref["class"].values).mean()
        assert same >= 0.999, f"tile {size}: {same:.5f} identical"
        diff = np.abs(maps[size]["confidence"].values.astype(int) - ref["confidence"].values)
        assert diff.max() <= 1


def test_fusion_is_the_weighted_mean_of_log_probabilities(cube_path: Path, trained: Path) -> None:
    """Fused probabilities are softmax(Σ w_c log p_c) of each context's own; context 1
    through the context path is the plain prediction (the same lattice)."""
    from eoseg.contexts import PROB_FLOOR, context_probabilities, softmax
    from eoseg.cube import open_cube
    from eoseg.grid import Tile
    from eoseg.models.weights import load_model
    from eoseg.tile_prediction import predict_window, tile_input

    model, card = load_model(trained)
    cube = open_cube(cube_path)
    tile, steps = Tile(row=0, col=1, y0=0, x0=96, height=96, width=64), slice(0, 1)

    def probs(fusion: Fusion) -> np.ndarray:
        return context_probabilities(model, card, cube, tile, steps, fusion, predict_window)[0]

    p1, p4 = probs(Fusion((1,), (1.0,))), probs(Fusion((4,), (1.0,)))
    fused = probs(Fusion((1, 4), (0.3, 0.7)))
    logs = 0.3 * np.log(np.maximum(p1, PROB_FLOOR)) + 0.7 * np.log(np.maximum(p4, PROB_FLOOR))
    np.testing.assert_allclose(fused, softmax(logs), atol=1e-5)
    assert np.abs(p4 - p1).max() > 0.05  # the contexts do see different things
    lattice = context_lattice(card.chip_size)
    window, _ = tile_input(cube, card, tile, steps, lattice)
    dy = tile.y0 - lattice.span(tile.y0, tile.y0 + tile.height)[0] - lattice.overlap
    dx = tile.x0 - lattice.span(tile.x0, tile.x0 + tile.width)[0] - lattice.overlap
    plain = predict_window(model, card, window, lattice=lattice)
    plain = plain[:, dy : dy + tile.height, dx : dx + tile.width]
    np.testing.assert_allclose(p1, plain, atol=1e-5)


@pytest.mark.slow
def test_multi_context_beats_single_context_where_only_surroundings_tell(
    tmp_path: Path,
) -> None:
    """Park and grassland share their spectra: the model trained and predicting at
    contexts 1, 2, 4 maps them apart, the single-context one cannot (gain >= 0.05 mIoU)."""
    from benchmarks.context import compare_synthetic

    result = compare_synthetic(tmp_path, at_context_one=False)
    single, multi = result.scores["single"], result.scores["multi"]
    park = result.classes.index("park")
    assert multi.miou >= single.miou + 0.05, (single.miou, multi.miou, result.fusion)
    assert multi.iou[park] >= single.iou[park] + 0.2
    assert result.fusion["weights"] and set(result.fusion["val_miou"]) == {"1", "2", "4", "fused"}


def test_tile_probabilities_match_the_whole_grid(cube_path: Path, trained: Path) -> None:
    """Fused probabilities of 40 px tiles equal those of one tile over the whole grid.

    Contexts 1, 2 and 4 with equal weights: each context's log-probabilities enter the
    fusion with weight 1/3, so a seam of any one context shows (one run checks them all;
    the tolerance is a third of what one context alone was held to)."""
    from eoseg.contexts import context_probabilities
    from eoseg.cube import open_cube
    from eoseg.grid import iter_tiles
    from eoseg.models.weights import load_model
    from eoseg.tile_prediction import predict_window

    model, card = load_model(trained)
    cube = open_cube(cube_path)
    fusion = Fusion((1, 2, 4), (1 / 3, 1 / 3, 1 / 3))
    grid = cube.odc.geobox
    steps = slice(0, 1)
    (whole,) = iter_tiles(grid, 4096)
    ref, _ = context_probabilities(model, card, cube, whole, steps, fusion, predict_window)
    tiled = np.zeros_like(ref)
    for tile in iter_tiles(grid, 40):
        probs, _ = context_probabilities(model, card, cube, tile, steps, fusion, predict_window)
        tiled[:, tile.y0 : tile.y0 + tile.height, tile.x0 : tile.x0 + tile.width] = probs
    np.testing.assert_allclose(tiled, ref, atol=3e-5)  # 1.8e-7 here: float rounding
    assert ref.std(axis=(1, 2)).max() > 0.01  # the model's output varies over the grid


def test_bad_contexts_exit_2_before_writing(
    cube_path: Path, model_dir: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from eoseg.cli import app

    out = tmp_path / "map.zarr"
    args = ["predict", "--cube", str(cube_path), "--model", str(model_dir), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--contexts", "0,2"])
    assert result.exit_code == 2 and "--contexts" in result.stderr
    assert not out.exists()
