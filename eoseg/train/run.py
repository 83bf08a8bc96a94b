"""A training run: sample chips, pretrain on noisy labels, fine-tune on clean ones, save.

The model input (`eoseg.model_input`) is the per-pixel temporal median of valid
observations, or, for a ``--by-date`` cube, each date on its own (``TrainConfig.time``),
normalised with per-band statistics of the training chips (`eoseg.models.normalize`).
Pretraining uses ``noisy_loss`` (cross-entropy, generalized
cross-entropy or bootstrapping), fine-tuning cross-entropy on clean chips; both add a soft
Jaccard loss and ignore 255 (`eoseg.train.losses`). The fine-tuning chips are the clean chips, plus
noisy chips for classes the clean labels lack (`rehearse_missing`), with a share of them
replaced by noisy pretraining chips from the whole area (`replay_noisy`); those noisy
chips take ``finetune_noisy_loss`` (generalized cross-entropy by default). CPU runs are
deterministic for a given seed, data and thread count, and resume bit for bit from the
checkpoint written after each epoch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import xarray as xr

from eoseg.classes import IGNORE_ID, ClassSchema
from eoseg.errors import InvalidParameterError
from eoseg.model_input import cube_time_mode
from eoseg.models import ModelCard, UNet, count_flops_per_pixel, count_parameters, save_model
from eoseg.models.accel import resolve_accelerator
from eoseg.sampling import ChipSet, sample_chips, split_blocks
from eoseg.train.checkpoint import (
    checkpoint_dir,
    load_checkpoint,
    remove_checkpoint,
    save_checkpoint,
)
from eoseg.train.config import TrainConfig, stage_spec
from eoseg.train.loop import History, evaluate, fit_stage

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int, dict[str, Any]], None]
"""``(stage, step, total, info)``: stage is ``"sample"``, ``"pretrain"`` or ``"finetune"``."""


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
    time = config.time or cube_time_mode(cube)
    common: dict[str, Any] = {
        "time": time,
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
    noisy_flags: dict[str, np.ndarray | None] = {"pretrain": None}
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
        if stage == "finetune":
            train, noisy_flags[stage] = _finetune_chips(
                train, sets["pretrain"][0], config, len(schema), seed
            )
        sets[stage] = (train, val)
        logger.info("%s: %d training and %d validation chips", stage, len(train), len(val))
        if n_val and not len(val):
            # Blocks are split over the whole grid: a small labelled area can miss all
            # validation blocks, and the card then has no validation mIoU for this stage.
            logger.warning(
                "%s: no validation chip (the %s labels cover no held-out block of %d px); "
                "its validation mIoU stays empty: label a larger area or lower block_size",
                stage, stage, config.block_size or 2 * config.chip_size,
            )  # fmt: skip
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
        time=time,
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
    accel = resolve_accelerator(config.device, config.precision)
    accel.prepare(model)
    logger.info("training on %s", accel.describe())
    metrics: dict[str, Any] = {}
    val = pre_val
    order = [s for s in ("pretrain", "finetune") if s in sets]
    for stage in order:
        train, val = sets[stage]
        spec = stage_spec(config, stage, train, len(schema))
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
            model,
            train,
            val,
            card,
            spec,
            gen,
            accel,
            progress=progress,
            start=start,
            on_epoch=on_epoch,
            noisy=noisy_flags[stage],
        )
    if len(val):
        metrics.update(evaluate(model, val, card, accel=accel))
    metrics["chips"] = {k: [len(t), len(v)] for k, (t, v) in sets.items()}
    card = dataclasses.replace(card, metrics=metrics)
    out = save_model(model, card, out_dir)
    remove_checkpoint(ckpt)
    return out


def _finetune_chips(
    clean: ChipSet, noisy: ChipSet, config: TrainConfig, n_classes: int, seed: int
) -> tuple[ChipSet, np.ndarray]:
    """The fine-tuning chips and, per chip, whether its labels are the noisy ones."""
    n_clean = len(clean)
    # Rehearsal first: which classes are missing is a property of the clean labels alone.
    if config.rehearse_missing:
        clean = rehearse_missing(clean, noisy, n_classes)
    rehearsed = np.arange(len(clean)) >= n_clean  # rehearsed chips follow the clean ones
    chips, keep = _replay(clean, noisy, config.finetune_noisy_share, seed)
    replayed = np.ones(len(chips) - len(keep), dtype=bool)
    return chips, np.concatenate([rehearsed[keep], replayed])


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


def replay_noisy(clean: ChipSet, noisy: ChipSet, share: float, seed: int) -> ChipSet:
    """Replace a random ``share`` of the fine-tuning chips by noisy pretraining chips.

    The count stays that of ``clean``, so an epoch costs the same. Noisy chips keep all
    their labels: they replay the whole area (its fields, its spectral variety) while the
    clean chips, still the majority, correct what the noisy labels get wrong.

    Args:
        clean: Fine-tuning chips (clean, possibly with rehearsed noisy chips).
        noisy: Pretraining chips.
        share: Share of the result drawn from ``noisy``, in ``[0, 1)``.
        seed: Seed of the choice of chips.

    Returns:
        ``clean`` itself when nothing is replaced, else the kept clean chips followed by
        the replayed noisy ones.
    """
    return _replay(clean, noisy, share, seed)[0]


def _replay(clean: ChipSet, noisy: ChipSet, share: float, seed: int) -> tuple[ChipSet, np.ndarray]:
    """`replay_noisy`, and the indices of the chips of ``clean`` it keeps (in order)."""
    k = min(round(share * len(clean)), len(noisy))
    if k == 0:
        return clean, np.arange(len(clean))
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(clean), len(clean) - k, replace=False))
    add = np.sort(rng.choice(len(noisy), k, replace=False))
    logger.info("fine-tuning replays %d noisy chips in place of clean ones", k)
    chips = ChipSet(
        x=np.concatenate([clean.x[keep], noisy.x[add]]),
        y=np.concatenate([clean.y[keep], noisy.y[add]]),
        origins=np.concatenate([clean.origins[keep], noisy.origins[add]]),
        bands=clean.bands,
    )
    return chips, keep
