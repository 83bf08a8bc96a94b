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

With several ``contexts`` (`eoseg.train.contexts`) every stage also trains on chips of the
wider contexts (`eoseg.train.chips.sample_context_chips`), and the card records each
context's validation figures and the fusion weights fitted on the validation chips.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from eoseg.blend import default_lattice
from eoseg.classes import ClassSchema
from eoseg.errors import EosegError, InvalidParameterError
from eoseg.model_input import cube_time_mode
from eoseg.models import (
    ModelCard,
    UNet,
    count_flops_per_pixel,
    count_parameters,
    read_card,
    save_model,
)
from eoseg.models.accel import resolve_accelerator
from eoseg.sampling import ChipSet
from eoseg.train.checkpoint import (
    checkpoint_dir,
    load_checkpoint,
    remove_checkpoint,
    save_checkpoint,
)
from eoseg.train.chips import sample_context_chips, sample_training_chips
from eoseg.train.config import TrainConfig
from eoseg.train.ensemble import train_members
from eoseg.train.finetune import rehearse_missing, replay_noisy
from eoseg.train.loop import History, fit_stage
from eoseg.train.network import device_defaults, fit_depth_to_chip, resolve_network
from eoseg.train.normalise import cube_band_stats
from eoseg.train.plan import plan_sampling
from eoseg.train.prior import class_pixels, logit_adjustment
from eoseg.train.refit import REFIT, clone_state, refit_note, refit_spec, sample_refit_chips
from eoseg.train.stage import stage_spec
from eoseg.train.validation import validation_figures

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
        return train_members(
            lambda cfg, out, ckpt, reuse: _train(
                cube, labels, out, schema, cfg, finetune_labels, progress, name, resume, reuse, ckpt
            ),
            Path(out_dir),
            config,
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
    reuse: bool = False,
    ckpt: Path | None = None,
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
    wide = sample_context_chips(cube, stages, plan, config, schema, time)
    wide_sets = {c: chips for c, (chips, _) in wide.items()}
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
    if reuse and resume and (done := finished_model(out_dir, card.fingerprint)) is not None:
        return done
    ckpt = ckpt or checkpoint_dir(out_dir)
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
                    {k: h for k, h in histories.items() if k != REFIT}, plan, accel, wide_sets,
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
            extra=[(chips[stage][0], flags[stage]) for chips, flags in wide.values()],
            extra_val={c: chips[stage][1] for c, (chips, _) in wide.items()},
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
        figures = validation_figures(model, card, sets, metrics, plan, accel, wide_sets)
    metrics.update(figures)
    metrics["chips"] = {k: [len(t), len(v)] for k, (t, v) in sets.items()}
    fusion = metrics.pop("contexts", {})
    card = dataclasses.replace(card, metrics=metrics, contexts=fusion)
    out = save_model(model, card, out_dir)
    remove_checkpoint(ckpt)
    return out


def finished_model(out_dir: str | os.PathLike[str], fingerprint: str) -> ModelCard | None:
    """The card of the model ``out_dir`` holds when it was trained from the inputs and
    options of ``fingerprint`` (an ensemble member finished before an interruption)."""
    try:
        card = read_card(out_dir)
    except EosegError:
        return None
    return card if card.fingerprint == fingerprint else None
