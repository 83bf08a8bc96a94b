"""Chip sampling: pick training windows from a cube and its labels.

Windows are drawn inside square spatial *blocks*; each block belongs wholly to the
training or the validation part (`split_blocks`), so validation chips never overlap or
touch training chips. With ``balance=True`` a target class is drawn uniformly among the
classes present, then a *region* of that class (a connected patch of its pixels within a
block: a polygon, or the part of one in the block), then a pixel of it, and the chip is
centred on that pixel: rare classes appear in far more chips than their pixel share, and
one large polygon does not crowd out the small ones of its class.

Memory stays bounded: labels are read one block at a time (for per-block class counts),
and imagery is read per block when the block is small (``max_block_bytes``) or per chip
window otherwise; the whole raster is never loaded.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import xarray as xr
from scipy import ndimage

from eoseg.classes import IGNORE_ID
from eoseg.errors import BandMismatchError, InvalidParameterError
from eoseg.model_input import TimeMode, composite, input_stack, pick_date

__all__ = ["BlockSplit", "ChipSet", "composite", "read_window", "sample_chips", "split_blocks"]

logger = logging.getLogger(__name__)

Part = Literal["train", "val", "all"]


@dataclass(frozen=True, slots=True)
class BlockSplit:
    """A grid of square blocks over a raster, each assigned to train or validation.

    The last block row and column absorb the remainder of the raster (they are up to
    ``2 * block_size - 1`` px), so every block holds a ``block_size`` window when the
    raster does.

    Attributes:
        shape: ``(height, width)`` of the raster.
        block_size: Least side of a block in pixels.
        val_blocks: ``(block_row, block_col)`` of the validation blocks.
    """

    shape: tuple[int, int]
    block_size: int
    val_blocks: frozenset[tuple[int, int]]

    @property
    def grid(self) -> tuple[int, int]:
        """Number of block rows and columns."""
        h, w = self.shape
        return max(1, h // self.block_size), max(1, w // self.block_size)

    def blocks(self, part: Part) -> list[tuple[int, int]]:
        """Block indices of one part (``"train"``, ``"val"`` or ``"all"``), row-major."""
        rows, cols = self.grid
        out = []
        for by in range(rows):
            for bx in range(cols):
                is_val = (by, bx) in self.val_blocks
                if part == "all" or (part == "val") == is_val:
                    out.append((by, bx))
        return out

    def bounds(self, block: tuple[int, int]) -> tuple[int, int, int, int]:
        """Pixel bounds ``(row0, row1, col0, col1)`` of a block, clipped to the raster."""
        (by, bx), (rows, cols), b = block, self.grid, self.block_size
        h, w = self.shape
        return (
            by * b,
            h if by == rows - 1 else (by + 1) * b,
            bx * b,
            w if bx == cols - 1 else (bx + 1) * b,
        )


def split_blocks(
    shape: tuple[int, int],
    *,
    block_size: int,
    val_fraction: float = 0.25,
    seed: int = 0,
    groups: Sequence[Collection[tuple[int, int]]] | None = None,
) -> BlockSplit:
    """Assign the blocks of a raster to training and validation at random.

    Validation blocks are drawn within each group of blocks: ``val_fraction`` of it, and
    at least one block to each part from a group of two or more.

    Args:
        shape: ``(height, width)`` of the raster.
        block_size: Side of a block in pixels (at least the chip size).
        val_fraction: Share of blocks held out for validation (0 disables validation).
        seed: Seed of the assignment.
        groups: Disjoint groups of ``(block_row, block_col)``, e.g. the blocks holding
            clean labels, then those holding only noisy ones: validation then holds
            labels of each kind whenever two blocks do. Blocks in no group are training
            blocks. Default: one group of all blocks.

    Returns:
        The split.

    Raises:
        InvalidParameterError: If ``block_size`` or ``val_fraction`` is out of range.
    """
    if block_size < 1:
        raise InvalidParameterError(
            f"--block-size must be >= 1; found {block_size}: give a larger one"
        )
    if not 0.0 <= val_fraction < 1.0:
        raise InvalidParameterError(
            f"--val-fraction must be in [0, 1); found {val_fraction}: give e.g. 0.25"
        )
    split = BlockSplit((int(shape[0]), int(shape[1])), int(block_size), frozenset())
    rng = np.random.default_rng(seed)
    picked: set[tuple[int, int]] = set()
    for group in [split.blocks("all")] if groups is None else groups:
        blocks = sorted(group)
        n_val = round(val_fraction * len(blocks))
        if val_fraction > 0 and len(blocks) >= 2:
            n_val = min(max(n_val, 1), len(blocks) - 1)
        picked.update(blocks[i] for i in rng.permutation(len(blocks))[:n_val])
    return BlockSplit(split.shape, split.block_size, frozenset(picked))


@dataclass(frozen=True, slots=True)
class ChipSet:
    """Chips cut from a cube with their labels.

    Attributes:
        x: ``(N, C, H, W)`` float32 model input images (`eoseg.model_input`), NaN
            where nodata.
        y: ``(N, H, W)`` uint8 class ids, 255 where unlabelled, invalid or nodata.
        origins: ``(N, 2)`` int64 top-left ``(row, col)`` of each chip in the raster.
        bands: Band names of the channel axis.
    """

    x: np.ndarray
    y: np.ndarray
    origins: np.ndarray
    bands: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.x.shape[0])


def read_window(
    cube: xr.Dataset,
    band_index: np.ndarray,
    rows: slice,
    cols: slice,
    time: TimeMode = "median",
) -> np.ndarray:
    """Read one window of a (possibly lazy) cube as model input images (`input_stack`):
    ``(n, band, h, w)`` float32, one image for the median, one per date otherwise."""
    data = cube["data"].isel(band=band_index, y=rows, x=cols).values
    valid = cube["valid"].isel(y=rows, x=cols).values if "valid" in cube else None
    return input_stack(data, valid, time)[0]


def _band_index(
    cube: xr.Dataset, bands: tuple[str, ...] | None
) -> tuple[np.ndarray, tuple[str, ...]]:
    have = tuple(str(b) for b in cube["data"]["band"].values)
    if bands is None:
        return np.arange(len(have)), have
    missing = [b for b in bands if b not in have]
    if missing:
        raise BandMismatchError(
            f"cube has bands {have}; sampling asked for {bands}, missing {tuple(missing)}: "
            "ingest the missing bands or ask for bands the cube holds"
        )
    return np.array([have.index(b) for b in bands]), tuple(bands)


def _block_counts(
    labels: xr.DataArray, split: BlockSplit, blocks: list[tuple[int, int]], ignore: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per block and class id: labelled pixels, and connected regions (4-connected)."""
    hist = np.zeros((len(blocks), 256), dtype=np.int64)
    regions = np.zeros((len(blocks), 256), dtype=np.int64)
    for i, blk in enumerate(blocks):
        r0, r1, c0, c1 = split.bounds(blk)
        lab = np.asarray(labels.isel(y=slice(r0, r1), x=slice(c0, c1)).values)
        hist[i] = np.bincount(lab.ravel(), minlength=256)[:256]
        hist[i, ignore] = 0
        for k in np.flatnonzero(hist[i]):
            regions[i, k] = ndimage.label(lab == k)[1]
    return hist, regions


class _Centres:
    """Draws chip centres in one block: a region of a class, then a pixel of it."""

    def __init__(self, lab: np.ndarray, ignore: int) -> None:
        self._lab = lab
        self._ignore = ignore
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def _regions(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if k not in self._cache:
            if k < 0:  # any labelled pixel, as one region
                flat = np.flatnonzero(self._lab.ravel() != self._ignore)
                self._cache[k] = flat, np.zeros(1, np.int64), np.array([flat.size])
            else:
                comp = ndimage.label(self._lab == k)[0].ravel()
                flat = np.flatnonzero(comp)
                order = flat[np.argsort(comp[flat], kind="stable")]  # pixels by region
                counts = np.bincount(comp[flat])[1:]
                self._cache[k] = order, np.cumsum(counts) - counts, counts
        return self._cache[k]

    def draw(self, k: int, rng: np.random.Generator) -> tuple[int, int]:
        """A pixel ``(row, col)`` of class ``k`` (any labelled pixel when ``k < 0``)."""
        order, starts, counts = self._regions(k)
        j = int(rng.integers(len(counts)))
        idx = int(order[starts[j] + rng.integers(counts[j])])
        row, col = divmod(idx, self._lab.shape[1])
        return row, col


def _part_mask(split: BlockSplit, part: Part) -> np.ndarray:
    """``(height, width)`` bool: the pixels of the blocks of ``part``."""
    rows, cols = split.grid
    member = np.zeros((rows, cols), dtype=bool)
    for block in split.blocks(part):
        member[block] = True
    h, w = split.shape
    row_block = np.minimum(np.arange(h) // split.block_size, rows - 1)
    col_block = np.minimum(np.arange(w) // split.block_size, cols - 1)
    return member[np.ix_(row_block, col_block)]


@dataclass(frozen=True, slots=True)
class _Window:
    """A block and a halo around it (half a chip, or none), clipped to the raster."""

    bounds: tuple[int, int, int, int]
    chip: int
    shape: tuple[int, int]
    halo: int

    @property
    def row0(self) -> int:
        return max(0, self.bounds[0] - self.halo)

    @property
    def col0(self) -> int:
        return max(0, self.bounds[2] - self.halo)

    @property
    def rows(self) -> slice:
        return slice(self.row0, min(self.shape[0], self.bounds[1] + self.halo))

    @property
    def cols(self) -> slice:
        return slice(self.col0, min(self.shape[1], self.bounds[3] + self.halo))

    @property
    def inner(self) -> tuple[slice, slice]:
        """The block within the window."""
        r0, r1, c0, c1 = self.bounds
        return np.s_[r0 - self.row0 : r1 - self.row0, c0 - self.col0 : c1 - self.col0]

    def chip_at(self, row: int, col: int) -> tuple[int, int]:
        """Top-left, in the window, of the chip centred on a block pixel (kept inside)."""
        height = self.rows.stop - self.row0
        width = self.cols.stop - self.col0
        half = self.chip // 2
        ry = row + self.bounds[0] - self.row0 - half
        rx = col + self.bounds[2] - self.col0 - half
        return (
            int(np.clip(ry, 0, height - self.chip)),
            int(np.clip(rx, 0, width - self.chip)),
        )


def _targets(
    hist: np.ndarray, regions: np.ndarray, count: int, balance: bool, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Per chip: the target class (-1 = any) and the block, drawn region-uniformly."""
    present = np.flatnonzero(hist.sum(axis=0))
    targets = np.empty(count, dtype=np.int64)
    chosen = np.empty(count, dtype=np.int64)
    for i in range(count):
        if balance:
            k = int(rng.choice(present))
            w = regions[:, k].astype(np.float64)
        else:
            k = -1
            w = hist.sum(axis=1).astype(np.float64)
        targets[i] = k
        chosen[i] = int(rng.choice(len(w), p=w / w.sum()))
    return targets, chosen


def sample_chips(
    cube: xr.Dataset,
    labels: xr.DataArray,
    *,
    chip_size: int,
    count: int,
    seed: int,
    ignore: int = IGNORE_ID,
    balance: bool = True,
    split: BlockSplit | None = None,
    part: Part = "all",
    bands: tuple[str, ...] | None = None,
    min_labelled: float = 0.25,
    max_block_bytes: int = 256 * 2**20,
    time: TimeMode = "median",
) -> ChipSet:
    """Sample labelled chips from a cube, optionally class-balanced and from one part.

    Args:
        cube: Dataset with ``data (time, band, y, x)`` and optionally ``valid (time, y, x)``.
        labels: ``(y, x)`` uint8 class ids on the cube's grid, ``ignore`` = no label.
        chip_size: Side of a chip in pixels.
        count: Number of chips wanted (fewer come back if too few windows qualify).
        seed: Random seed; the same inputs and seed give the same chips.
        ignore: Label id meaning *no label*.
        balance: Draw a target class uniformly among those present, then one of its
            regions (connected within a block) uniformly, and centre the chip on a
            pixel of it; otherwise centre on any labelled pixel.
        split: Block split restricting chips to ``part``; default blocks of
            ``max(4 * chip_size, 1024)`` px, all usable. A chip stays in its block
            when blocks are two chips or more; in chip-sized blocks it is centred on
            its pixel and may reach into neighbouring blocks, where the labels of
            blocks outside ``part`` are hidden (255) and their imagery stays as context.
        part: ``"train"``, ``"val"`` or ``"all"`` blocks of ``split``.
        bands: Band names to read, in order; default all cube bands.
        min_labelled: Least share of a chip that must be labelled and valid.
        max_block_bytes: Blocks whose imagery is smaller than this are read once;
            larger ones are read chip window by chip window.
        time: Model input over the dates (`eoseg.model_input`): ``"median"`` chips are
            composites; ``"per-date"`` chips are each one date (drawn among the dates
            that meet ``min_labelled``) with the same labels.

    Returns:
        The chips; ``y`` is 255 wherever the label is ``ignore`` or the imagery is nodata.

    Raises:
        InvalidParameterError: If sizes do not fit or no block can hold a chip.
        BandMismatchError: If a requested band is missing from the cube.
    """
    data = cube["data"]
    height, width = int(data.sizes["y"]), int(data.sizes["x"])
    if labels.shape != (height, width):
        raise InvalidParameterError(
            f"labels have shape {labels.shape} but the cube grid is {(height, width)}: "
            "rasterize the labels on the cube's grid"
        )
    if chip_size < 1 or chip_size > min(height, width):
        raise InvalidParameterError(
            f"--chip-size {chip_size} does not fit a {height}x{width} raster: "
            "choose a chip size between 1 and the smaller raster side"
        )
    if count < 0:
        raise InvalidParameterError(f"count must be >= 0; got {count}")
    band_index, band_names = _band_index(cube, bands)
    if count == 0:  # e.g. no validation (--val-fraction 0): no block needs to hold a chip
        return _empty(len(band_names), chip_size, band_names)
    # Default: no validation, blocks of >= 1024 px so labels are read in bounded pieces.
    split = split or BlockSplit((height, width), max(4 * chip_size, 1024), frozenset())
    blocks = [
        b
        for b in split.blocks(part)
        if min(split.bounds(b)[1] - split.bounds(b)[0], split.bounds(b)[3] - split.bounds(b)[2])
        >= chip_size
    ]
    if not blocks:
        raise InvalidParameterError(
            f"no {part!r} block of {split.block_size} px can hold a {chip_size} px chip: "
            "use larger blocks (--block-size), a smaller chip (--chip-size) or a lower "
            "validation fraction (--val-fraction)"
        )
    rng = np.random.default_rng(seed)
    hist, regions = _block_counts(labels, split, blocks, ignore)
    n_time = int(data.sizes.get("time", 1))
    if not hist.any() or count == 0:
        return _empty(len(band_names), chip_size, band_names)
    # Plan: (block, target class) per chip, then read block by block.
    targets, chosen = _targets(hist, regions, count, balance, rng)
    xs, ys, origins = [], [], []
    in_part = _part_mask(split, part)
    # A chip moves within its block when the block leaves it room (blocks of two chips or
    # more, dense labels); a chip-sized block would pin every chip to one window, so there
    # the chip is centred on its pixel and may reach into the neighbouring blocks.
    halo = chip_size // 2 if split.block_size < 2 * chip_size else 0
    for bi in np.unique(chosen):
        win = _Window(split.bounds(blocks[bi]), chip_size, (height, width), halo)
        lab = np.asarray(labels.isel(y=win.rows, x=win.cols).values)
        centres = _Centres(lab[win.inner], ignore)
        # Labels of other parts' blocks are hidden: a chip may show their imagery as
        # context, never their labels (validation stays unseen).
        lab = np.where(in_part[win.rows][:, win.cols], lab, ignore)
        nbytes = n_time * len(band_names) * lab.size * 4
        block_img = (
            read_window(cube, band_index, win.rows, win.cols, time)
            if nbytes <= max_block_bytes
            else None
        )
        for k in targets[chosen == bi]:
            for _ in range(10):  # a few tries to meet min_labelled
                ry, rx = win.chip_at(*centres.draw(int(k), rng))
                cut = np.s_[ry : ry + chip_size, rx : rx + chip_size]
                if block_img is not None:
                    images = block_img[(slice(None), slice(None), *cut)]
                else:
                    rows = slice(win.row0 + ry, win.row0 + ry + chip_size)
                    cols = slice(win.col0 + rx, win.col0 + rx + chip_size)
                    images = read_window(cube, band_index, rows, cols, time)
                chip = pick_date(
                    images, lab[cut], ignore=ignore, min_labelled=min_labelled, rng=rng
                )
                if chip is not None:
                    xs.append(chip[0])
                    ys.append(chip[1])
                    origins.append((win.row0 + ry, win.col0 + rx))
                    break
    if len(xs) < count:
        logger.warning("sampled %d of %d chips (min_labelled=%s)", len(xs), count, min_labelled)
    if not xs:
        return _empty(len(band_names), chip_size, band_names)
    return ChipSet(np.stack(xs), np.stack(ys), np.asarray(origins, np.int64), band_names)


def _empty(n_bands: int, chip_size: int, bands: tuple[str, ...]) -> ChipSet:
    x = np.zeros((0, n_bands, chip_size, chip_size), np.float32)
    y = np.zeros((0, chip_size, chip_size), np.uint8)
    return ChipSet(x, y, np.zeros((0, 2), np.int64), bands)
