"""A survey of labels: where they are, their regions, and how much of a chip they fill.

One pass over a labels raster, window by window (memory stays bounded), gathers what
the sampling plan (`eoseg.train.plan`) derives its defaults from: labelled pixels per
small cell (so the labelled blocks of any block size that is a multiple of the cell are
counted without reading the labels again), and the connected *regions* of each class
(a hand-drawn polygon is one region) with, for a pixel drawn in each region, the
labelled share of a chip of each candidate size centred on it.

Regions are found within a survey window: a polygon cut by a window edge counts twice,
which moves the statistics little (windows are at least 1024 px).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import xarray as xr
from scipy import ndimage

from eoseg.classes import IGNORE_ID

CELL = 32
"""Side in pixels of the cells labelled pixels are counted in."""
WINDOW = 1024
"""Least side in pixels of the windows labels are read in."""


@dataclass(frozen=True, slots=True)
class LabelSurvey:
    """What one labels raster holds.

    Attributes:
        shape: ``(height, width)`` of the raster.
        cells: Labelled pixels per `CELL` x `CELL` cell, ``(ceil(h / CELL), ceil(w / CELL))``.
        region_class: ``(R,)`` class id of each region.
        region_area: ``(R,)`` pixels of each region.
        region_pixel: ``(R, 2)`` ``(row, col)`` of a pixel drawn at random in each region.
        shares: Chip size -> ``(R,)`` labelled share of that chip centred on ``region_pixel``.
    """

    shape: tuple[int, int]
    cells: np.ndarray
    region_class: np.ndarray
    region_area: np.ndarray
    region_pixel: np.ndarray
    shares: dict[int, np.ndarray]

    @property
    def labelled(self) -> int:
        """Labelled pixels."""
        return int(self.cells.sum())

    @property
    def regions(self) -> int:
        """Connected regions (all classes)."""
        return len(self.region_class)

    def share(self, chip_size: int, q: float) -> float:
        """Quantile ``q`` of the labelled share of chips centred on regions (0 if none)."""
        values = self.shares[chip_size]
        return float(np.quantile(values, q)) if values.size else 0.0

    def blocks(self, block_size: int, shape: tuple[int, int] | None = None) -> set[tuple[int, int]]:
        """The blocks holding labels when the raster is cut as `eoseg.blocks.BlockSplit`
        cuts it (the last row and column absorbing the remainder).

        ``block_size`` must be a multiple of `CELL`.
        """
        h, w = shape or self.shape
        rows, cols = max(1, h // block_size), max(1, w // block_size)
        ci, cj = np.nonzero(self.cells)
        bi = np.minimum(ci * CELL // block_size, rows - 1)
        bj = np.minimum(cj * CELL // block_size, cols - 1)
        return {(int(r), int(c)) for r, c in zip(bi, bj, strict=True)}


def survey_labels(
    labels: xr.DataArray,
    chip_sizes: Iterable[int],
    *,
    seed: int = 0,
    ignore: int = IGNORE_ID,
) -> LabelSurvey:
    """Survey a ``(y, x)`` labels raster (possibly lazy), window by window.

    Args:
        labels: Class ids, ``ignore`` = no label.
        chip_sizes: Chip sizes whose labelled share is measured.
        seed: Seed of the pixel drawn in each region.
        ignore: Label id meaning *no label*.

    Returns:
        The survey.
    """
    sizes = sorted({int(c) for c in chip_sizes})
    h, w = (int(n) for n in labels.shape)
    step = max(WINDOW, -(-2 * max(sizes, default=0) // CELL) * CELL)
    cells = np.zeros((-(-h // CELL), -(-w // CELL)), np.int64)
    rng = np.random.default_rng(seed)
    parts: list[tuple[np.ndarray, ...]] = []
    for r0 in range(0, h, step):
        for c0 in range(0, w, step):
            lab = np.asarray(labels.isel(y=slice(r0, r0 + step), x=slice(c0, c0 + step)).values)
            mask = lab != ignore
            sums = _cell_sums(mask)  # step is a multiple of CELL: windows align to cells
            i, j = r0 // CELL, c0 // CELL
            cells[i : i + sums.shape[0], j : j + sums.shape[1]] += sums
            if mask.any():
                parts.append(_regions(lab, mask, (r0, c0), sizes, rng))
    if parts:
        cls, area, pix, *share = (np.concatenate(p) for p in zip(*parts, strict=True))
    else:
        cls, area, pix = np.zeros(0, np.uint8), np.zeros(0, np.int64), np.zeros((0, 2), np.int64)
        share = [np.zeros(0) for _ in sizes]
    return LabelSurvey((h, w), cells, cls, area, pix, dict(zip(sizes, share, strict=True)))


def _cell_sums(mask: np.ndarray) -> np.ndarray:
    """Labelled pixels per cell of one window (its last cells may be partial)."""
    h, w = mask.shape
    padded = np.zeros((-(-h // CELL) * CELL, -(-w // CELL) * CELL), np.int64)
    padded[:h, :w] = mask
    return padded.reshape(padded.shape[0] // CELL, CELL, -1, CELL).sum(axis=(1, 3))


def _regions(
    lab: np.ndarray,
    mask: np.ndarray,
    origin: tuple[int, int],
    sizes: list[int],
    rng: np.random.Generator,
) -> tuple[np.ndarray, ...]:
    """Class, area, a random pixel and chip shares of each region of one window."""
    h, w = lab.shape
    # Integral image of the labelled mask: any window's labelled count in O(1).
    integral = np.zeros((h + 1, w + 1), np.int64)
    integral[1:, 1:] = mask.cumsum(axis=0).cumsum(axis=1)
    classes, areas, pixels = [], [], []
    for k in np.unique(lab[mask]):
        comp, n = ndimage.label(lab == k)
        flat = rng.permutation(np.flatnonzero(comp))
        ids = comp.ravel()[flat]
        _, first = np.unique(ids, return_index=True)  # a random pixel per region, by id
        classes.append(np.full(n, k, np.uint8))
        areas.append(np.bincount(ids, minlength=n + 1)[1:])
        pixels.append(np.stack(np.divmod(flat[first], w), axis=1))
    pix = np.concatenate(pixels)
    shares = []
    for c in sizes:
        # The chip is clipped to the window as sampling clips it to a block.
        y0 = np.clip(pix[:, 0] - c // 2, 0, max(h - c, 0))
        x0 = np.clip(pix[:, 1] - c // 2, 0, max(w - c, 0))
        y1, x1 = np.minimum(y0 + c, h), np.minimum(x0 + c, w)
        inside = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
        shares.append(inside / float(c * c))
    pix = pix + np.asarray(origin, np.int64)
    return (np.concatenate(classes), np.concatenate(areas), pix, *shares)
