"""A training run: sample chips, pretrain on noisy labels, fine-tune on clean ones, save.

Chip size, blocks, validation split and chip counts come from the sampling plan
(`eoseg.train.plan`), derived from the labels where the options leave them out and
recorded in the model card (``sampling``). Each stage keeps its epoch of best validation
mIoU; the card's ``val_miou`` is measured on the validation chips of the stage that
made the model, over the classes present in them (``val_note`` says so, or why there is
none).

The model input (`eoseg.model_input`) is the per-pixel temporal median of valid
observations, or, for a ``--by-date`` cube, each date on its own (``TrainConfig.time``),
normalised with per-band statistics of the model input over the cube
(`eoseg.train.normalise`; ``norm_stats="chips"``: of the training chips), applied by
`eoseg.models.normalize`.
Pretraining uses ``noisy_loss`` (cross-entropy, generalized
cross-entropy or bootstrapping), fine-tuning cross-entropy on clean chips; both add a soft
Jaccard loss and ignore 255 (`eoseg.train.losses`). The fine-tuning chips are those of
`eoseg.train.finetune`; its noisy chips take ``finetune_noisy_loss``. CPU runs are
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

from eoseg.blend import default_lattice
from eoseg.classes import IGNORE_ID, ClassSchema
from eoseg.errors import InvalidParameterError
from eoseg.model_input import TimeMode, cube_time_mode
from eoseg.models import ModelCard, UNet, count_flops_per_pixel, count_parameters, save_model
from eoseg.models.accel import resolve_accelerator
from eoseg.sampling import ChipSet, sample_chips
from eoseg.train.checkpoint import (
    checkpoint_dir,
    load_checkpoint,
    remove_checkpoint,
    save_checkpoint,
)
from eoseg.train.config import TrainConfig, stage_spec
from eoseg.train.finetune import finetune_chips, rehearse_missing, replay_noisy
from eoseg.train.loop import History, fit_stage
from eoseg.train.network import device_defaults, fit_depth_to_chip, resolve_network
from eoseg.train.normalise import cube_band_stats
from eoseg.train.plan import SamplingPlan, plan_sampling
from eoseg.train.prior import class_pixels, logit_adjustment
from eoseg.train.refit import REFIT, clone_state, refit_note, refit_spec, sample_refit_chips
from eoseg.train.validation import val_note, validation_figures

__all__ = [
    "Progress",
    "rehearse_missing",
    "replay_noisy",
    "sample_training_chips",
    "train_model",
]

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int, dict[str, Any]], None]
"""``(stage, step, total, info)``: stage is ``"sample"``, ``"pretrain"`` or ``"finetune"``."""


def _default_threads() -> int:
    """``OMP_NUM_THREADS`` when set (a shared machine's cap), else every usable core."""
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "")))
    except ValueError:
        return len(os.sched_getaffinity(0))


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
    if finetune_labels is not None and config.finetune_epochs == 0:
        raise InvalidParameterError(
            "--finetune-epochs 0 would leave the --finetune-labels unused: give at least 1 "
            "fine-tuning epoch, or leave --finetune-labels out"
        )
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    threads = config.num_threads or _default_threads()
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
    stages = {"pretrain": labels}
    if finetune_labels is not None:
        stages["finetune"] = finetune_labels
    accel = resolve_accelerator(config.device, config.precision)
    given_depth = config.depth
    config = resolve_network(config, accel.device.type)
    plan = plan_sampling(stages, config, device_defaults(accel.device.type).max_chip)
    sampling = plan.to_dict()
    if given_depth is None:
        config, why = fit_depth_to_chip(config, plan.chip_size)
        sampling["why"] += [why] if why else []
    time = config.time or cube_time_mode(cube)
    sets, noisy_flags = sample_training_chips(
        cube, stages, plan, config, schema, progress, time=time
    )
    last = list(stages)[-1]
    if plan.refit_chips:
        refit_train, refit_val, noisy_flags[REFIT] = sample_refit_chips(
            cube, stages, sets["pretrain"][0], plan, config, schema, time
        )
        sets[REFIT] = (refit_train, refit_val)
    pre_train = sets["pretrain"][0]
    mean, std = _band_stats(pre_train)
    if config.norm_stats == "cube":
        mean, std = cube_band_stats(cube, pre_train.bands, time, config.seed) or (mean, std)
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    assert config.base_width is not None and config.depth is not None  # resolve_network
    model = UNet(
        len(pre_train.bands), len(schema), config.base_width, config.depth, context=config.context
    )
    card = ModelCard(
        name=name,
        bands=pre_train.bands,
        mean=mean,
        std=std,
        classes=schema,
        chip_size=plan.chip_size,
        architecture=model.architecture,
        time=time,
        parameters=count_parameters(model),
        flops_per_pixel=count_flops_per_pixel(model, len(pre_train.bands), plan.chip_size),
        fingerprint=_fingerprint(config, schema, [c for pair in sets.values() for c in pair]),
        sampling=sampling,
        inference=default_lattice(plan.chip_size, config.depth, config.context).to_dict(),
    )
    ckpt = checkpoint_dir(out_dir)
    saved = load_checkpoint(ckpt) if resume else None
    if saved is not None and saved.get("fingerprint") != card.fingerprint:
        logger.info("checkpoint %s is of other inputs or options: starting afresh", ckpt)
        saved = None
    adjust = {
        stage: logit_adjustment(
            plan.stage(last if stage == REFIT else stage).class_pixels,
            class_pixels(t.y, len(schema)),
        )
        if config.adjust_prior
        else ()
        for stage, (t, _) in sets.items()
    }
    histories: dict[str, History] = {}
    starts: dict[str, dict[str, Any]] = {}
    if saved is not None:
        model.load_state_dict(saved["model"])
        gen.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        histories = saved["history"]
        if saved.get("stage_start") is not None:
            starts[saved["stage"]] = saved["stage_start"]
        logger.info("resuming %s after %s epoch %d", ckpt, saved["stage"], saved["epoch"])
    accel.prepare(model)
    logger.info("training on %s", accel.describe())
    metrics: dict[str, Any] = {}
    order = list(sets)
    for stage in order:
        train, val = sets[stage]
        if saved is not None and order.index(saved["stage"]) > order.index(stage):
            metrics[stage] = histories[stage]  # stage finished before the interruption
            continue
        start = None
        if saved is not None and saved["stage"] == stage:
            keys = ("epoch", "optimizer", "scheduler", "best", "average")
            start = {k: saved.get(k) for k in keys}
            start["history"] = histories[stage]
        if stage == REFIT:
            spec = refit_spec(config, last, train, len(schema), histories[last])
            if start is None:  # figures first, then the weights the validated stage began with
                histories[last]["figures"] = validation_figures(
                    model, dataclasses.replace(card, logit_adjustment=adjust[last]), sets,
                    {k: h for k, h in histories.items() if k != REFIT}, plan, accel,
                )  # fmt: skip
                model.load_state_dict(starts[last])
        else:
            spec = stage_spec(config, stage, train, len(schema), plan.stage(stage).epochs)
            if REFIT in sets and stage == last:  # the refit starts again from here
                starts.setdefault(stage, clone_state(model))

        def on_epoch(
            epoch: int,
            opt: Any,
            sched: Any,
            history: History,
            best: Any,
            average: Any,
            stage: str = stage,
        ) -> None:
            histories[stage] = history
            state = {"fingerprint": card.fingerprint, "stage": stage, "epoch": epoch,
                     "model": model.state_dict(), "optimizer": opt, "scheduler": sched,
                     "generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
                     "history": histories, "best": best, "average": average,
                     "stage_start": starts.get(stage)}  # fmt: skip
            save_checkpoint(ckpt, state)

        metrics[stage] = histories[stage] = fit_stage(
            model,
            train,
            val,
            dataclasses.replace(card, logit_adjustment=adjust[stage]),
            spec,
            gen,
            accel,
            progress=progress,
            start=start,
            on_epoch=on_epoch,
            noisy=noisy_flags[stage],
        )
    ran = [s for s, h in metrics.items() if h.get("train_loss")]
    card = dataclasses.replace(card, logit_adjustment=adjust[ran[-1] if ran else order[0]])
    figures = metrics.get(last, {}).pop("figures", None)  # measured before the refit
    if REFIT in ran and figures is not None:
        if figures.get("val_miou") is not None:
            figures["val_note"] += refit_note(
                plan, last, len(sets[REFIT][0]), metrics[last],
                metrics[REFIT].get("averaged_steps"),
            )  # fmt: skip
    else:
        figures = validation_figures(model, card, sets, metrics, plan, accel)
    metrics.update(figures)
    metrics["chips"] = {k: [len(t), len(v)] for k, (t, v) in sets.items()}
    card = dataclasses.replace(card, metrics=metrics)
    out = save_model(model, card, out_dir)
    remove_checkpoint(ckpt)
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
) -> tuple[dict[str, tuple[ChipSet, ChipSet]], dict[str, np.ndarray | None]]:
    """The chips a training run trains and validates on.

    Args:
        cube: The cube.
        stages: Labels per stage (``"pretrain"``, then ``"finetune"`` if any).
        plan: The sampling plan of these labels (`plan_sampling`).
        config: Training options.
        schema: Classes the labels must stay within.
        progress: Optional ``(stage, step, total, info)`` callback.
        time: The model input over the cube's dates (`eoseg.model_input`).

    Returns:
        ``(train, val)`` chips per stage, and per stage the flags of the training chips
        whose labels are noisy (fine-tuning only; None for pretraining).

    Raises:
        InvalidParameterError: If a stage gets no training chip, or labels leave the schema.
    """
    sets: dict[str, tuple[ChipSet, ChipSet]] = {}
    noisy_flags: dict[str, np.ndarray | None] = {"pretrain": None}
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
