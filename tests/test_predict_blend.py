"""Chip lattices, blending windows and mirrored reads (`eoseg.blend`): no model."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from eoseg.blend import (
    Lattice,
    check_lattice,
    default_lattice,
    fit_lattice,
    mirror_index,
    read_mirrored,
)
from eoseg.errors import InvalidParameterError

LATTICES = [(32, 16), (32, 0), (64, 8), (48, 5), (128, 64), (256, 16), (12, 1)]


@pytest.mark.parametrize(("chip", "overlap"), LATTICES, ids=[f"{c}-{o}" for c, o in LATTICES])
def test_weights_are_a_partition_of_unity(chip: int, overlap: int) -> None:
    """Chips laid on the lattice over a window from `span` weigh exactly one in total
    everywhere in the window's interior, and the weights are symmetric and positive."""
    lattice = Lattice(chip, overlap)
    lo, hi = lattice.span(7, 7 + 3 * chip + 5)
    size = hi - lo
    w = lattice.weights().astype("float64")
    total = np.zeros((size, size))
    for r in lattice.starts(size):
        for c in lattice.starts(size):
            total[r : r + chip, c : c + chip] += w
    assert lattice.starts(size)[-1] + chip == size  # the chips fit the window exactly
    inner = total[overlap : size - overlap, overlap : size - overlap]
    np.testing.assert_allclose(inner, 1.0, atol=1e-6)
    assert (w > 0).all()
    np.testing.assert_array_equal(w, w[::-1, ::-1])
    if overlap:  # only the overlap tapers: the middle is flat
        assert (w[overlap:-overlap, overlap:-overlap] == 1).all() and w[0, 0] < 0.5


def test_half_chip_overlap_is_the_fourfold_sin2_blend() -> None:
    """``overlap = chip/2`` reproduces the former stride-chip/2 ``sin²`` window exactly."""
    chip = 64
    old = np.sin(np.pi * (np.arange(chip) + 0.5) / chip) ** 2
    np.testing.assert_allclose(Lattice(chip, chip // 2).ramp(), old, atol=1e-12)
    # 17 chips of 64 px along each side of a 512 px tile: 4.5 passes per pixel
    assert Lattice(chip, chip // 2).passes(512, 512) == pytest.approx((17 * 64 / 512) ** 2)


@pytest.mark.parametrize(("start", "stop"), [(0, 96), (96, 192), (5, 6), (-3, 40), (1000, 1100)])
def test_span_covers_the_pixels_on_the_global_lattice(start: int, stop: int) -> None:
    lattice = Lattice(64, 12)
    lo, hi = lattice.span(start, stop)
    assert (lo + lattice.overlap) % lattice.stride == 0  # a chip of the grid's lattice
    assert lo + lattice.overlap <= start and stop <= hi - lattice.overlap
    # No chip more than needed: the first ends after start, the last starts before stop.
    assert lo + lattice.chip > start and hi - lattice.chip < stop


def test_cost_per_pixel_falls_with_larger_chips_and_smaller_overlap() -> None:
    four = Lattice(64, 32).passes(2048, 2048)
    assert four == pytest.approx((65 * 64 / 2048) ** 2)
    assert Lattice(256, 16).passes(2048, 2048) < 1.6
    assert Lattice(512, 64).passes(2048, 2048) < four / 1.8


def test_default_lattice_and_its_limits() -> None:
    assert default_lattice(256, 4) == Lattice(256, 16)
    assert default_lattice(64, 3) == Lattice(256, 16)  # larger than the training chip
    assert default_lattice(40, 5) == Lattice(256, 16)  # a multiple of 2**depth
    assert default_lattice(1024, 4) == Lattice(1024, 64)  # at most MAX_PREDICT_CHIP
    assert default_lattice(64, 3, "aspp") == Lattice(64, 32)  # image pooling: training chip
    # On 2048 px tiles each pixel is computed about 1.4 times, half of the former default's
    # 384 px chips overlapping by 128 px, a third of the four-fold blend.
    passes = Lattice(256, 16).passes(2048, 2048)
    assert passes < 1.5
    assert passes < Lattice(384, 128).passes(2048, 2048) / 1.9
    assert passes < Lattice(256, 128).passes(2048, 2048) / 3


def test_fit_lattice_shrinks_a_chip_larger_than_the_grid() -> None:
    assert fit_lattice(Lattice(256, 16), 101, 100, 2) == Lattice(136, 16)
    assert fit_lattice(Lattice(256, 16), 900, 900, 3) == Lattice(256, 16)


@pytest.mark.parametrize(
    ("chip", "overlap", "flag", "found"),
    [(30, 4, "--chip-size", "found 30"), (0, 0, "--chip-size", "found 0"),
     (32, 17, "--overlap", "found 17"), (32, -1, "--overlap", "found -1")],
)  # fmt: skip
def test_check_lattice_names_the_flag(chip: int, overlap: int, flag: str, found: str) -> None:
    with pytest.raises(InvalidParameterError, match=flag) as info:
        check_lattice(chip, overlap, depth=2)
    assert found in str(info.value)
    assert check_lattice(32, 16, depth=2) == Lattice(32, 16)


def test_mirror_index_folds_at_both_edges() -> None:
    np.testing.assert_array_equal(mirror_index(-3, 0, 5), [3, 2, 1])
    np.testing.assert_array_equal(mirror_index(3, 8, 5), [3, 4, 3, 2, 1])
    np.testing.assert_array_equal(mirror_index(-10, 12, 5) % 5, mirror_index(-10, 12, 5))
    np.testing.assert_array_equal(mirror_index(-2, 2, 1), [0, 0, 0, 0])


@pytest.mark.parametrize(
    ("rows", "cols"), [((-7, 30), (10, 58)), ((3, 13), (4, 9)), ((-20, 60), (-20, 70))]
)
def test_read_mirrored_chunk_by_chunk_equals_a_whole_read(tmp_path, rows, cols) -> None:
    """A window read from a Zarr store one storage chunk at a time (across chunk edges and
    mirrored beyond the grid's edge) equals the mirrored window of the array in memory."""
    values = np.random.default_rng(0).normal(size=(2, 40, 50)).astype("float32")
    xr.DataArray(values, dims=("band", "y", "x"), name="data").to_dataset().to_zarr(
        tmp_path / "c.zarr", encoding={"data": {"chunks": (2, 16, 16)}}
    )
    data = xr.open_zarr(tmp_path / "c.zarr", chunks=None)["data"]
    assert data.encoding["preferred_chunks"]["y"] == 16  # what the reader cuts at
    window = read_mirrored(data, rows, cols)
    expect = values[:, mirror_index(*rows, 40)][:, :, mirror_index(*cols, 50)]
    assert window.dtype == np.float32
    np.testing.assert_array_equal(window, expect)
    np.testing.assert_array_equal(read_mirrored(values, rows, cols), expect)
