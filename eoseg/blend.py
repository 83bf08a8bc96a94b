"""Chip lattices and their blending windows: how chips cover a grid without seams.

A `Lattice` lays chips of ``chip`` px every ``stride = chip - overlap`` px over the whole
grid, the first one starting ``overlap`` px before the grid's corner. A chip's weight is
flat (one) in its middle and ramps up over its first ``overlap`` px and down over its last
``overlap`` px with ``sin²``; a chip's falling ramp lies exactly on its neighbour's rising
one, and ``cos² + sin² = 1``, so the weights of overlapping chips add up to exactly one.
Each pixel is computed about ``(chip / stride)²`` times, plus the chips that cross a
tile's edge, which both tiles compute (`Lattice.passes`): ``overlap = chip / 2`` is the
classic four-fold ``sin²`` blend, a small overlap little more than once.

The lattice belongs to the grid, not to a tile: a pixel gets the same chips (and the same
mirrored padding beyond the grid's edge, see `mirror_index`) whichever tile computes it,
so tiles of any size, or one in-memory image, make the same map.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from eoseg.errors import InvalidParameterError

PREDICT_CHIP = 256
"""The default prediction chip (px) of a network trained on smaller chips (`default_lattice`)."""
PREDICT_OVERLAP = 16
"""The default overlap (px) of prediction chips up to 256 px; a sixteenth of larger ones."""
MAX_PREDICT_CHIP = 1024
"""The largest default prediction chip (px): larger ones gain little and cost memory."""


@dataclass(frozen=True, slots=True)
class Lattice:
    """Chips of ``chip`` px every ``chip - overlap`` px on the grid, blended over ``overlap``.

    Attributes:
        chip: Chip side in pixels (a multiple of the network's stride ``2**depth``).
        overlap: Pixels shared by neighbouring chips, ``0 <= overlap <= chip / 2``.
    """

    chip: int
    overlap: int

    @property
    def stride(self) -> int:
        """Pixels between the starts of neighbouring chips."""
        return self.chip - self.overlap

    def ramp(self) -> np.ndarray:
        """The 1-D float64 weights of a chip: ``sin²`` ramps of ``overlap`` px, flat between."""
        weights = np.ones(self.chip)
        if self.overlap:
            up = np.sin(0.5 * np.pi * (np.arange(self.overlap) + 0.5) / self.overlap) ** 2
            weights[: self.overlap] = up
            weights[self.chip - self.overlap :] = up[::-1]
        return weights

    def weights(self) -> np.ndarray:
        """The 2-D float32 weights of a chip (outer product of `ramp`)."""
        ramp = self.ramp()
        return np.outer(ramp, ramp).astype("float32")

    def span(self, start: int, stop: int) -> tuple[int, int]:
        """The window (grid pixels ``[lo, hi)`` along one axis) of every chip that touches
        pixels ``[start, stop)``; it starts and ends on chips of the lattice.

        Its interior, ``[lo + overlap, hi - overlap)``, is where the chips' weights add up
        to one; it holds ``[start, stop)``.
        """
        first = (start + self.overlap - self.chip) // self.stride + 1
        last = -(-(stop + self.overlap) // self.stride) - 1
        return first * self.stride - self.overlap, last * self.stride - self.overlap + self.chip

    def starts(self, size: int) -> range:
        """Offsets of the chips inside a window of ``size`` px from `span`."""
        return range(0, size - self.chip + 1, self.stride)

    def passes(self, tile_height: int, tile_width: int) -> float:
        """Pixels the network computes per output pixel of a tile at the grid's corner."""
        rows, cols = (self.span(0, n) for n in (tile_height, tile_width))
        chips = len(self.starts(rows[1] - rows[0])) * len(self.starts(cols[1] - cols[0]))
        return chips * self.chip**2 / (tile_height * tile_width)

    def to_dict(self) -> dict[str, int]:
        """``{"chip_size": ..., "overlap": ...}`` (as the model card and provenance write it)."""
        return {"chip_size": self.chip, "overlap": self.overlap}


def default_lattice(train_chip: int, depth: int, context: str = "none") -> Lattice:
    """The prediction lattice of a network trained on ``train_chip`` px chips: the one place
    the default is set (training records it in the model card; an older card gets it here).

    A plain U-Net is fully convolutional: it predicts chips of `PREDICT_CHIP` px (the
    training chip when larger, at most `MAX_PREDICT_CHIP`; a multiple of ``2**depth``)
    blended over `PREDICT_OVERLAP` px (a sixteenth of a larger chip). What a pixel costs is
    set by the tiles as much as by the chips: every chip that crosses a tile's edge is
    computed by both tiles, so on 2048 px tiles 256 px chips overlapping by 16 px compute
    each pixel 1.41 times, where 384 px chips overlapping by 128 px did 2.85 times and
    512-1024 px chips 1.7-2.4 times; and on a CPU a U-Net's convolutions run 13-30 % slower
    per pixel on 512-1024 px chips than on 256 px ones (cache). On the demo this default
    lost 0.06 mIoU points against the four-fold blend of training chips (0.95556 against
    0.95617; the former 1.5x chips with half-chip overlap lost 0.05). A network with
    image pooling (``"aspp"``) sees a chip's mean, so it keeps the training chip and the
    four-fold blend.
    """
    factor = 2**depth
    if context != "none":
        return Lattice(train_chip, train_chip // 2)
    chip = max(train_chip, min(max(train_chip, PREDICT_CHIP), MAX_PREDICT_CHIP) // factor * factor)
    return Lattice(chip, min(chip // 2, max(PREDICT_OVERLAP, chip // 16)))


def check_lattice(chip: int, overlap: int, depth: int) -> Lattice:
    """The lattice of ``--chip-size``/``--overlap``, refused when the network cannot run it.

    Raises:
        InvalidParameterError: A chip that is not a positive multiple of ``2**depth``, or
            an overlap outside ``0..chip/2``.
    """
    factor = 2**depth
    if chip < factor or chip % factor:
        raise InvalidParameterError(
            f"--chip-size must be a positive multiple of {factor} (the network halves it "
            f"{depth} times); found {chip}: choose e.g. {max(factor, chip // factor * factor)}"
        )
    if not 0 <= overlap <= chip // 2:
        raise InvalidParameterError(
            f"--overlap must be 0..{chip // 2} px (at most half of --chip-size {chip}, so "
            f"only neighbouring chips overlap); found {overlap}: choose e.g. {chip // 8}, "
            f"or {chip // 2} for the four-fold blend"
        )
    return Lattice(chip, overlap)


def fit_lattice(lattice: Lattice, height: int, width: int, depth: int) -> Lattice:
    """The lattice with its chip shrunk to the smallest one (a multiple of ``2**depth``)
    that covers a ``height x width`` grid whole, when that is smaller: the same one chip
    per grid, without computing padding. Depends on the grid only, not on its tiles."""
    factor = 2**depth
    whole = -(-(max(height, width) + 2 * lattice.overlap) // factor) * factor
    return Lattice(whole, lattice.overlap) if whole < lattice.chip else lattice


def mirror_index(start: int, stop: int, size: int) -> np.ndarray:
    """Grid indices ``[start, stop)`` folded into ``0..size-1`` by mirroring at the edges
    (``-1 -> 1``, ``size -> size - 2``; a one-pixel axis repeats its pixel).

    A function of grid indices alone, so every tile pads the grid's edge the same way.
    """
    index = np.arange(start, stop)
    if size == 1:
        return np.zeros_like(index)
    period = 2 * (size - 1)
    folded = np.mod(index, period)
    return np.where(folded < size, folded, period - folded)


def read_mirrored(data: Any, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    """The window ``rows x cols`` (grid pixel bounds, which may pass the edges) of an array
    whose last two axes are ``(y, x)`` (an `xarray.DataArray` or NumPy array), mirrored
    beyond the grid's edge by `mirror_index`; leading axes (time, band) are read whole.

    A Zarr-backed array is read one storage chunk at a time (its ``preferred_chunks``):
    read at once, every chunk the window touches is decoded at the same time, and a
    tile's halo touches up to eight neighbours (nine whole chunks, 576 MB of a float32
    cube of 2048 px tiles and 4 bands, for a 90 MB window), so a worker's memory grew
    from a one-tile grid to a larger one.
    """
    encoding = getattr(data, "encoding", None) or {}
    chunks = encoding.get("preferred_chunks", {})
    dims = getattr(data, "dims", ())
    row_pieces = _pieces(rows, chunks.get(dims[-2]) if dims else None)
    col_pieces = _pieces(cols, chunks.get(dims[-1]) if dims else None)
    if len(row_pieces) * len(col_pieces) == 1:
        return _read_mirrored_once(data, rows, cols)
    out = np.empty((*data.shape[:-2], rows[1] - rows[0], cols[1] - cols[0]), data.dtype)
    for r0, r1 in row_pieces:
        for c0, c1 in col_pieces:
            piece = _read_mirrored_once(data, (r0, r1), (c0, c1))
            out[..., r0 - rows[0] : r1 - rows[0], c0 - cols[0] : c1 - cols[0]] = piece
    return out


def _read_mirrored_once(data: Any, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    iy = mirror_index(*rows, int(data.shape[-2]))
    ix = mirror_index(*cols, int(data.shape[-1]))
    y0, x0 = int(iy.min()), int(ix.min())
    core = np.asarray(data[..., y0 : int(iy.max()) + 1, x0 : int(ix.max()) + 1])
    return np.take(np.take(core, iy - y0, axis=-2), ix - x0, axis=-1)


def _pieces(span: tuple[int, int], chunk: int | None) -> list[tuple[int, int]]:
    """``span`` cut at the multiples of ``chunk`` (whole when the chunk is unknown): each
    piece lies in one chunk, or in one or two once mirrored beyond the grid's edge."""
    start, stop = span
    if not chunk:
        return [span]
    edges = [start, *range((start // chunk + 1) * chunk, stop, chunk), stop]
    return list(itertools.pairwise(edges))
