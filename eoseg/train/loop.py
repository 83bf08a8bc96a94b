"""The epoch loop of one training stage and its validation.

Device, precision and layout come from an `eoseg.models.accel.Accelerator` (by default
bf16 autocast with channels-last tensors on CUDA, fp32 on the CPU so CPU runs are
bit-reproducible). The loop can start from a saved epoch (optimiser and scheduler state
restored) and reports each finished epoch to a checkpoint callback before the progress
callback. A stage may keep every batch-norm layer in inference mode (`StageSpec.freeze_norm`):
fine-tuning on a small clean box then leaves the normalisation statistics of pretraining,
gathered over the whole area, untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from eoseg.metrics import confusion_matrix, report_from_confusion
from eoseg.models.accel import Accelerator
from eoseg.models.card import ModelCard, normalize
from eoseg.models.unet import UNet
from eoseg.sampling import ChipSet
from eoseg.train.augment import augment
from eoseg.train.losses import SegmentationLoss

if TYPE_CHECKING:
    from eoseg.train.run import Progress

logger = logging.getLogger(__name__)

History = dict[str, list[float | None]]
OnEpoch = Callable[[int, dict[str, Any], dict[str, Any], History], None]
"""``(epochs_done, optimizer_state, scheduler_state, history)``, called after each epoch."""


def evaluate(
    model: torch.nn.Module,
    chips: ChipSet,
    card: ModelCard,
    batch_size: int = 16,
    accel: Accelerator | None = None,
) -> dict[str, Any]:
    """Validation metrics of ``model`` on ``chips``: ``val_miou``, ``val_accuracy``, IoUs.

    ``accel`` defaults to fp32 on the model's device.
    """
    n = len(card.classes)
    cm = np.zeros((n, n), dtype=np.int64)
    if accel is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        accel = Accelerator(device, bf16=False, channels_last=False)
    model.eval()
    with torch.no_grad(), accel.autocast():
        for i in range(0, len(chips), batch_size):
            x = normalize(torch.from_numpy(chips.x[i : i + batch_size]), card)
            pred = model(accel.to_input(x)).argmax(dim=1).cpu().numpy()
            cm += confusion_matrix(pred, chips.y[i : i + batch_size], n)
    if cm.sum() == 0:
        return {
            "val_miou": None,
            "val_accuracy": None,
            "val_iou": dict.fromkeys(card.classes.names),
        }
    report = report_from_confusion(cm, card.classes.names)
    return {
        "val_miou": report.miou,
        "val_accuracy": report.overall_accuracy,
        "val_iou": {
            name: None if np.isnan(v) else v
            for name, v in zip(card.classes.names, report.iou, strict=True)
        },
    }


@dataclass(frozen=True, slots=True)
class StageSpec:
    """What one training stage does.

    Attributes:
        stage: ``"pretrain"`` or ``"finetune"`` (progress and log label).
        epochs: Number of epochs.
        lr: Peak (one-cycle) AdamW learning rate.
        freeze_epochs: First epochs with the encoder frozen.
        loss: The loss of this stage.
        batch_size: Chips per optimiser step.
        weight_decay: AdamW weight decay.
        jitter: Radiometric jitter of `augment`.
        elastic: Elastic deformation of `augment` (pixels; 0 = off).
        freeze_norm: Keep every batch-norm layer in inference mode (running statistics
            used and left unchanged) for the whole stage; its affine weights still train.
    """

    stage: str
    epochs: int
    lr: float
    freeze_epochs: int
    loss: SegmentationLoss
    batch_size: int
    weight_decay: float
    jitter: float
    elastic: float = 0.0
    freeze_norm: bool = False


def _set_train_mode(model: UNet, *, frozen_encoder: bool, frozen_norm: bool) -> None:
    """Training mode, except batch norm where its statistics must not move."""
    model.train()
    if frozen_norm:
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()
    if frozen_encoder:  # keep the frozen encoder's batch-norm statistics too
        model.encoder.eval()
        model.bottleneck.eval()


def fit_stage(
    model: UNet,
    chips: ChipSet,
    val: ChipSet,
    card: ModelCard,
    spec: StageSpec,
    gen: torch.Generator,
    accel: Accelerator,
    *,
    progress: Progress | None = None,
    start: dict[str, Any] | None = None,
    on_epoch: OnEpoch | None = None,
    noisy: np.ndarray | None = None,
) -> History:
    """Train ``model`` in place for one stage and return its per-epoch history.

    Args:
        model: The network, already prepared by ``accel``.
        chips: Training chips.
        val: Validation chips (may be empty).
        card: Card with the normalisation statistics.
        spec: Stage options.
        gen: CPU generator of shuffling and augmentation.
        accel: Device, precision and layout of the forward pass.
        progress: Optional ``(stage, step, total, info)`` callback.
        start: Saved ``{"epoch", "optimizer", "scheduler", "history"}`` to resume from.
        on_epoch: Called after each epoch (before ``progress``), e.g. to checkpoint.
        noisy: Optional ``(N,)`` bool flags of the training chips with noisy labels,
            passed on to ``spec.loss`` (see `SegmentationLoss.noisy_kind`).

    Returns:
        ``{"train_loss": [...], "val_miou": [...]}``, one entry per epoch.
    """
    history: History = {"train_loss": [], "val_miou": []}
    if spec.epochs == 0 or len(chips) == 0:
        return history
    x_all, y_all = torch.from_numpy(chips.x), torch.from_numpy(chips.y).long()
    noisy_all = None if noisy is None else torch.as_tensor(noisy, dtype=torch.bool)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    batches = -(-len(chips) // spec.batch_size)
    total = spec.epochs * batches
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=spec.lr, total_steps=total)
    first = 0
    if start is not None:
        opt.load_state_dict(start["optimizer"])
        sched.load_state_dict(start["scheduler"])
        history = {k: list(v) for k, v in start["history"].items()}
        first = int(start["epoch"])
    encoder = model.encoder_parameters()
    step = first * batches
    for epoch in range(first, spec.epochs):
        frozen = epoch < spec.freeze_epochs
        for p in encoder:
            p.requires_grad_(not frozen)
        _set_train_mode(model, frozen_encoder=frozen, frozen_norm=spec.freeze_norm)
        perm = torch.randperm(len(chips), generator=gen)
        total_loss = 0.0
        for b in range(batches):
            idx = perm[b * spec.batch_size : (b + 1) * spec.batch_size]
            x, y = augment(x_all[idx], y_all[idx], spec.jitter, gen, elastic=spec.elastic)
            with accel.autocast():
                logits = model(accel.to_input(normalize(x, card)))
            flags = None if noisy_all is None else noisy_all[idx]
            loss = spec.loss(logits.float(), y.to(accel.device), flags)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total_loss += loss.item()
            step += 1
            if progress is not None:
                progress(spec.stage, step, total, {"epoch": epoch + 1, "loss": loss.item()})
        metrics = evaluate(model, val, card, accel=accel) if len(val) else {"val_miou": None}
        history["train_loss"].append(total_loss / batches)
        history["val_miou"].append(metrics["val_miou"])
        logger.info(
            "%s epoch %d/%d loss %.4f val mIoU %s%s",
            spec.stage, epoch + 1, spec.epochs, total_loss / batches, metrics["val_miou"],
            " (encoder frozen)" if frozen else "",
        )  # fmt: skip
        if on_epoch is not None:
            on_epoch(epoch + 1, opt.state_dict(), sched.state_dict(), history)
        if progress is not None:
            info = {"epoch": epoch + 1, "loss": total_loss / batches, **metrics}
            progress(spec.stage, step, total, info)
    for p in encoder:
        p.requires_grad_(True)
    return history
