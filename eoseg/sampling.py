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
from dataclasses import dataclass

import numpy as np
import xarray as xr
from scipy import ndimage

from eoseg.blocks import BlockSplit, Part, part_mask
from eoseg.classes import IGNORE_ID
from eoseg.errors import BandMismatchError, InvalidParameterError
from eoseg.model_input import TimeMode, composite, input_stack, pick_date

__all__ = ["ChipSet", "composite", "read_window", "sample_chips"]

logger = logging.getLogger(__name__)


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
    _check_sizes(labels.shape, (height, width), chip_size, count)
    band_index, band_names = _band_index(cube, bands)
    if count == 0:  # e.g. no validation (--val-fraction 0): no block needs to hold a chip
        return _empty(len(band_names), chip_size, band_names)
    # Default: no validation, blocks of >= 1024 px so labels are read in bounded pieces.
    split = split or BlockSplit((height, width), max(4 * chip_size, 1024), frozenset())
    blocks = _usable_blocks(split, part, chip_size)
    rng = np.random.default_rng(seed)
    hist, regions = _block_counts(labels, split, blocks, ignore)
    if not hist.any():
        return _empty(len(band_names), chip_size, band_names)
    # Plan: (block, target class) per chip, then read block by block.
    targets, chosen = _targets(hist, regions, count, balance, rng)
    in_part = part_mask(split, part)
    # A chip moves within its block when the block leaves it room (blocks of two chips or
    # more, dense labels); a chip-sized block would pin every chip to one window, so there
    # the chip is centred on its pixel and may reach into the neighbouring blocks.
    halo = chip_size // 2 if split.block_size < 2 * chip_size else 0
    reader = _BlockReader(
        cube, band_index, time, max_block_bytes, n_time=int(data.sizes.get("time", 1))
    )
    picked: list[tuple[np.ndarray, np.ndarray, tuple[int, int]]] = []
    for bi in np.unique(chosen):
        win = _Window(split.bounds(blocks[bi]), chip_size, (height, width), halo)
        picked += _sample_block(
            win, labels, in_part, reader, targets[chosen == bi], rng,
            ignore=ignore, min_labelled=min_labelled,
        )  # fmt: skip
    if len(picked) < count:
        logger.warning("sampled %d of %d chips (min_labelled=%s)", len(picked), count, min_labelled)
    if not picked:
        return _empty(len(band_names), chip_size, band_names)
    xs, ys, origins = zip(*picked, strict=True)
    return ChipSet(np.stack(xs), np.stack(ys), np.asarray(origins, np.int64), band_names)


def _check_sizes(
    labels_shape: tuple[int, ...], shape: tuple[int, int], chip_size: int, count: int
) -> None:
    height, width = shape
    if labels_shape != shape:
        raise InvalidParameterError(
            f"labels have shape {labels_shape} but the cube grid is {shape}: "
            "rasterize the labels on the cube's grid"
        )
    if chip_size < 1 or chip_size > min(height, width):
        raise InvalidParameterError(
            f"--chip-size {chip_size} does not fit a {height}x{width} raster: "
            "choose a chip size between 1 and the smaller raster side"
        )
    if count < 0:
        raise InvalidParameterError(f"count must be >= 0; got {count}")


def _usable_blocks(split: BlockSplit, part: Part, chip_size: int) -> list[tuple[int, int]]:
    """The blocks of ``part`` that hold a chip."""

    def side(block: tuple[int, int]) -> int:
        r0, r1, c0, c1 = split.bounds(block)
        return min(r1 - r0, c1 - c0)

    blocks = [b for b in split.blocks(part) if side(b) >= chip_size]
    if not blocks:
        raise InvalidParameterError(
            f"no {part!r} block of {split.block_size} px can hold a {chip_size} px chip: "
            "use larger blocks (--block-size), a smaller chip (--chip-size) or a lower "
            "validation fraction (--val-fraction)"
        )
    return blocks


@dataclass(frozen=True, slots=True)
class _BlockReader:
    """Reads a block's imagery once when it is small, else chip window by chip window."""

    cube: xr.Dataset
    band_index: np.ndarray
    time: TimeMode
    max_block_bytes: int
    n_time: int

    def block(self, win: _Window) -> np.ndarray | None:
        """The window's model input images, or None when it is too large to hold."""
        h, w = win.rows.stop - win.rows.start, win.cols.stop - win.cols.start
        if self.n_time * len(self.band_index) * h * w * 4 > self.max_block_bytes:
            return None
        return read_window(self.cube, self.band_index, win.rows, win.cols, self.time)

    def chip(self, win: _Window, block: np.ndarray | None, ry: int, rx: int) -> np.ndarray:
        """The images of the chip at ``(ry, rx)`` in the window."""
        size = win.chip
        if block is not None:
            return block[:, :, ry : ry + size, rx : rx + size]
        rows = slice(win.row0 + ry, win.row0 + ry + size)
        cols = slice(win.col0 + rx, win.col0 + rx + size)
        return read_window(self.cube, self.band_index, rows, cols, self.time)


def _sample_block(
    win: _Window,
    labels: xr.DataArray,
    in_part: np.ndarray,
    reader: _BlockReader,
    targets: np.ndarray,
    rng: np.random.Generator,
    *,
    ignore: int,
    min_labelled: float,
) -> list[tuple[np.ndarray, np.ndarray, tuple[int, int]]]:
    """The chips of one block, one per target class: ``(images, labels, origin)``."""
    lab = np.asarray(labels.isel(y=win.rows, x=win.cols).values)
    centres = _Centres(lab[win.inner], ignore)
    # Labels of other parts' blocks are hidden: a chip may show their imagery as
    # context, never their labels (validation stays unseen).
    lab = np.where(in_part[win.rows][:, win.cols], lab, ignore)
    block = reader.block(win)
    out = []
    size = win.chip
    for k in targets:
        for _ in range(10):  # a few tries to meet min_labelled
            ry, rx = win.chip_at(*centres.draw(int(k), rng))
            chip = pick_date(
                reader.chip(win, block, ry, rx), lab[ry : ry + size, rx : rx + size],
                ignore=ignore, min_labelled=min_labelled, rng=rng,
            )  # fmt: skip
            if chip is not None:
                out.append((chip[0], chip[1], (win.row0 + ry, win.col0 + rx)))
                break
    return out


def _empty(n_bands: int, chip_size: int, bands: tuple[str, ...]) -> ChipSet:
    x = np.zeros((0, n_bands, chip_size, chip_size), np.float32)
    y = np.zeros((0, chip_size, chip_size), np.uint8)
    return ChipSet(x, y, np.zeros((0, 2), np.int64), bands)
