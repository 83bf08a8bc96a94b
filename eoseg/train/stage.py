"""A training stage's loss, schedule and augmentation, from the run's options.

`TrainConfig` holds what a user asks for (`eoseg.train.config`); `stage_spec` turns it
into the `StageSpec` of pretraining (noisy labels: a noise-robust loss) or fine-tuning
(clean labels: cross-entropy) that the loop runs (`eoseg.train.loop`).
"""

from __future__ import annotations

import logging

from eoseg.errors import InvalidParameterError
from eoseg.sampling import ChipSet
from eoseg.train.config import TrainConfig
from eoseg.train.loop import StageSpec
from eoseg.train.losses import SegmentationLoss, balanced_class_weights

logger = logging.getLogger(__name__)


def stage_spec(
    config: TrainConfig, stage: str, chips: ChipSet, n_classes: int, epochs: int | None = None
) -> StageSpec:
    """The loss, schedule and augmentation of ``stage`` (``"pretrain"`` or ``"finetune"``).

    ``epochs`` is the stage's number of epochs when derived (`eoseg.train.plan`); it
    stands in for ``config.epochs`` left at None.

    Raises:
        InvalidParameterError: If explicit class weights do not match the schema.
    """
    weights = config.class_weights
    if weights == "balanced":
        weights = balanced_class_weights(chips.y, n_classes)
        logger.info("%s class weights %s", stage, [round(w, 3) for w in weights])
    elif weights is not None and len(weights) != n_classes:
        raise InvalidParameterError(
            f"--set class_weights=... has {len(weights)} entries but the schema has "
            f"{n_classes} classes: give one weight per class id, or 'balanced'"
        )
    pre = stage == "pretrain"
    loss = SegmentationLoss(
        kind=config.noisy_loss if pre else "ce",
        weight=None if weights is None else tuple(float(w) for w in weights),
        q=config.gce_q,
        beta=config.bootstrap_beta,
        mode=config.bootstrap_mode,
        jaccard_weight=config.jaccard_weight,
        noisy_kind=None if pre else config.finetune_noisy_loss,
    )
    return StageSpec(
        stage=stage,
        epochs=(config.epochs if config.epochs is not None else epochs or 0)
        if pre
        else config.finetune_epochs,
        lr=config.lr if pre else config.finetune_lr,
        freeze_epochs=0 if pre else config.freeze_encoder_epochs,
        loss=loss,
        batch_size=config.batch_size,
        weight_decay=config.weight_decay,
        jitter=config.jitter,
        elastic=config.elastic,
        freeze_norm=not pre and config.finetune_norm == "frozen",
        keep_best=config.keep_best,
        patience=config.patience,
        average_from=config.average_from,
    )
