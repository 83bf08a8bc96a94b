"""Tests of eoseg.sampling: windows, nodata handling, class balance, block split."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scipy import ndimage

from eoseg.blocks import split_blocks
from eoseg.errors import BandMismatchError, InvalidParameterError
from eoseg.sampling import composite, sample_chips

BANDS = ("B02", "B03", "B04", "B08")
SIGNATURE = np.array(
    [[0.05, 0.06, 0.04, 0.02], [0.04, 0.08, 0.05, 0.35], [0.12, 0.14, 0.16, 0.25]], np.float32
)


def make_scene(size: int = 256, seed: int = 0) -> tuple[xr.Dataset, xr.DataArray, np.ndarray]:
    """Blobs of class 1 on class 0, small disks of rare class 2 (~2 %), some nodata."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=(size, size)), 8)
    truth = (field > np.quantile(field, 0.55)).astype(np.uint8)
    yy, xx = np.mgrid[:size, :size]
    for _ in range(6):
        cy, cx = rng.integers(10, size - 10, 2)
        truth[(yy - cy) ** 2 + (xx - cx) ** 2 < 64] = 2
    data = SIGNATURE[truth].transpose(2, 0, 1)[None].repeat(2, 0)
    data = data + rng.normal(0, 0.01, data.shape).astype(np.float32)
    valid = np.ones((2, size, size), np.uint8)
    valid[0, :40, :40] = 0  # cloud in the first time step only
    data[:, :, -8:, -8:] = np.nan  # nodata in every time step
    valid[:, -8:, -8:] = 0
    labels = truth.copy()
    labels[100:120, :] = 255
    coords = {"y": np.arange(size)[::-1] * 10.0 + 5, "x": np.arange(size) * 10.0 + 5}
    cube = xr.Dataset(
        {"data": (("time", "band", "y", "x"), data), "valid": (("time", "y", "x"), valid)},
        coords={"band": list(BANDS), "time": np.arange(2), **coords},
    )
    return cube, xr.DataArray(labels, dims=("y", "x"), coords=coords), truth


@pytest.fixture(scope="module")
def scene() -> tuple[xr.Dataset, xr.DataArray, np.ndarray]:
    return make_scene()


def test_chips_inside_raster_and_match_labels(scene) -> None:
    cube, labels, _ = scene
    chips = sample_chips(cube, labels, chip_size=48, count=40, seed=1)
    assert chips.x.shape == (40, 4, 48, 48) and chips.x.dtype == np.float32
    assert chips.y.shape == (40, 48, 48) and chips.y.dtype == np.uint8
    assert chips.bands == BANDS
    assert (chips.origins >= 0).all() and (chips.origins + 48 <= 256).all()
    lab = labels.values
    for (r, c), y in zip(chips.origins, chips.y, strict=True):
        window = lab[r : r + 48, c : c + 48]
        keep = y != 255
        np.testing.assert_array_equal(y[keep], window[keep])
        assert np.mean(keep) >= 0.25


def test_invalid_pixels_are_ignored(scene) -> None:
    cube, labels, _ = scene
    tiles = split_blocks((256, 256), block_size=32, val_fraction=0.0)  # chips = blocks
    chips = sample_chips(cube, labels, chip_size=32, count=300, seed=2, split=tiles, balance=False)
    nodata = np.isnan(chips.x).any(axis=1)
    assert (chips.y[nodata] == 255).all()
    # only the all-time nodata corner is NaN; the cloud of time step 0 is filled by step 1
    n, rows, cols = np.nonzero(nodata)
    assert len(n) > 0
    assert (chips.origins[n, 0] + rows >= 248).all() and (chips.origins[n, 1] + cols >= 248).all()


def test_composite_uses_valid_mask() -> None:
    data = np.stack([np.full((1, 2, 2), 1.0), np.full((1, 2, 2), 3.0)]).astype(np.float32)
    valid = np.ones((2, 2, 2), np.uint8)
    valid[0, 0, 0] = 0
    valid[:, 1, 1] = 0
    out = composite(data, valid)
    assert out.shape == (1, 2, 2)
    assert out[0, 0, 0] == 3.0 and out[0, 0, 1] == 2.0 and np.isnan(out[0, 1, 1])


def test_balance_oversamples_rare_class(scene) -> None:
    cube, labels, truth = scene
    share = np.mean(truth == 2)
    assert 0.01 < share < 0.03
    balanced = sample_chips(cube, labels, chip_size=32, count=60, seed=3)
    plain = sample_chips(cube, labels, chip_size=32, count=60, seed=3, balance=False)
    with_rare = np.mean([(y == 2).any() for y in balanced.y])
    assert with_rare > 0.3
    assert np.mean(balanced.y == 2) > 2 * share
    assert with_rare > np.mean([(y == 2).any() for y in plain.y])


@pytest.mark.parametrize("block", [64, 32], ids=["blocks-of-two-chips", "chip-sized-blocks"])
def test_split_blocks_are_disjoint(scene, block: int) -> None:
    """Labels shown in a chip are of its own part's blocks. Blocks of two chips keep each
    chip inside one block; chip-sized blocks let chips centre on their pixel across edges."""
    cube, labels, _ = scene
    split = split_blocks((256, 256), block_size=block, val_fraction=0.25, seed=0)
    train_blocks, val_blocks = set(split.blocks("train")), set(split.blocks("val"))
    assert len(val_blocks) == round(0.25 * (256 // block) ** 2)
    assert not train_blocks & val_blocks
    train = sample_chips(cube, labels, chip_size=32, count=30, seed=0, split=split, part="train")
    val = sample_chips(cube, labels, chip_size=32, count=30, seed=0, split=split, part="val")
    assert len(train) and len(val)
    lab = labels.values
    for chips, blocks in ((train, train_blocks), (val, val_blocks)):
        crossing = 0
        for (r, c), y in zip(chips.origins, chips.y, strict=True):
            rows, cols = np.nonzero(y != 255)
            assert rows.size
            shown = {((r + i) // block, (c + j) // block) for i, j in zip(rows, cols, strict=True)}
            assert shown <= blocks
            np.testing.assert_array_equal(y[rows, cols], lab[r + rows, c + cols])
            crossing += (r // block, c // block) != ((r + 31) // block, (c + 31) // block)
        assert (crossing > 0) == (block == 32)


def test_sampling_is_deterministic(scene) -> None:
    cube, labels, _ = scene
    a = sample_chips(cube, labels, chip_size=32, count=10, seed=7)
    b = sample_chips(cube, labels, chip_size=32, count=10, seed=7)
    np.testing.assert_array_equal(a.origins, b.origins)
    np.testing.assert_array_equal(a.y, b.y)


def test_lazy_cube_reads_windows(scene) -> None:
    cube, labels, _ = scene
    lazy = cube.chunk({"y": 64, "x": 64})
    chips = sample_chips(
        lazy, labels.chunk({"y": 64, "x": 64}), chip_size=32, count=5, seed=1,
        bands=("B08", "B02"), max_block_bytes=0,
    )  # fmt: skip
    eager = sample_chips(cube, labels, chip_size=32, count=5, seed=1, bands=("B08", "B02"))
    assert chips.bands == ("B08", "B02")
    np.testing.assert_array_equal(chips.x, eager.x)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"chip_size": 300}, InvalidParameterError, "does not fit"),
        ({"bands": ("B02", "B11")}, BandMismatchError, r"missing \('B11',\)"),
    ],
    ids=["chip-too-big", "missing-band"],
)
def test_bad_parameters(scene, kwargs, error, match) -> None:
    cube, labels, _ = scene
    params = {"chip_size": 32, "count": 2, "seed": 0, **kwargs}
    with pytest.raises(error, match=match):
        sample_chips(cube, labels, **params)


def test_labels_off_grid_refused(scene) -> None:
    cube, labels, _ = scene
    with pytest.raises(InvalidParameterError, match="rasterize the labels on the cube's grid"):
        sample_chips(cube, labels[:100], chip_size=32, count=2, seed=0)


def test_edge_blocks_absorb_the_remainder() -> None:
    split = split_blocks((400, 300), block_size=128, val_fraction=0.0)
    assert split.grid == (3, 2)
    assert split.bounds((2, 1)) == (256, 400, 128, 300)  # every block holds a 128 px chip
    assert split_blocks((100, 100), block_size=128).grid == (1, 1)


def test_split_draws_validation_within_each_group() -> None:
    labelled = [{(0, 0), (0, 1), (1, 1)}, {(3, 3), (2, 3)}]
    for seed in range(5):
        split = split_blocks((256, 256), block_size=64, val_fraction=0.25, seed=seed,
                             groups=labelled)  # fmt: skip
        assert len(split.val_blocks & labelled[0]) == 1
        assert len(split.val_blocks & labelled[1]) == 1
        assert split.val_blocks <= labelled[0] | labelled[1]


def test_balance_spreads_chips_over_the_regions_of_a_class() -> None:
    """One large square and five small ones of the same class: chips are drawn region by
    region, so the small squares get most chips though they hold 1 % of the pixels."""
    lab = np.full((256, 256), 255, np.uint8)
    lab[20:120, 20:120] = 0
    small = [(200, 30), (200, 200), (30, 200), (140, 140), (100, 220)]
    for r, c in small:
        lab[r : r + 4, c : c + 4] = 0
    cube, _, _ = make_scene()
    labels = xr.DataArray(lab, dims=("y", "x"), coords={k: cube[k] for k in ("y", "x")})
    chips = sample_chips(cube, labels, chip_size=16, count=120, seed=0, min_labelled=0.01)
    centres = chips.origins + 8
    near_small = [min(abs(r - sr) + abs(c - sc) for sr, sc in small) < 12 for r, c in centres]
    assert len(chips) == 120 and 0.7 < np.mean(near_small) < 0.95  # 5 of 6 regions
