"""Training: pretrain a U-Net on noisy labels, then fine-tune on a small clean set.

The model input is the per-pixel temporal median of valid observations
(`eoseg.sampling.composite`), normalised with per-band statistics of the training chips
(`eoseg.models.normalize`). Pretraining uses ``noisy_loss`` (cross-entropy, generalized
cross-entropy or bootstrapping), fine-tuning cross-entropy; both add a soft Jaccard loss
and ignore 255 (`eoseg.models.losses`). CPU runs are deterministic for a given seed, data
and thread count, and resume bit for bit from the checkpoint written after each epoch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import xarray as xr

from eoseg.classes import IGNORE_ID, ClassSchema, generic_schema, load_schema
from eoseg.errors import InvalidParameterError
from eoseg.models import ModelCard, UNet, count_flops_per_pixel, count_parameters, save_model
from eoseg.models.checkpoint import (
    checkpoint_dir,
    load_checkpoint,
    remove_checkpoint,
    save_checkpoint,
)
from eoseg.models.fit import History, StageSpec, evaluate, fit_stage
from eoseg.models.losses import (
    BootstrapMode,
    LossKind,
    SegmentationLoss,
    balanced_class_weights,
    soft_jaccard_loss,
)
from eoseg.models.unet import Context
from eoseg.sampling import ChipSet, sample_chips, split_blocks

__all__ = [
    "Progress",
    "TrainConfig",
    "evaluate",
    "soft_jaccard_loss",
    "train_from_stores",
    "train_model",
]

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int, dict[str, Any]], None]
"""``(stage, step, total, info)``: stage is ``"sample"``, ``"pretrain"`` or ``"finetune"``."""


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Training options (defaults suit the demo: 1-2 minutes on 2 CPU cores).

    An epoch is one pass over ``train_chips`` chips sampled once per stage, so its cost
    does not grow with the area: with the defaults (128 chips of 128 px, U-Net 16/3)
    about 3-4 s per epoch on 2 CPU cores.

    Attributes:
        epochs: Pretraining epochs on the (noisy) labels.
        finetune_epochs: Epochs on the clean labels, when given.
        freeze_encoder_epochs: First fine-tuning epochs with the encoder frozen.
        chip_size: Chip side in pixels; must be divisible by ``2**depth``.
        train_chips: Training chips sampled (once) per stage.
        val_chips: Validation chips sampled from held-out blocks.
        batch_size: Chips per optimiser step.
        lr: AdamW learning rate of pretraining.
        finetune_lr: Learning rate of fine-tuning (lower than ``lr``).
        weight_decay: AdamW weight decay.
        jaccard_weight: Weight of the soft Jaccard loss added to cross-entropy.
        jitter: Radiometric jitter: per-chip, per-band gain in ``1 ± jitter``.
        base_width: U-Net channels at full resolution.
        depth: U-Net downsampling steps.
        block_size: Side of the spatial blocks of the train/validation split
            (default ``2 * chip_size``).
        val_fraction: Share of blocks held out for validation.
        min_labelled: Least labelled+valid share of a chip.
        balance: Class-balanced chip sampling.
        bands: Bands to train on, in order; default all cube bands.
        seed: Seed of sampling, initialisation and augmentation.
        num_threads: Torch intra-op threads; default all cores.
        context: ``"aspp"`` adds an ASPP context module at the U-Net bottleneck.
        class_weights: Cross-entropy class weights (one per class id), ``"balanced"``
            (from the label frequencies of each stage's training chips) or None.
        noisy_loss: Pixel loss of pretraining: ``"ce"``, ``"gce"`` (generalized
            cross-entropy) or ``"bootstrap"``. Fine-tuning always uses cross-entropy.
        gce_q: Exponent of generalized cross-entropy.
        bootstrap_beta: Trust in the labels of bootstrapping.
        bootstrap_mode: ``"soft"`` or ``"hard"`` bootstrapping.
        device: Torch device; default CUDA when available, else the CPU. CUDA trains in
            bf16 autocast with channels-last tensors.
        rehearse_missing: During fine-tuning, keep training on pretraining chips for the
            classes the clean labels lack (their pixels only), so that fine-tuning on a
            small clean set does not make the model forget them.
    """

    epochs: int = 10
    finetune_epochs: int = 5
    freeze_encoder_epochs: int = 2
    chip_size: int = 128
    train_chips: int = 128
    val_chips: int = 32
    batch_size: int = 8
    lr: float = 3e-3
    finetune_lr: float = 5e-4
    weight_decay: float = 1e-4
    jaccard_weight: float = 0.5
    jitter: float = 0.05
    base_width: int = 16
    depth: int = 3
    block_size: int | None = None
    val_fraction: float = 0.25
    min_labelled: float = 0.25
    balance: bool = True
    bands: tuple[str, ...] | None = None
    seed: int = 0
    num_threads: int | None = None
    context: Context = "none"
    class_weights: tuple[float, ...] | Literal["balanced"] | None = None
    noisy_loss: LossKind = "ce"
    gce_q: float = 0.7
    bootstrap_beta: float = 0.95
    bootstrap_mode: BootstrapMode = "soft"
    device: str | None = None
    rehearse_missing: bool = True

    def __post_init__(self) -> None:
        factor = 2**self.depth
        if self.chip_size % factor:
            raise InvalidParameterError(
                f"chip_size {self.chip_size} is not divisible by 2**depth = {factor}: "
                f"choose a multiple of {factor}"
            )
        for name in ("epochs", "finetune_epochs", "freeze_encoder_epochs"):
            if getattr(self, name) < 0:
                raise InvalidParameterError(f"{name} must be >= 0; got {getattr(self, name)}")
        for name in ("train_chips", "batch_size", "base_width", "depth"):
            if getattr(self, name) < 1:
                raise InvalidParameterError(f"{name} must be >= 1; got {getattr(self, name)}")
        for name, value, allowed in (
            ("noisy_loss", self.noisy_loss, ("ce", "gce", "bootstrap")),
            ("bootstrap_mode", self.bootstrap_mode, ("soft", "hard")),
            ("context", self.context, ("none", "aspp")),
        ):
            if value not in allowed:
                raise InvalidParameterError(f"{name} must be one of {allowed}; got {value!r}")
        if not 0.0 < self.gce_q <= 1.0:
            raise InvalidParameterError(f"gce_q must be in (0, 1]; got {self.gce_q}")
        if not 0.0 <= self.bootstrap_beta <= 1.0:
            raise InvalidParameterError(
                f"bootstrap_beta must be in [0, 1]; got {self.bootstrap_beta}"
            )
        w = self.class_weights
        if w is not None and w != "balanced" and (isinstance(w, str) or min(w, default=-1) < 0):
            raise InvalidParameterError(
                f"class_weights must be 'balanced', None or non-negative numbers; got {w!r}"
            )


def _band_stats(chips: ChipSet) -> tuple[tuple[float, ...], tuple[float, ...]]:
    flat = np.moveaxis(chips.x, 1, 0).reshape(chips.x.shape[1], -1)
    empty = [b for b, row in zip(chips.bands, flat, strict=True) if not np.isfinite(row).any()]
    if empty:
        raise InvalidParameterError(
            f"bands {tuple(empty)} have no valid pixel in the training chips: check the cube's "
            "valid mask and nodata, or train on other bands"
        )
    mean = np.nanmean(flat, axis=1)
    std = np.maximum(np.nanstd(flat, axis=1), 1e-6)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def _fingerprint(config: TrainConfig, schema: ClassSchema, sets: list[ChipSet]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(dataclasses.asdict(config), sort_keys=True, default=str).encode())
    h.update(json.dumps(schema.to_dict(), sort_keys=True).encode())
    for s in sets:
        h.update(np.ascontiguousarray(s.x).tobytes())
        h.update(np.ascontiguousarray(s.y).tobytes())
    return h.hexdigest()[:16]


def _check_ids(chips: ChipSet, schema: ClassSchema, what: str) -> None:
    ids = np.unique(chips.y[chips.y != IGNORE_ID])
    bad = ids[ids >= len(schema)]
    if bad.size:
        raise InvalidParameterError(
            f"{what} hold class ids {bad.tolist()} but the schema has ids 0..{len(schema) - 1} "
            f"{schema.names}: rasterize with the same schema or set unknown classes to 255"
        )


def train_model(
    cube: xr.Dataset,
    labels: xr.DataArray,
    out_dir: str | os.PathLike[str],
    *,
    schema: ClassSchema,
    config: TrainConfig | None = None,
    finetune_labels: xr.DataArray | None = None,
    progress: Progress | None = None,
    name: str = "eoseg-unet",
    resume: bool = True,
) -> ModelCard:
    """Train a U-Net on a cube and save it as a model folder.

    Pretrains on ``labels`` (e.g. rasterised OpenStreetMap, noisy), then, when
    ``finetune_labels`` is given, fine-tunes on them: ``freeze_encoder_epochs`` epochs with
    the encoder frozen, then all layers, at ``finetune_lr``. Validation uses chips from
    held-out spatial blocks (of the fine-tuning labels when given).

    Args:
        cube: Dataset with ``data (time, band, y, x)`` and ``valid (time, y, x)``; may be lazy.
        labels: ``(y, x)`` uint8 labels on the cube's grid, 255 = ignore.
        out_dir: Model folder to write (replaced atomically if it exists).
        schema: Classes of the labels; output channels follow its ids.
        config: Training options; default `TrainConfig()`.
        finetune_labels: Optional clean ``(y, x)`` labels for fine-tuning.
        progress: Optional ``(stage, step, total, info)`` callback.
        name: Model name written in the card.
        resume: Continue from the checkpoint ``<out_dir>.ckpt`` (written after every
            epoch, deleted once the model is saved) when its fingerprint of configuration
            and sampled chips matches; on the CPU the result equals an uninterrupted run.

    Returns:
        The saved model card; ``metrics`` holds per-epoch losses and validation mIoU
        and the final ``val_miou``, ``val_accuracy`` and per-class ``val_iou``.

    Raises:
        InvalidParameterError: On labels outside the schema or sizes that do not fit.
        BandMismatchError: If ``config.bands`` names a band the cube lacks.
    """
    config = config or TrainConfig()
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    threads = config.num_threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(max(1, threads))
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        return _train(
            cube, labels, out_dir, schema, config, finetune_labels, progress, name, resume
        )
    finally:
        torch.set_num_threads(prev_threads)
        torch.use_deterministic_algorithms(prev_det)


def _train(
    cube: xr.Dataset,
    labels: xr.DataArray,
    out_dir: str | os.PathLike[str],
    schema: ClassSchema,
    config: TrainConfig,
    finetune_labels: xr.DataArray | None,
    progress: Progress | None,
    name: str,
    resume: bool,
) -> ModelCard:
    shape = (int(cube["data"].sizes["y"]), int(cube["data"].sizes["x"]))
    split = split_blocks(
        shape,
        block_size=config.block_size or 2 * config.chip_size,
        val_fraction=config.val_fraction,
        seed=config.seed,
    )
    common: dict[str, Any] = {
        "chip_size": config.chip_size,
        "balance": config.balance,
        "split": split,
        "bands": config.bands,
        "min_labelled": config.min_labelled,
    }
    stages = [("pretrain", labels)]
    if finetune_labels is not None:
        stages.append(("finetune", finetune_labels))
    sets: dict[str, tuple[ChipSet, ChipSet]] = {}
    for i, (stage, lab) in enumerate(stages):
        if progress is not None:
            progress("sample", i, len(stages), {"labels": stage})
        seed = config.seed + 10 * i
        train = sample_chips(cube, lab, count=config.train_chips, seed=seed, part="train", **common)
        n_val = config.val_chips if config.val_fraction > 0 else 0
        val = sample_chips(cube, lab, count=n_val, seed=seed + 1, part="val", **common)
        if len(train) == 0:
            raise InvalidParameterError(
                f"no training chip of {config.chip_size} px has {config.min_labelled:.0%} "
                f"labelled, valid pixels in the {stage} labels: check that labels overlap "
                "the cube, or lower min_labelled / chip_size"
            )
        _check_ids(train, schema, f"{stage} labels")
        _check_ids(val, schema, f"{stage} labels")
        if stage == "finetune" and config.rehearse_missing:
            train = rehearse_missing(train, sets["pretrain"][0], len(schema))
        sets[stage] = (train, val)
        logger.info("%s: %d training and %d validation chips", stage, len(train), len(val))
    if progress is not None:
        progress("sample", len(stages), len(stages), {})
    pre_train, pre_val = sets["pretrain"]
    mean, std = _band_stats(pre_train)
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    model = UNet(
        len(pre_train.bands), len(schema), config.base_width, config.depth, context=config.context
    )
    card = ModelCard(
        name=name,
        bands=pre_train.bands,
        mean=mean,
        std=std,
        classes=schema,
        chip_size=config.chip_size,
        architecture=model.architecture,
        parameters=count_parameters(model),
        flops_per_pixel=count_flops_per_pixel(model, len(pre_train.bands), config.chip_size),
        fingerprint=_fingerprint(config, schema, [c for pair in sets.values() for c in pair]),
    )
    ckpt = checkpoint_dir(out_dir)
    saved = load_checkpoint(ckpt) if resume else None
    if saved is not None and saved.get("fingerprint") != card.fingerprint:
        logger.info("checkpoint %s is of other inputs or options: starting afresh", ckpt)
        saved = None
    histories: dict[str, History] = {}
    if saved is not None:
        model.load_state_dict(saved["model"])
        gen.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        histories = saved["history"]
        logger.info("resuming %s after %s epoch %d", ckpt, saved["stage"], saved["epoch"])
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        model = model.to(device, memory_format=torch.channels_last)  # type: ignore[call-overload]
    metrics: dict[str, Any] = {}
    val = pre_val
    order = [s for s in ("pretrain", "finetune") if s in sets]
    for stage in order:
        train, val = sets[stage]
        spec = _stage_spec(config, stage, train, len(schema))
        start = None
        if saved is not None and order.index(saved["stage"]) > order.index(stage):
            metrics[stage] = histories[stage]  # stage finished before the interruption
            continue
        if saved is not None and saved["stage"] == stage:
            start = {k: saved[k] for k in ("epoch", "optimizer", "scheduler")}
            start["history"] = histories[stage]

        def on_epoch(
            epoch: int, opt: Any, sched: Any, history: History, stage: str = stage
        ) -> None:
            histories[stage] = history
            state = {"fingerprint": card.fingerprint, "stage": stage, "epoch": epoch,
                     "model": model.state_dict(), "optimizer": opt, "scheduler": sched,
                     "generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
                     "history": histories}  # fmt: skip
            save_checkpoint(ckpt, state)

        metrics[stage] = fit_stage(
            model, train, val, card, spec, gen, progress=progress, start=start, on_epoch=on_epoch
        )
    if len(val):
        metrics.update(evaluate(model, val, card))
    metrics["chips"] = {k: [len(t), len(v)] for k, (t, v) in sets.items()}
    card = dataclasses.replace(card, metrics=metrics)
    out = save_model(model, card, out_dir)
    remove_checkpoint(ckpt)
    return out


def rehearse_missing(clean: ChipSet, noisy: ChipSet, n_classes: int) -> ChipSet:
    """Add to the clean chips the noisy chips showing classes the clean chips lack.

    In the added chips only the missing classes keep their labels (the rest is 255), so
    the noisy labels teach nothing about classes the clean set covers.
    """
    present = np.unique(clean.y[clean.y != IGNORE_ID])
    missing = np.setdiff1d(np.arange(n_classes), present)
    if missing.size == 0 or len(noisy) == 0:
        return clean
    keep = np.isin(noisy.y, missing)
    chosen = keep.reshape(len(noisy), -1).any(axis=1)
    if not chosen.any():
        return clean
    labels = np.where(keep[chosen], noisy.y[chosen], IGNORE_ID).astype(np.uint8)
    logger.info(
        "fine-tuning rehearses classes %s from %d noisy chips", missing.tolist(), int(chosen.sum())
    )
    return ChipSet(
        x=np.concatenate([clean.x, noisy.x[chosen]]),
        y=np.concatenate([clean.y, labels]),
        origins=np.concatenate([clean.origins, noisy.origins[chosen]]),
        bands=clean.bands,
    )


def _stage_spec(config: TrainConfig, stage: str, chips: ChipSet, n_classes: int) -> StageSpec:
    weights = config.class_weights
    if weights == "balanced":
        weights = balanced_class_weights(chips.y, n_classes)
        logger.info("%s class weights %s", stage, [round(w, 3) for w in weights])
    elif weights is not None and len(weights) != n_classes:
        raise InvalidParameterError(
            f"class_weights has {len(weights)} entries but the schema has {n_classes} "
            "classes: give one weight per class id, or 'balanced'"
        )
    pre = stage == "pretrain"
    loss = SegmentationLoss(
        kind=config.noisy_loss if pre else "ce",
        weight=None if weights is None else tuple(float(w) for w in weights),
        q=config.gce_q,
        beta=config.bootstrap_beta,
        mode=config.bootstrap_mode,
        jaccard_weight=config.jaccard_weight,
    )
    return StageSpec(
        stage=stage,
        epochs=config.epochs if pre else config.finetune_epochs,
        lr=config.lr if pre else config.finetune_lr,
        freeze_epochs=0 if pre else config.freeze_encoder_epochs,
        loss=loss,
        batch_size=config.batch_size,
        weight_decay=config.weight_decay,
        jitter=config.jitter,
    )


def train_from_stores(
    cube_path: Path,
    labels_path: Path,
    out_dir: Path,
    *,
    finetune_labels: Path | None = None,
    classes: Path | None = None,
    config: TrainConfig | None = None,
    epochs: int | None = None,
    finetune_epochs: int | None = None,
    chip_size: int | None = None,
    seed: int | None = None,
    progress: Progress | None = None,
) -> ModelCard:
    """Train from stores on disk: the function behind ``eoseg train`` and the train flow.

    Args:
        cube_path: Cube store.
        labels_path: Labels store to (pre)train on.
        out_dir: Model folder to write.
        finetune_labels: Optional clean labels store to fine-tune on.
        classes: Class schema JSON (``[{"id", "name", "color"}]``); default: generic
            names for the ids found in the labels.
        config: Base options; ``epochs``, ``finetune_epochs``, ``chip_size`` and ``seed``
            override it when given.
        progress: Optional ``(stage, step, total, info)`` callback.
    """
    from eoseg.cube import open_cube
    from eoseg.labels import open_labels

    cube = open_cube(cube_path)
    labels = open_labels(labels_path)
    clean = open_labels(finetune_labels) if finetune_labels else None
    if labels.shape != (cube.sizes["y"], cube.sizes["x"]):
        raise InvalidParameterError(
            f"labels {labels_path} are {labels.shape} px but the cube is "
            f"{(cube.sizes['y'], cube.sizes['x'])}: rasterize them onto this cube"
        )
    schema = load_schema(classes) if classes else _schema_from_labels(labels, clean)
    overrides = {
        k: v
        for k, v in (
            ("epochs", epochs),
            ("finetune_epochs", finetune_epochs),
            ("chip_size", chip_size),
            ("seed", seed),
        )
        if v is not None
    }
    config = replace(config or TrainConfig(), **overrides)  # type: ignore[arg-type]
    return train_model(
        cube,
        labels,
        out_dir,
        schema=schema,
        config=config,
        finetune_labels=clean,
        progress=progress,
    )


def _schema_from_labels(*stores: xr.DataArray | None) -> ClassSchema:
    import dask.array as da

    top = max(
        int(da.max(da.where(s.data == IGNORE_ID, 0, s.data)).compute())
        for s in stores
        if s is not None
    )
    return generic_schema(top + 1)
