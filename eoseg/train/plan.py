"""The sampling plan of a training run: what the labels allow, decided in one place.

`TrainConfig` fields left at None (``chip_size``, ``block_size``, ``min_labelled``,
``train_chips``, ``val_chips``) are derived here from a survey of each stage's labels
(`eoseg.train.survey`); explicit values are kept, and refused, naming the CLI flag to
change, when they cannot fit. The rules, so that a few dozen small polygons on a small
scene train as readily as labels that cover the whole scene:

- chip size: the largest of 256/128/64/32 (divisible by ``2**depth``, within the scene)
  whose chips centred on labelled regions are at least `SHARE_FLOOR` labelled (median)
  and whose blocks put the labels of the last stage in two blocks or more (so that
  validation can hold some); else the smallest. Labels covering the scene get 256 px
  chips; small polygons get small chips (the loss ignores unlabelled pixels, so a large
  chip around a small polygon is mostly compute spent on context).
- block size: twice the chip (as before) when every stage's labels then lie in at least
  `DENSE_BLOCKS` blocks, else the chip size.
- split: validation blocks are drawn among the blocks that hold labels (of the last
  stage, then of the others), not over the whole grid. When the last stage's labels lie
  in one block but form two regions or more, whole regions are held out instead
  (`eoseg.train.split.RegionHoldout`).
- min_labelled: half the 10th percentile of the labelled share of chips centred on
  labelled regions, at most 0.25 (the threshold for dense labels) and at least one pixel.
- train_chips, val_chips: 4 per training region (32 to 128) and 4 per validation region
  (8 to 32); dense labels keep 128 and 32.
- epochs (pretraining): about `TARGET_STEPS` optimiser steps, 10 to 60 epochs. An epoch
  is one pass over the stage's chips, so a few small polygons (32 small chips, 4 steps
  an epoch) would otherwise stop after 40 steps, far from trained, while their epochs
  cost next to nothing; dense labels (16 steps an epoch) keep about 20 epochs.
- refit: when the last stage validates and its labels are sparse (not `dense`) and form
  at most `REFIT_REGIONS` regions, a final fit on all of them (training and validation),
  from the weights that stage started with, for the epochs it ran (`eoseg.train.refit`),
  ending on the mean of its weights after its first tenth (`eoseg.train.average`): with a few
  dozen polygons every one counts (holding a quarter out cost about 0.06 in held-out
  accuracy on eolearn_slovenia, and made the result depend on which ones), and such a
  fit costs a minute; such a run then trains an ensemble (`eoseg.train.ensemble`). Its
  chips: 4 per region (32 to 128). Dense labels (a building
  raster) keep the validated model: holding some out costs little there.
- largest chip: the device's (`eoseg.train.network.DEVICE_DEFAULTS`: 256 px on a GPU,
  64 px on a CPU), passed in as ``max_chip``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from eoseg.blocks import BlockSplit, Part
from eoseg.errors import InvalidParameterError, NoOverlapError
from eoseg.train.split import RegionHoldout, labelled_blocks, split_stages
from eoseg.train.survey import LabelSurvey, survey_labels

if TYPE_CHECKING:
    from eoseg.train.config import TrainConfig

logger = logging.getLogger(__name__)

CHIP_SIZES = (256, 128, 64, 32)
"""Chip sizes tried, largest first."""
SHARE_FLOOR = 0.05
"""Least median labelled share of a chip centred on a labelled region."""
DENSE_BLOCKS = 4
"""Labelled blocks of twice the chip size each stage needs for blocks of that size."""
DENSE_MIN_LABELLED = 0.25
"""The labelled share asked of a chip when labels are dense; the derived value's cap."""
TARGET_STEPS = 300
"""Optimiser steps the derived pretraining epochs aim at."""
EPOCH_RANGE = (10, 60)
"""Least and most derived pretraining epochs."""
REFIT_REGIONS = 1000
"""Most labelled regions of the last stage for which the refit on all labels is derived."""


@dataclass(frozen=True, slots=True)
class StagePlan:
    """What one stage samples.

    Attributes:
        stage: ``"pretrain"`` or ``"finetune"``.
        min_labelled: Least labelled, valid share of a chip.
        train_chips: Training chips to sample.
        val_chips: Validation chips to sample.
        labelled_pixels: Labelled pixels of the stage's labels.
        train_regions: Labelled regions in training blocks (or not held out).
        val_regions: Labelled regions in validation blocks (or held out).
        val_note: Why the stage has no validation, if so.
        epochs: Epochs of the stage (pretraining: derived unless given; fine-tuning:
            ``finetune_epochs``).
        class_pixels: Labelled pixels per class id (index = id, up to the largest id
            present): the class prior of the stage's labels (`eoseg.train.prior`).
        dense: Whether the labels are dense (chips centred on their regions are mostly
            labelled: the derived labelled share reaches `DENSE_MIN_LABELLED`).
    """

    stage: str
    min_labelled: float
    train_chips: int
    val_chips: int
    labelled_pixels: int
    train_regions: int
    val_regions: int
    val_note: str | None = None
    epochs: int = 0
    class_pixels: tuple[int, ...] = ()
    dense: bool = False


@dataclass(frozen=True, slots=True)
class SamplingPlan:
    """Chip size, blocks, split and per-stage chip counts of a training run.

    Attributes:
        chip_size: Chip side in pixels.
        block_size: Least block side of the split.
        split: The train/validation block split.
        stages: One plan per stage, in training order.
        holdout: Regions held out for validation when blocks cannot split the labels.
        refit_chips: Chips of the final fit on all the last stage's labels (0: none).
        derived: Names of the `TrainConfig` fields derived from the labels.
        why: One sentence per decision.
    """

    chip_size: int
    block_size: int
    split: BlockSplit
    stages: tuple[StagePlan, ...]
    holdout: RegionHoldout | None
    derived: tuple[str, ...]
    why: tuple[str, ...]
    refit_chips: int = 0

    def stage(self, name: str) -> StagePlan:
        """The plan of stage ``name``."""
        return next(s for s in self.stages if s.stage == name)

    def source(self, stage: str, labels: xr.DataArray, part: Part) -> tuple[xr.DataArray, Part]:
        """The labels and block part that ``stage``'s chips of ``part`` are drawn from."""
        h = self.holdout
        if h is None:
            return labels, part
        if part == "val":  # the held-out regions lie in a training block
            return (h.apply(labels, "val"), "train") if stage == h.stage else (labels, "val")
        return h.apply(labels, "train"), "train"  # no stage trains on held-out pixels

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record for the model card."""
        return {
            "chip_size": self.chip_size,
            "block_size": self.block_size,
            "split": "regions" if self.holdout else "blocks",
            "blocks": len(self.split.blocks("all")),
            "val_blocks": len(self.split.val_blocks),
            "stages": {
                s.stage: {k: getattr(s, k) for k in StagePlan.__dataclass_fields__}
                for s in self.stages
            },
            "refit_chips": self.refit_chips,
            "derived": list(self.derived),
            "why": list(self.why),
        }


def plan_sampling(
    labels: Mapping[str, xr.DataArray], config: TrainConfig, max_chip: int = CHIP_SIZES[0]
) -> SamplingPlan:
    """Decide chip size, blocks, split and chip counts from each stage's labels.

    Args:
        labels: ``(y, x)`` labels per stage, in training order (the last one's
            validation gives the model's quality figure).
        config: Training options with ``depth`` set (`resolve_network`); its None
            sampling fields and ``epochs`` are derived.
        max_chip: Largest chip side to derive (the device's).

    Returns:
        The plan.

    Raises:
        InvalidParameterError: If an explicit size cannot fit the scene or its labels.
        NoOverlapError: If a stage's labels hold no labelled pixel.
    """
    stages = list(labels)
    shape = (int(labels[stages[0]].shape[0]), int(labels[stages[0]].shape[1]))
    sizes = _chip_candidates(shape, config, max_chip)
    surveys = {s: survey_labels(lab, sizes, seed=config.seed) for s, lab in labels.items()}
    for stage, survey in surveys.items():
        if survey.labelled == 0:
            raise NoOverlapError(
                f"the {stage} labels hold no labelled pixel (all 255) on the cube's grid: "
                "check that the labels overlap the cube and were rasterized onto it"
            )
    chip, block, why = _choose_sizes(shape, surveys, labels, config, sizes)
    split, holdout, split_why = split_stages(shape, surveys, labels, config, block)
    plans = tuple(
        _stage_plan(s, surveys[s], labels[s], chip, split, holdout, config) for s in stages
    )
    refit_chips, refit_why = _refit(plans[-1], config)
    derived = tuple(
        f
        for f in (
            "chip_size", "block_size", "min_labelled", "train_chips", "val_chips", "epochs",
            "refit",
        )
        if getattr(config, f) is None
    )  # fmt: skip
    pre = plans[0]
    epochs_why = f"epochs {pre.epochs}: " + (
        "given"
        if config.epochs is not None
        else f"about {TARGET_STEPS} steps of {config.batch_size} chips over "
        f"{pre.train_chips} chips, within {EPOCH_RANGE}"
    )
    plan = SamplingPlan(
        chip, block, split, plans, holdout, derived, (*why, *split_why, epochs_why, refit_why),
        refit_chips,
    )  # fmt: skip
    for line in plan.why:
        logger.info("sampling plan: %s", line)
    return plan


def _refit(last: StagePlan, config: TrainConfig) -> tuple[int, str]:
    """Chips of the final fit on all the last stage's labels (0: none), and why."""
    regions = last.train_regions + last.val_regions
    if last.val_chips == 0:
        return 0, "refit: none (no validation: the last stage trains on all its labels)"
    if config.refit is False:
        return 0, "refit: none (--no-refit)"
    if config.refit is None and (regions > REFIT_REGIONS or last.dense):
        why = f"{regions} regions > {REFIT_REGIONS}" if not last.dense else "dense labels"
        return 0, f"refit: none ({why}: holding some out for validation costs little)"
    chips = config.train_chips or int(np.clip(4 * regions, 32, 128))
    reason = "--refit" if config.refit else f"{regions} sparse regions <= {REFIT_REGIONS}"
    return chips, (
        f"refit: {chips} chips on all {regions} regions of the {last.stage} labels, for the "
        f"epochs it ran with validation ({reason})"
    )


def _chip_candidates(shape: tuple[int, int], config: TrainConfig, max_chip: int) -> list[int]:
    side, factor = min(shape), 2 ** (config.depth or 0)
    if config.chip_size is not None:
        if config.chip_size > side:
            raise InvalidParameterError(
                f"--chip-size {config.chip_size} does not fit the {shape[0]}x{shape[1]} px "
                f"scene: lower --chip-size to at most {side} (or leave it out to derive it)"
            )
        return [config.chip_size]
    upper = config.block_size or side
    fits = [c for c in CHIP_SIZES if c % factor == 0 and c <= min(side, upper)]
    sizes = [c for c in fits if c <= max_chip] or fits[-1:]
    if not sizes:
        raise InvalidParameterError(
            f"the {shape[0]}x{shape[1]} px scene (or --block-size {config.block_size}) holds "
            f"none of the chip sizes {CHIP_SIZES} divisible by 2**depth = {factor}: "
            "set --chip-size and --depth, or train on a larger scene"
        )
    return sizes


def _choose_sizes(
    shape: tuple[int, int],
    surveys: Mapping[str, LabelSurvey],
    labels: Mapping[str, xr.DataArray],
    config: TrainConfig,
    sizes: list[int],
) -> tuple[int, int, list[str]]:
    """Chip and block size, and why."""
    final = list(surveys)[-1]
    counted: dict[tuple[str, int], int] = {}

    def blocks(stage: str, block: int) -> int:
        if (stage, block) not in counted:
            counted[stage, block] = len(labelled_blocks(surveys[stage], labels[stage], block))
        return counted[stage, block]

    def block_for(chip: int) -> int:
        if config.block_size is not None:
            if config.block_size < chip:
                raise InvalidParameterError(
                    f"--block-size {config.block_size} is smaller than the {chip} px chip: "
                    f"raise --block-size to at least {chip} or lower --chip-size"
                )
            return config.block_size
        dense = all(blocks(s, 2 * chip) >= DENSE_BLOCKS for s in surveys)
        return 2 * chip if dense else chip

    for chip in sizes:
        block = block_for(chip)
        n_final = blocks(final, block)
        share = min(s.share(chip, 0.5) for s in surveys.values())
        split_ok = config.val_fraction == 0 or n_final >= 2
        if config.chip_size is not None or (split_ok and share >= SHARE_FLOOR):
            break
    why = [
        f"chip_size {chip}: "
        + (
            "given"
            if config.chip_size is not None
            else f"largest of {tuple(sizes)} with chips centred on labelled regions "
            f">= {SHARE_FLOOR:.0%} labelled (median {share:.1%}) and the {final} labels "
            f"in 2+ blocks ({n_final}), else the smallest"
        ),
        f"block_size {block}: "
        + (
            "given"
            if config.block_size is not None
            else f"twice the chip if every stage's labels then lie in {DENSE_BLOCKS}+ "
            "blocks, else the chip size"
        ),
    ]
    return chip, block, why


def _stage_plan(
    stage: str,
    survey: LabelSurvey,
    labels: xr.DataArray,
    chip: int,
    split: BlockSplit,
    holdout: RegionHoldout | None,
    config: TrainConfig,
) -> StagePlan:
    rows, cols = split.grid
    pix = survey.region_pixel
    by = np.minimum(pix[:, 0] // split.block_size, rows - 1)
    bx = np.minimum(pix[:, 1] // split.block_size, cols - 1)
    in_val = np.array([(int(r), int(c)) in split.val_blocks for r, c in zip(by, bx, strict=True)])
    n_val = int(in_val.sum())
    if holdout is not None and holdout.stage == stage:
        n_val = holdout.regions
    n_train = max(survey.regions - n_val, 0)
    note = None
    if config.val_fraction == 0:
        note = "validation disabled (--val-fraction 0)"
    elif n_val == 0:
        note = (
            f"the {stage} labels have no region in a validation block ({survey.regions} "
            f"region(s) in {len(labelled_blocks(survey, labels, split.block_size))} "
            f"block(s) of {split.block_size} px): draw more polygons, or lower --block-size "
            "/ --chip-size"
        )
    share = 0.5 * survey.share(chip, 0.1)
    if config.min_labelled is not None:
        min_labelled = config.min_labelled
    else:
        min_labelled = _two_digits_down(max(min(share, DENSE_MIN_LABELLED), 1 / chip**2))
    train_chips = config.train_chips or int(np.clip(4 * n_train, 32, 128))
    if config.val_chips is not None:
        val_chips = config.val_chips if note is None else 0
    else:
        val_chips = 0 if note else int(np.clip(4 * n_val, 8, 32))
    if stage != "pretrain":
        epochs = config.finetune_epochs
    elif config.epochs is not None:
        epochs = config.epochs
    else:
        batches = -(-train_chips // config.batch_size)
        epochs = int(np.clip(round(TARGET_STEPS / batches), *EPOCH_RANGE))
    per_class = np.bincount(survey.region_class, weights=survey.region_area)
    return StagePlan(
        stage, min_labelled, train_chips, val_chips, survey.labelled, n_train, n_val, note,
        epochs, tuple(int(v) for v in per_class), share >= DENSE_MIN_LABELLED,
    )  # fmt: skip


def _two_digits_down(value: float) -> float:
    """``value`` rounded down to two significant digits (a readable threshold that no
    chip meeting ``value`` fails)."""
    unit = 10.0 ** (math.floor(math.log10(value)) - 1)
    return round(math.floor(value / unit + 1e-9) * unit, 12)
