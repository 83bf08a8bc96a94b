"""The validation split of a training run: blocks among the labelled ones, or regions.

Validation blocks are drawn among the blocks that hold labels (of the last stage first,
then of the others), not over the whole grid, so that a few polygons on a large scene
still get validation. When the last stage's labels lie in one block but form two regions
or more, whole regions are held out instead (`RegionHoldout`). `eoseg.train.plan` decides
the block size and explains the choice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import dask.array as da
import numpy as np
import xarray as xr
from scipy import ndimage

from eoseg.blocks import BlockSplit, Part, split_blocks
from eoseg.classes import IGNORE_ID
from eoseg.train.survey import CELL, LabelSurvey

if TYPE_CHECKING:
    from eoseg.train.config import TrainConfig


@dataclass(frozen=True, slots=True)
class RegionHoldout:
    """Whole regions of one stage's labels held out for validation.

    Attributes:
        stage: The stage whose labels it splits.
        bounds: ``(row0, row1, col0, col1)`` of the window holding the regions.
        mask: Boolean mask over that window, True on held-out pixels.
        regions: Number of held-out regions.
    """

    stage: str
    bounds: tuple[int, int, int, int]
    mask: np.ndarray
    regions: int

    def apply(self, labels: xr.DataArray, part: Part) -> xr.DataArray:
        """The labels of ``part``: the held-out pixels only (``"val"``) or all but them."""
        r0, r1, c0, c1 = self.bounds
        h, w = labels.shape
        held = da.pad(da.from_array(self.mask), ((r0, h - r1), (c0, w - c1)))
        keep = held if part == "val" else ~held
        return labels.where(xr.DataArray(keep, dims=labels.dims), IGNORE_ID)


def labelled_blocks(survey: LabelSurvey, labels: xr.DataArray, block: int) -> set[tuple[int, int]]:
    """The blocks of ``block`` px that hold labels of a stage (from its survey when the
    size is a multiple of the survey's cells, else read)."""
    if block % CELL == 0:
        return survey.blocks(block)
    split = BlockSplit(survey.shape, block, frozenset())  # an odd explicit size: read
    out = set()
    for b in split.blocks("all"):
        r0, r1, c0, c1 = split.bounds(b)
        if (np.asarray(labels.isel(y=slice(r0, r1), x=slice(c0, c1)).values) != IGNORE_ID).any():
            out.add(b)
    return out


def split_stages(
    shape: tuple[int, int],
    surveys: Mapping[str, LabelSurvey],
    labels: Mapping[str, xr.DataArray],
    config: TrainConfig,
    block: int,
) -> tuple[BlockSplit, RegionHoldout | None, list[str]]:
    """The block split among labelled blocks, and a region holdout where it cannot split.

    Returns:
        ``(split, holdout, why)``: the split, the regions held out (or None) and the
        lines of the plan's explanation.
    """
    stages = list(surveys)[::-1]  # the last stage's blocks first
    groups: list[set[tuple[int, int]]] = []
    for stage in stages:
        seen = set().union(*groups)
        groups.append(labelled_blocks(surveys[stage], labels[stage], block) - seen)
    split = split_blocks(
        shape, block_size=block, val_fraction=config.val_fraction, seed=config.seed, groups=groups
    )
    counts = ", ".join(f"{s}: {len(g)}" for s, g in zip(stages, groups, strict=True))
    why = [
        f"split: {len(split.val_blocks)} validation blocks drawn ({config.val_fraction:.0%}) "
        f"among the blocks holding labels ({counts})"
    ]
    final = stages[0]
    if config.val_fraction == 0 or len(groups[0]) != 1 or surveys[final].regions < 2:
        return split, None, why
    holdout = _hold_out_regions(final, labels[final], split, next(iter(groups[0])), config)
    if holdout is not None:
        why.append(
            f"split: the {final} labels lie in one {block} px block; {holdout.regions} of "
            "its regions are held out for validation (their pixels masked for training)"
        )
    return split, holdout, why


def _hold_out_regions(
    stage: str, labels: xr.DataArray, split: BlockSplit, block: tuple[int, int], config: TrainConfig
) -> RegionHoldout | None:
    bounds = split.bounds(block)
    r0, r1, c0, c1 = bounds
    lab = np.asarray(labels.isel(y=slice(r0, r1), x=slice(c0, c1)).values)
    comps: list[tuple[np.ndarray, int]] = []
    for k in np.unique(lab[lab != IGNORE_ID]):
        comp, n = ndimage.label(lab == k)
        comps.extend((comp, i) for i in range(1, n + 1))
    if len(comps) < 2:
        return None
    n_val = min(max(round(config.val_fraction * len(comps)), 1), len(comps) - 1)
    rng = np.random.default_rng(config.seed)
    mask = np.zeros(lab.shape, bool)
    for j in rng.permutation(len(comps))[:n_val]:
        comp, i = comps[j]
        mask |= comp == i
    return RegionHoldout(stage, bounds, mask, n_val)
