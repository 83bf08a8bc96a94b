"""The chips a training run trains and validates on, at each of its contexts.

`sample_training_chips` samples each stage's training and validation chips from its
labels by the sampling plan (`eoseg.train.plan`) and builds the fine-tuning mix
(`eoseg.train.finetune`); `sample_context_chips` does the same for every wider context
of a run (`eoseg.train.contexts`), with the same seeds, so that the chips of every
context are centred on the same pixels.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from eoseg.classes import IGNORE_ID, ClassSchema
from eoseg.errors import InvalidParameterError
from eoseg.model_input import TimeMode
from eoseg.sampling import ChipSet, sample_chips
from eoseg.train.config import TrainConfig
from eoseg.train.contexts import Widen, widener
from eoseg.train.finetune import finetune_chips
from eoseg.train.plan import SamplingPlan
from eoseg.train.refit import REFIT, sample_refit_chips
from eoseg.train.validation import val_note

if TYPE_CHECKING:
    from eoseg.train.run import Progress

logger = logging.getLogger(__name__)

StageChips = dict[str, tuple[ChipSet, ChipSet]]
"""``(train, val)`` chips per stage."""
NoisyFlags = dict[str, np.ndarray | None]
"""Per stage, the flags of the training chips whose labels are noisy (or None)."""


def _check_ids(chips: ChipSet, schema: ClassSchema, what: str) -> None:
    ids = np.unique(chips.y[chips.y != IGNORE_ID])
    bad = ids[ids >= len(schema)]
    if bad.size:
        raise InvalidParameterError(
            f"{what} hold class ids {bad.tolist()} but the schema has ids 0..{len(schema) - 1} "
            f"{schema.names}: rasterize with the same schema or set unknown classes to 255"
        )


def sample_context_chips(
    cube: xr.Dataset,
    stages: dict[str, xr.DataArray],
    plan: SamplingPlan,
    config: TrainConfig,
    schema: ClassSchema,
    time: TimeMode,
) -> dict[int, tuple[StageChips, NoisyFlags]]:
    """Per wider context of ``config.contexts``: the chips and noisy flags of every stage
    (and of the refit, when the plan has one), sampled with the same seeds as context 1,
    so centred on the same pixels."""
    out = {}
    for context in config.contexts[1:]:
        widen = widener(cube, plan.split, context, time)
        sets, flags = sample_training_chips(
            cube, stages, plan, config, schema, time=time, widen=widen
        )
        if plan.refit_chips:
            train, val, flags[REFIT] = sample_refit_chips(
                cube, stages, sets["pretrain"][0], plan, config, schema, time, widen
            )
            sets[REFIT] = (train, val)
        out[context] = (sets, flags)
    return out


def sample_training_chips(
    cube: xr.Dataset,
    stages: dict[str, xr.DataArray],
    plan: SamplingPlan,
    config: TrainConfig,
    schema: ClassSchema,
    progress: Progress | None = None,
    *,
    time: TimeMode = "median",
    widen: Widen | None = None,
) -> tuple[StageChips, NoisyFlags]:
    """The chips a training run trains and validates on.

    Args:
        cube: The cube.
        stages: Labels per stage (``"pretrain"``, then ``"finetune"`` if any).
        plan: The sampling plan of these labels (`plan_sampling`).
        config: Training options.
        schema: Classes the labels must stay within.
        progress: Optional ``(stage, step, total, info)`` callback.
        time: The model input over the cube's dates (`eoseg.model_input`).
        widen: Turns the sampled chips into those of a wider context
            (`eoseg.train.contexts.widener`), before fine-tuning mixes them.

    Returns:
        ``(train, val)`` chips per stage, and per stage the flags of the training chips
        whose labels are noisy (fine-tuning only; None for pretraining).

    Raises:
        InvalidParameterError: If a stage gets no training chip, or labels leave the schema.
    """
    sets: StageChips = {}
    noisy_flags: NoisyFlags = {"pretrain": None}
    for i, (stage, lab) in enumerate(stages.items()):
        if progress is not None:
            progress("sample", i, len(stages), {"labels": stage})
        sp = plan.stage(stage)
        common: dict[str, Any] = {"chip_size": plan.chip_size, "balance": config.balance,
                                  "time": time,
                                  "split": plan.split, "bands": config.bands,
                                  "min_labelled": sp.min_labelled}  # fmt: skip
        seed = config.seed + 10 * i
        t_lab, t_part = plan.source(stage, lab, "train")
        train = sample_chips(cube, t_lab, count=sp.train_chips, seed=seed, part=t_part, **common)
        # A validation chip needs one labelled, valid pixel: each counts, however few.
        v_lab, v_part = plan.source(stage, lab, "val")
        val = sample_chips(cube, v_lab, count=sp.val_chips, seed=seed + 1, part=v_part,
                           **{**common, "min_labelled": 1 / plan.chip_size**2})  # fmt: skip
        if len(train) == 0:
            raise InvalidParameterError(
                f"no training chip of {plan.chip_size} px has {sp.min_labelled:.2%} labelled, "
                f"valid pixels in the {stage} labels: check that the labels overlap the "
                "cube's valid pixels, or lower --min-labelled / --chip-size (or leave them "
                "out to derive them from the labels)"
            )
        if widen is not None:
            train, val = widen(train, t_lab, t_part), widen(val, v_lab, v_part)
        _check_ids(train, schema, f"{stage} labels")
        _check_ids(val, schema, f"{stage} labels")
        if stage == "finetune":
            train, noisy_flags[stage] = finetune_chips(
                train, sets["pretrain"][0], len(schema), rehearse=config.rehearse_missing,
                share=config.finetune_noisy_share, seed=seed,
            )  # fmt: skip
        sets[stage] = (train, val)
        logger.info("%s: %d training and %d validation chips", stage, len(train), len(val))
        if not len(val):
            logger.warning("%s: no validation chip: %s", stage, val_note(plan, stage))
    if progress is not None:
        progress("sample", len(stages), len(stages), {})
    return sets, noisy_flags
