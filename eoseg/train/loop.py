"""The epoch loop of one training stage and its validation.

Device, precision and layout come from an `eoseg.models.accel.Accelerator` (by default
bf16 autocast with channels-last tensors on CUDA, fp32 on the CPU so CPU runs are
bit-reproducible). The loop can start from a saved epoch (optimiser and scheduler state
restored) and reports each finished epoch to a checkpoint callback before the progress
callback. A stage with validation chips keeps the weights of its best epoch by
validation mIoU (of the fused contexts when it trains on several, `eoseg.train.contexts`;
`StageSpec.keep_best`) and may stop early after `StageSpec.patience` epochs without a
better one. A stage may keep every batch-norm layer in inference mode
(`StageSpec.freeze_norm`): fine-tuning on a small clean box then leaves the normalisation
statistics of pretraining, gathered over the whole area, untouched. A stage that would
end on its last weights ends on their mean over its last steps (`eoseg.train.average`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.nn import functional

from eoseg.metrics import confusion_matrix, report_from_confusion
from eoseg.models.accel import Accelerator
from eoseg.models.card import ModelCard, adjust_logits, normalize
from eoseg.models.unet import UNet
from eoseg.sampling import ChipSet
from eoseg.train.augment import augment
from eoseg.train.average import WeightAverage
from eoseg.train.contexts import fit_fusion
from eoseg.train.losses import SegmentationLoss

if TYPE_CHECKING:
    from eoseg.train.run import Progress

logger = logging.getLogger(__name__)

History = dict[str, Any]
"""Per-epoch ``train_loss`` and ``val_miou`` lists, and the kept ``best_epoch``."""
_ENDS = ("best_epoch", "averaged_steps")
"""`History` entries set when a stage ends (a resumed stage continues the others)."""
Best = dict[str, Any]
"""The best epoch so far: ``{"epoch": int, "val_miou": float, "model": state_dict}``."""
OnEpoch = Callable[
    [int, dict[str, Any], dict[str, Any], History, Best | None, dict[str, Any] | None], None
]
"""``(epochs_done, optimizer_state, scheduler_state, history, best, average)``, called
after each epoch (``average``: `WeightAverage.to_state`, or None)."""


def evaluate(
    model: torch.nn.Module,
    chips: ChipSet,
    card: ModelCard,
    batch_size: int = 16,
    accel: Accelerator | None = None,
) -> dict[str, Any]:
    """Validation metrics of ``model`` on the labelled pixels of ``chips``.

    ``val_miou`` averages the IoU of the classes present in the chips' labels: a class
    absent from the validation reference says nothing of the model there, and counting
    it (IoU 0 as soon as a pixel is predicted as it) made a good model look poor.
    ``val_accuracy`` is the share of labelled pixels predicted right; ``val_iou`` gives
    each present class's IoU (None for the others). ``accel`` defaults to fp32 on the
    model's device.
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
            logits = adjust_logits(model(accel.to_input(x)).float(), card)
            logits = to_label_size(logits, chips.y.shape[-2:])
            pred = logits.argmax(dim=1).cpu().numpy()
            cm += confusion_matrix(pred, chips.y[i : i + batch_size], n)
    if cm.sum() == 0:
        return {
            "val_miou": None,
            "val_accuracy": None,
            "val_iou": dict.fromkeys(card.classes.names),
        }
    report = report_from_confusion(cm, card.classes.names)
    present = cm.sum(axis=1) > 0
    iou = np.asarray(report.iou)
    return {
        "val_miou": float(iou[present].mean()),
        "val_accuracy": report.overall_accuracy,
        "val_iou": {
            name: float(v) if p else None
            for name, v, p in zip(card.classes.names, iou, present, strict=True)
        },
    }


def to_label_size(logits: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """``(N, class, h, w)`` logits upsampled (bilinear) to labels of side ``size``: the
    labels of a wider context's chip keep the full resolution (`eoseg.train.contexts`)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return functional.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


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
        keep_best: End with the weights of the epoch of best validation mIoU.
        patience: Stop after this many epochs without a better validation mIoU.
        average_from: Where the stage ends on its last weights (no validation chips, or
            ``keep_best`` off), end on their mean over the steps from this fraction of
            the stage on (`eoseg.train.average`); 1: on the last weights.
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
    keep_best: bool = True
    patience: int | None = None
    average_from: float = 1.0


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
    extra: Sequence[tuple[ChipSet, np.ndarray | None]] = (),
    extra_val: Mapping[int, ChipSet] | None = None,
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
        start: Saved ``{"epoch", "optimizer", "scheduler", "history", "best",
            "average"}`` to resume from.
        on_epoch: Called after each epoch (before ``progress``), e.g. to checkpoint.
        noisy: Optional ``(N,)`` bool flags of the training chips with noisy labels,
            passed on to ``spec.loss`` (see `SegmentationLoss.noisy_kind`).
        extra: More training chips and their noisy flags, e.g. those of wider contexts
            (`eoseg.train.contexts`): each batch holds chips of one set, and an epoch
            draws an equal share of its chips from every set, so it takes as many steps
            as one set would (the same budget as a single-context run).
        extra_val: Validation chips of wider contexts (by context, each widened from
            ``val``): the epoch kept is then the one of best validation mIoU of the
            fused contexts (`eoseg.train.contexts.fit_fusion`), the map prediction makes,
            recorded as ``val_miou_fused`` beside the context-1 ``val_miou``.

    Returns:
        ``{"train_loss": [...], "val_miou": [...], "best_epoch": n}``, one list entry
        per epoch run; ``best_epoch`` is the epoch whose weights the model ends with
        (None: the last one, when there is no validation or ``keep_best`` is off);
        ``averaged_steps`` is the number of steps whose mean it ends with, if any.
    """
    history: History = {"train_loss": [], "val_miou": []}
    if spec.epochs == 0 or len(chips) == 0:
        return {**history, "best_epoch": None}
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    groups = [(chips, noisy), *((c, f) for c, f in extra if len(c))]
    batches = sum(-(-_epoch_share(len(c), len(groups)) // spec.batch_size) for c, _ in groups)
    total = spec.epochs * batches
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=spec.lr, total_steps=total)
    first, best = 0, None
    ends_on_last = not (len(val) and spec.keep_best)
    average = WeightAverage.for_stage(spec.average_from, total) if ends_on_last else None
    if start is not None:
        opt.load_state_dict(start["optimizer"])
        sched.load_state_dict(start["scheduler"])
        history = {k: list(v) for k, v in start["history"].items() if k not in _ENDS}
        first, best = int(start["epoch"]), start.get("best")
        average = WeightAverage.from_state(start.get("average")) if average else None
    encoder = model.encoder_parameters()
    for epoch in range(first, spec.epochs):
        if best is not None and spec.patience and epoch - best["epoch"] >= spec.patience:
            logger.info("%s: no better validation mIoU in %d epochs: stopping early",
                        spec.stage, spec.patience)  # fmt: skip
            if progress is not None:
                progress(spec.stage, total, total, {"epoch": epoch, "stopped": True})
            break
        frozen = epoch < spec.freeze_epochs
        for p in encoder:
            p.requires_grad_(not frozen)
        _set_train_mode(model, frozen_encoder=frozen, frozen_norm=spec.freeze_norm)
        loss = _train_epoch(model, groups, card, spec, gen, accel, (opt, sched),
                            progress=progress, epoch=epoch, total=total,
                            average=average)  # fmt: skip
        metrics = evaluate(model, val, card, accel=accel) if len(val) else {"val_miou": None}
        history["train_loss"].append(loss)
        history["val_miou"].append(metrics["val_miou"])
        if extra_val and len(val):  # several contexts: keep what their fusion maps best
            fused = fit_fusion(model, card, {1: val, **extra_val}, accel).get("val_miou", {})
            metrics["val_miou_fused"] = fused.get("fused")
            history.setdefault("val_miou_fused", []).append(metrics["val_miou_fused"])
        score = metrics.get("val_miou_fused", metrics["val_miou"])
        # On a tie the later epoch wins: it has trained longer at a lower learning rate.
        if score is not None and (best is None or score >= best["val_miou"]):
            best = {"epoch": epoch + 1, "val_miou": score}
            if spec.keep_best:
                best["model"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        logger.info(
            "%s epoch %d/%d loss %.4f val mIoU %s%s",
            spec.stage, epoch + 1, spec.epochs, loss, score, " (encoder frozen)" if frozen else "",
        )  # fmt: skip
        if on_epoch is not None:
            saved = None if average is None else average.to_state()
            on_epoch(epoch + 1, opt.state_dict(), sched.state_dict(), history, best, saved)
        if progress is not None:
            info = {"epoch": epoch + 1, "loss": loss, **metrics}
            progress(spec.stage, (epoch + 1) * batches, total, info)
    for p in encoder:
        p.requires_grad_(True)
    if average is not None and average.apply(model):
        logger.info("%s: ending on the mean weights of its last %d steps", spec.stage,
                    average.count)  # fmt: skip
        return {**history, "best_epoch": None, "averaged_steps": average.count}
    if best is None or not spec.keep_best:
        return {**history, "best_epoch": None}
    model.load_state_dict(best["model"])
    logger.info("%s: keeping epoch %d (val mIoU %.4f)", spec.stage, best["epoch"], best["val_miou"])
    return {**history, "best_epoch": best["epoch"]}


def _train_epoch(
    model: UNet,
    groups: Sequence[tuple[ChipSet, np.ndarray | None]],
    card: ModelCard,
    spec: StageSpec,
    gen: torch.Generator,
    accel: Accelerator,
    optim: tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler],
    *,
    progress: Progress | None,
    epoch: int,
    total: int,
    average: WeightAverage | None = None,
) -> float:
    """One epoch (``epoch``, from 0) over the sets of training chips; the mean loss.

    Each batch holds chips of one set (of one context); with ``n`` sets, a random
    ``1/n`` of each set's chips is drawn and the batches are shuffled across sets.
    ``average`` takes the weights after each step.
    """
    opt, sched = optim
    plan = _batch_plan(groups, spec.batch_size, gen)
    total_loss = 0.0
    for b, (g, idx) in enumerate(plan):
        chips, noisy = groups[g]
        x_all, y_all = torch.from_numpy(chips.x[idx]), torch.from_numpy(chips.y[idx]).long()
        # Elastic warping needs labels of the image's size (not a wider context's).
        elastic = spec.elastic if x_all.shape[-1] == y_all.shape[-1] else 0.0
        x, y = augment(x_all, y_all, spec.jitter, gen, elastic=elastic)
        with accel.autocast():
            logits = model(accel.to_input(normalize(x, card)))
        flags = None if noisy is None else torch.as_tensor(noisy[idx], dtype=torch.bool)
        logits = to_label_size(logits.float(), y.shape[-2:])
        loss = spec.loss(logits, y.to(accel.device), flags)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if average is not None:
            average.update(model, epoch * len(plan) + b + 1)
        total_loss += loss.item()
        if progress is not None:
            info = {"epoch": epoch + 1, "loss": loss.item()}
            progress(spec.stage, epoch * len(plan) + b + 1, total, info)
    return total_loss / len(plan)


def _epoch_share(chips: int, sets: int) -> int:
    """Chips of one of ``sets`` sets of ``chips`` chips that an epoch trains on."""
    return -(-chips // sets)


def _batch_plan(
    groups: Sequence[tuple[ChipSet, np.ndarray | None]], batch_size: int, gen: torch.Generator
) -> list[tuple[int, np.ndarray]]:
    """``(set, chip indices)`` of every batch of an epoch, in training order."""
    plan = []
    for g, (chips, _) in enumerate(groups):
        perm = torch.randperm(len(chips), generator=gen).numpy()
        perm = perm[: _epoch_share(len(chips), len(groups))]
        plan += [(g, perm[i : i + batch_size]) for i in range(0, len(perm), batch_size)]
    if len(groups) == 1:  # one set: the order of its permutation (as runs before contexts)
        return plan
    return [plan[i] for i in torch.randperm(len(plan), generator=gen).tolist()]
