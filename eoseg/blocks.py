"""Spatial blocks: a raster cut into square blocks, each for training or validation.

Training chips and validation chips are drawn from different blocks (`eoseg.sampling`),
so that validation never sees a pixel, or the immediate surroundings of a pixel, that
training saw: a spatial hold-out rather than a random split of overlapping chips, whose
neighbouring pixels are alike and would overstate accuracy.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from eoseg.errors import InvalidParameterError

__all__ = ["BlockSplit", "Part", "part_mask", "split_blocks"]

Part = Literal["train", "val", "all"]
"""The blocks of a split that chips come from."""


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


def part_mask(split: BlockSplit, part: Part) -> np.ndarray:
    """``(height, width)`` bool: the pixels of the blocks of ``part``."""
    rows, cols = split.grid
    member = np.zeros((rows, cols), dtype=bool)
    for block in split.blocks(part):
        member[block] = True
    h, w = split.shape
    row_block = np.minimum(np.arange(h) // split.block_size, rows - 1)
    col_block = np.minimum(np.arange(w) // split.block_size, cols - 1)
    return member[np.ix_(row_block, col_block)]
