"""The validation figures a model card carries, and what they mean.

They are measured on the validation chips of the stage that made the model (the last
that trained: its labels are the ones the model is meant to reproduce), over the classes
present in them; without validation chips they are None and ``val_note`` says why. When
the last stage is refit on all its labels (`eoseg.train.refit`), they are measured just
before the refit and the note says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from eoseg.models.accel import Accelerator
from eoseg.models.card import ModelCard
from eoseg.models.unet import UNet
from eoseg.sampling import ChipSet
from eoseg.train.contexts import fit_fusion
from eoseg.train.loop import History, evaluate
from eoseg.train.plan import SamplingPlan


def val_note(plan: SamplingPlan, stage: str) -> str:
    """Why ``stage`` has no validation chip."""
    note = plan.stage(stage).val_note
    return note or (
        f"the validation blocks hold no labelled pixel of the {stage} labels on valid "
        "imagery: check the cube's valid mask there, or lower --block-size / --chip-size"
    )


def validation_figures(
    model: UNet,
    card: ModelCard,
    sets: dict[str, tuple[ChipSet, ChipSet]],
    histories: dict[str, History],
    plan: SamplingPlan,
    accel: Accelerator,
    contexts: Mapping[int, Mapping[str, tuple[ChipSet, ChipSet]]] | None = None,
) -> dict[str, Any]:
    """``val_miou``, ``val_accuracy``, ``val_iou``, ``val_stage`` and ``val_note`` of
    ``model`` on the validation chips of the last stage of ``histories`` that trained;
    with the chips of wider ``contexts`` (per context, like ``sets``), the fusion
    weights and figures of every context too (``contexts``, `fit_fusion`)."""
    ran = [s for s, h in histories.items() if h.get("train_loss")]
    stage = ran[-1] if ran else next(iter(sets))
    val = sets[stage][1]
    out: dict[str, Any] = {"val_stage": stage}
    if contexts:
        vals = {1: val, **{c: wide[stage][1] for c, wide in contexts.items()}}
        out["contexts"] = fit_fusion(model, card, vals, accel)
    if not len(val):
        note = val_note(plan, stage)
        return {
            **out,
            "val_miou": None,
            "val_accuracy": None,
            "val_note": f"no validation chip: {note}",
        }
    out.update(evaluate(model, val, card, accel=accel))
    if out["val_miou"] is None:
        return {**out, "val_note": f"no labelled, valid pixel in the {stage} validation chips"}
    note = (
        f"{len(val)} {stage} validation chips, labelled pixels only; mean IoU over the "
        "classes present in them"
    )
    best = histories[stage].get("best_epoch")
    if best:
        epochs = len(histories[stage]["val_miou"])
        note += f"; the weights are those of epoch {best} of {epochs}, the best by this figure"
    return {**out, "val_note": note}
