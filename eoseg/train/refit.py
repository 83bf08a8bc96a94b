"""The final fit on all labels of the last stage, once validation has measured it.

Validation needs labels the model does not train on; with a few dozen polygons those are
a quarter of what the user drew, and which quarter changes the model. So, when the plan
asks for it (`eoseg.train.plan`, ``refit_chips``), the last stage runs twice: once on its
training blocks with validation, which gives the card its figures, and once more from the
same starting weights on chips of all its labels, for as many epochs as the first ran
(all of them, or until early stopping), ending on the mean of its weights after its first
tenth (`eoseg.train.average`). The saved model is the second; its card keeps the validation
figures of the first and says so. This is the "refit on all data" of model selection,
applied to one stage.

The refit does not stop at the first run's best epoch: on a quarter of a few dozen
polygons that epoch is noise (eolearn_slovenia's validation mIoU jumps by 0.3 from one
epoch to the next; one seed chose epoch 3 of 23 and its refit collapsed two classes),
while the averaged weights of a full schedule do not overfit it (held-out OA / mIoU over
five seeds, weights averaged over the last half: 0.842 / 0.359 for the full schedule,
0.843 / 0.348 for the best epoch's).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import xarray as xr

from eoseg.classes import ClassSchema
from eoseg.model_input import TimeMode
from eoseg.sampling import ChipSet, sample_chips
from eoseg.train.config import TrainConfig
from eoseg.train.contexts import Widen
from eoseg.train.finetune import finetune_chips
from eoseg.train.loop import History, StageSpec
from eoseg.train.plan import SamplingPlan
from eoseg.train.stage import stage_spec

REFIT = "refit"
"""The stage name of the final fit."""


def sample_refit_chips(
    cube: xr.Dataset,
    stages: dict[str, xr.DataArray],
    pretrain_chips: ChipSet,
    plan: SamplingPlan,
    config: TrainConfig,
    schema: ClassSchema,
    time: TimeMode,
    widen: Widen | None = None,
) -> tuple[ChipSet, ChipSet, np.ndarray | None]:
    """Chips of all the last stage's labels (no validation), and their noisy flags.

    A fine-tuning refit mixes in replayed pretraining chips as fine-tuning does;
    ``widen`` makes them a wider context's (`eoseg.train.contexts`).
    """
    last = list(stages)[-1]
    chips = sample_chips(
        cube,
        stages[last],
        chip_size=plan.chip_size,
        count=plan.refit_chips,
        seed=config.seed + 10 * len(stages),
        balance=config.balance,
        split=plan.split,
        part="all",
        bands=config.bands,
        min_labelled=plan.stage(last).min_labelled,
        time=time,
    )
    if widen is not None:
        chips = widen(chips, stages[last], "all")
    flags = None
    if last == "finetune":
        chips, flags = finetune_chips(
            chips, pretrain_chips, len(schema), rehearse=config.rehearse_missing,
            share=config.finetune_noisy_share, seed=config.seed + 10 * len(stages),
        )  # fmt: skip
    none = ChipSet(chips.x[:0], chips.y[:0], chips.origins[:0], chips.bands)
    return chips, none, flags


def refit_epochs(history: History) -> int:
    """The epochs the validated stage ran (all, or until it stopped early)."""
    return len(history.get("train_loss", []))


def refit_spec(
    config: TrainConfig, last: str, chips: ChipSet, n_classes: int, history: History
) -> StageSpec:
    """The last stage's loss and schedule, for the epochs it ran with validation."""
    spec = stage_spec(config, last, chips, n_classes, refit_epochs(history))
    return dataclasses.replace(
        spec, stage=REFIT, epochs=refit_epochs(history), keep_best=False, patience=None
    )


def refit_note(
    plan: SamplingPlan, last: str, chips: int, history: History, averaged: int | None = None
) -> str:
    """What the card's validation figures are, once the model was refit (``averaged``:
    the refit's steps whose mean weights the model holds, `eoseg.train.average`)."""
    regions = plan.stage(last).train_regions + plan.stage(last).val_regions
    mean = f", the mean weights of its last {averaged} steps" if averaged else ""
    return (
        f"; then refit on all {regions} labelled regions of the {last} labels ({chips} "
        f"chips, {refit_epochs(history)} epochs{mean}): the saved model has also learned "
        "the validation labels, so these figures were measured before the refit"
    )


def clone_state(model: Any) -> dict[str, Any]:
    """A detached copy of a model's weights (the start of a stage, kept for the refit)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
