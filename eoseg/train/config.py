"""Training options and what each stage (pretraining, fine-tuning) makes of them.

The network and the largest chip follow the device the run trains on
(`DEVICE_DEFAULTS`, the one place they are set): on a GPU a U-Net of base width 32 and
depth 4 (about 370 GFLOP per megapixel) on chips of up to 256 px; on a CPU a 16/3 U-Net
(71 GFLOP per megapixel) on chips of up to 64 px, which trains the real samples in a
minute or two on two cores (benchmarks/README.md). The sampling options left at
None (chip size, block size, labelled share, chip counts, epochs) are derived from the
labels by `eoseg.train.plan`: large chips for labels that cover the scene, smaller ones,
fewer chips, more epochs and a lower labelled share for a few small polygons.

Fine-tuning defaults suit a clean set that covers a small part of the area: it trains at
the pretraining learning rate (the clean labels must move boundaries by a pixel or two and
teach classes the noisy labels get wrong, which a low rate over a few epochs does not do),
with the batch-norm statistics of pretraining kept (``finetune_norm="frozen"``), and with
half of its chips replayed from pretraining (``finetune_noisy_share``) so that the model
keeps seeing the whole area rather than narrowing to the clean box. Those noisy chips (and
the ones rehearsing classes the clean set lacks) take generalized cross-entropy
(``finetune_noisy_loss``), which gives less weight to pixels whose noisy label the model
doubts, so that they keep the area in view without undoing what the clean chips correct.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from eoseg.contexts import MAX_CONTEXT, MAX_CONTEXTS, check_contexts
from eoseg.errors import InputNotFoundError, InvalidParameterError
from eoseg.model_input import TIME_MODES, TimeMode
from eoseg.models.accel import PRECISIONS, Precision
from eoseg.models.unet import Context
from eoseg.train.losses import (
    BootstrapMode,
    LossKind,
)

logger = logging.getLogger(__name__)

NormStats = Literal["cube", "chips"]
"""Where the input normalisation statistics are measured (`eoseg.train.normalise`)."""
NormMode = Literal["frozen", "train"]


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Training options.

    An epoch is one pass over ``train_chips`` chips sampled once per stage, so its cost
    does not grow with the area. With dense labels (128 chips of 256 px, U-Net 32/4,
    8.4 Mpx per epoch, ~3 PFLOP forward and backward) an epoch takes seconds on a GPU
    and many minutes on a laptop CPU: shrink ``chip_size``, ``base_width`` and ``depth``
    there. Fields marked *derived* default to None: `eoseg.train.plan.plan_sampling`
    chooses them from the labels and the model card records the choice and why.

    Attributes:
        epochs: Pretraining epochs on the (noisy) labels (derived: about
            `eoseg.train.plan.TARGET_STEPS` optimiser steps, 10 to 60 epochs, so a few
            small polygons train for more epochs of their few chips).
        finetune_epochs: Epochs on the clean labels, when given.
        freeze_encoder_epochs: First fine-tuning epochs with the encoder frozen (0 by
            default: frozen normalisation and replayed noisy chips keep the pretrained
            features from narrowing to the clean box without slowing fine-tuning down).
        chip_size: Chip side in pixels; must be divisible by ``2**depth`` (derived).
        train_chips: Training chips sampled (once) per stage (derived).
        val_chips: Validation chips sampled from held-out blocks (derived).
        batch_size: Chips per optimiser step.
        lr: AdamW learning rate of pretraining.
        finetune_lr: Peak (one-cycle) learning rate of fine-tuning; by default that of
            pretraining, whose warm-up already spares the pretrained weights large
            first steps.
        weight_decay: AdamW weight decay.
        jaccard_weight: Weight of the soft Jaccard loss added to cross-entropy.
        jitter: Radiometric jitter: per-chip, per-band gain in ``1 ± jitter``.
        elastic: Elastic deformation: standard deviation in pixels of a smooth random
            displacement field (0 = off; 2-4 px suits shifted, wobbly OSM outlines).
        base_width: U-Net channels at full resolution (derived from the device:
            `DEVICE_DEFAULTS`).
        depth: U-Net downsampling steps (derived from the device).
        block_size: Side of the spatial blocks of the train/validation split (derived).
        val_fraction: Share of the blocks holding labels held out for validation.
        min_labelled: Least labelled+valid share of a training chip (derived); a
            validation chip needs one labelled, valid pixel.
        balance: Class-balanced chip sampling.
        bands: Bands to train on, in order; default all cube bands.
        time: How the model reads the cube's dates (`eoseg.model_input`): ``"median"``
            (one composite; the class map is ``(y, x)``) or ``"per-date"`` (chips of
            each date with the same labels; prediction maps every date). Default: per
            date for a ``--by-date`` cube, else median.
        seed: Seed of sampling, initialisation and augmentation.
        num_threads: Torch intra-op threads; default ``OMP_NUM_THREADS`` when set, else
            all cores.
        context: ``"aspp"`` adds an ASPP context module at the U-Net bottleneck.
        contexts: Contexts to train on, as multiples of the chip size, 1 included
            (`eoseg.contexts`): ``(1, 2, 4)`` adds, per stage, chips of 2 and 4 times the
            chip's extent (pooled to the chip size) around the sampled ones, one context
            per batch, and records in the model card each context's validation mIoU and
            the fusion weights `eoseg.predict` applies by default. An epoch draws an
            equal share of its chips from each context: it takes as many steps as
            without wider contexts.
        class_weights: Cross-entropy class weights (one per class id), ``"balanced"``
            (from the label frequencies of each stage's training chips) or None.
        noisy_loss: Pixel loss of pretraining: ``"ce"``, ``"gce"`` (generalized
            cross-entropy) or ``"bootstrap"``. Fine-tuning uses cross-entropy on clean chips.
        gce_q: Exponent of generalized cross-entropy.
        bootstrap_beta: Trust in the labels of bootstrapping.
        bootstrap_mode: ``"soft"`` or ``"hard"`` bootstrapping.
        device: Torch device; default CUDA when available, else the CPU.
        precision: ``"auto"`` (bf16 autocast and channels-last on CUDA, fp32 on the CPU),
            ``"bf16"`` (on any device) or ``"fp32"``; see `eoseg.models.accel`.
        rehearse_missing: During fine-tuning, keep training on pretraining chips for the
            classes the clean labels lack (their pixels only), so that fine-tuning on a
            small clean set does not make the model forget them.
        finetune_norm: ``"frozen"`` keeps every batch-norm layer's running statistics
            (and batch statistics) from pretraining during fine-tuning, so a model
            fine-tuned on a small box still normalises with statistics of the whole
            area; ``"train"`` lets them adapt to the fine-tuning batches.
        finetune_noisy_share: Share, in ``[0, 1)``, of the fine-tuning chips replaced by
            pretraining (noisy) chips with their labels: replay of chips from the whole
            area, against forgetting what the small clean set does not show (its few
            fields, its spectral variety). The clean chips still teach the boundaries
            the noisy labels get wrong.
        finetune_noisy_loss: Pixel loss, during fine-tuning, of the noisy chips
            (replayed and rehearsed): ``"gce"`` (default; with ``gce_q``), ``"ce"`` or
            ``"bootstrap"``. The clean chips always take cross-entropy.
        keep_best: End each stage with the weights of its epoch of best validation
            mIoU (when it has validation chips), not those of its last epoch.
        patience: Stop a stage after this many epochs without a better validation
            mIoU (None: run every epoch).
        refit: After the last stage, fit again from the weights it started with on all
            its labels (training and validation chips' regions) for the epochs it ran
            with validation, and save that model (derived: on for at most
            `eoseg.train.plan.REFIT_REGIONS` labelled regions). The card's validation
            figures are then those measured before the refit, and say so.
        average_from: A stage that ends on its last weights (the refit, or a stage
            without validation chips) ends instead on the mean of its weights over the
            optimiser steps from this fraction of the stage on (`eoseg.train.average`);
            1 ends on the last weights.
        adjust_prior: Record in the model card the logit adjustment that turns the
            class prior of the (class-balanced) training chips into that of the labels
            (`eoseg.train.prior`); prediction and validation apply it. Off: the map
            keeps the chips' prior, which over-predicts rare classes.
        members: Networks trained (seeds ``seed``, ``seed + 1``, ...) and averaged as one
            model (`eoseg.models.ensemble`); derived (`eoseg.train.ensemble`): 3 when the
            labels are refit (a few dozen sparse polygons, where one network depends on
            which polygons validation held out), else 1.
        norm_stats: Where the per-band normalisation statistics are measured:
            ``"cube"`` (the model input over the whole scene, `eoseg.train.normalise`)
            or ``"chips"`` (the pretraining chips only).
    """

    epochs: int | None = None
    finetune_epochs: int = 5
    freeze_encoder_epochs: int = 0
    chip_size: int | None = None
    train_chips: int | None = None
    val_chips: int | None = None
    batch_size: int = 8
    lr: float = 3e-3
    finetune_lr: float = 3e-3
    weight_decay: float = 1e-4
    jaccard_weight: float = 0.5
    jitter: float = 0.05
    elastic: float = 0.0
    base_width: int | None = None
    depth: int | None = None
    block_size: int | None = None
    val_fraction: float = 0.25
    min_labelled: float | None = None
    balance: bool = True
    bands: tuple[str, ...] | None = None
    time: TimeMode | None = None
    seed: int = 0
    num_threads: int | None = None
    context: Context = "none"
    contexts: tuple[int, ...] = (1,)
    class_weights: tuple[float, ...] | Literal["balanced"] | None = None
    noisy_loss: LossKind = "ce"
    gce_q: float = 0.7
    bootstrap_beta: float = 0.95
    bootstrap_mode: BootstrapMode = "soft"
    device: str | None = None
    precision: Precision = "auto"
    rehearse_missing: bool = True
    finetune_norm: NormMode = "frozen"
    finetune_noisy_share: float = 0.5
    finetune_noisy_loss: LossKind = "gce"
    keep_best: bool = True
    patience: int | None = None
    norm_stats: NormStats = "cube"
    adjust_prior: bool = True
    refit: bool | None = None
    average_from: float = 0.1
    members: int | None = None

    def __post_init__(self) -> None:
        if _contexts_ok(self.contexts):  # ascending, as every record lists them
            object.__setattr__(self, "contexts", tuple(sorted(self.contexts)))
        for name, ok, expected in _NUMBER_RULES:
            _check(self, name, ok, expected)
        factor = 2 ** (self.depth or 0)
        if self.chip_size is not None and self.chip_size % factor:
            raise InvalidParameterError(
                f"{flag('chip_size')} {self.chip_size} is not divisible by 2**depth = {factor} "
                f"(a U-Net of depth {self.depth} halves it {self.depth} times): choose a "
                f"multiple of {factor}, or leave {flag('chip_size')} out to derive it"
            )
        for name, allowed in (
            ("noisy_loss", ("ce", "gce", "bootstrap")),
            ("bootstrap_mode", ("soft", "hard")),
            ("context", ("none", "aspp")),
            ("precision", PRECISIONS),
            ("finetune_norm", ("frozen", "train")),
            ("finetune_noisy_loss", ("ce", "gce", "bootstrap")),
            ("time", (None, *TIME_MODES)),
            ("norm_stats", ("cube", "chips")),
        ):
            _check(self, name, allowed.__contains__, f"one of {allowed}")
        _check(
            self,
            "contexts",
            _contexts_ok,
            f"distinct whole multiples of the chip size from 1 to {MAX_CONTEXT}, 1 among "
            f"them, at most {MAX_CONTEXTS} (e.g. 1,2,4)",
        )
        _check(
            self,
            "class_weights",
            lambda w: (
                w is None
                or w == "balanced"
                or (not isinstance(w, str) and all(math.isfinite(v) and v >= 0 for v in w))
            ),
            "'balanced', None or non-negative numbers",
        )


def _whole(least: int, optional: bool = True) -> Callable[[Any], bool]:
    """A whole number (not a bool) of at least ``least``; None passes when ``optional``."""
    return lambda v: (
        (optional and v is None)
        or (isinstance(v, numbers.Integral) and not isinstance(v, bool) and int(v) >= least)
    )


def _contexts_ok(value: Any) -> bool:
    """Distinct context multiples (`eoseg.contexts.check_contexts`), 1 among them."""
    if not isinstance(value, tuple) or 1 not in value:
        return False
    try:
        return len(check_contexts(list(value))) == len(value)
    except InvalidParameterError:
        return False


def _real(low: float, high: float = math.inf, *, open_low: bool = False) -> Callable[[Any], bool]:
    """A finite number in ``[low, high)`` (``(low, high)`` when ``open_low``); None passes."""
    return lambda v: (
        v is None
        or (
            isinstance(v, numbers.Real)
            and not isinstance(v, bool)
            and math.isfinite(v)
            and (float(v) > low if open_low else float(v) >= low)
            and float(v) < high
        )
    )


_NUMBER_RULES: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    # An untrained model is no product: pretraining runs at least one epoch.
    ("epochs", _whole(1), "a whole number >= 1 (or left out: derived)"),
    ("finetune_epochs", _whole(0, optional=False), "a whole number >= 0"),
    ("freeze_encoder_epochs", _whole(0, optional=False), "a whole number >= 0"),
    ("val_chips", _whole(0), "a whole number >= 0"),
    ("chip_size", _whole(1), "a whole number of pixels >= 1"),
    ("train_chips", _whole(1), "a whole number >= 1"),
    ("batch_size", _whole(1, optional=False), "a whole number >= 1"),
    ("base_width", _whole(1), "a whole number >= 1"),
    ("depth", _whole(1), "a whole number >= 1"),
    ("block_size", _whole(1), "a whole number of pixels >= 1"),
    ("patience", _whole(1), "a whole number >= 1 (or left out: no early stop)"),
    ("members", _whole(1), "a whole number >= 1 (or left out: derived)"),
    ("num_threads", _whole(1), "a whole number >= 1"),
    ("seed", _whole(0, optional=False), "a whole number >= 0"),
    ("lr", _real(0.0, open_low=True), "a finite number > 0"),
    ("finetune_lr", _real(0.0, open_low=True), "a finite number > 0"),
    ("weight_decay", _real(0.0), "a finite number >= 0"),
    ("jaccard_weight", _real(0.0), "a finite number >= 0"),
    ("jitter", _real(0.0, 1.0), "in [0, 1) (a gain of 1 ± jitter)"),
    ("elastic", _real(0.0), "a finite number of pixels >= 0"),
    ("val_fraction", _real(0.0, 1.0), "in [0, 1)"),
    ("min_labelled", _real(0.0, math.nextafter(1.0, 2.0)), "in [0, 1]"),
    ("finetune_noisy_share", _real(0.0, 1.0), "in [0, 1) (fine-tuning needs clean chips)"),
    ("gce_q", _real(0.0, math.nextafter(1.0, 2.0), open_low=True), "in (0, 1]"),
    ("bootstrap_beta", _real(0.0, math.nextafter(1.0, 2.0)), "in [0, 1]"),
    ("average_from", _real(0.0, math.nextafter(1.0, 2.0)), "in [0, 1] (1: no average)"),
)
"""The numeric options and the values they accept (each message names the flag)."""


CLI_FLAGS = frozenset(
    {
        "epochs", "finetune_epochs", "finetune_lr", "freeze_encoder_epochs", "chip_size",
        "base_width", "depth", "train_chips", "val_chips", "batch_size", "block_size",
        "val_fraction", "min_labelled", "noisy_loss", "context", "elastic", "device",
        "precision", "seed", "num_threads", "patience", "refit", "contexts",
    }
)  # fmt: skip
"""`TrainConfig` fields with an ``eoseg train`` option of their own; every other field
is set with ``--set name=value`` (or in the ``--config`` file)."""


def flag(name: str) -> str:
    """How to set the `TrainConfig` field ``name`` on the ``eoseg train`` command line."""
    return f"--{name.replace('_', '-')}" if name in CLI_FLAGS else f"--set {name}=..."


def _check(config: TrainConfig, name: str, ok: Callable[[Any], bool], expected: str) -> None:
    value = getattr(config, name)
    try:
        good = ok(value)
    except (TypeError, ValueError):
        good = False
    if not good:
        raise InvalidParameterError(
            f"{flag(name)} must be {expected}; found {value!r}: give such a value "
            f"(or `{name} = ...` in the --config file)"
        )


def configure(base: TrainConfig | None = None, **options: object) -> TrainConfig:
    """``base`` (default `TrainConfig()`) with the options that are not None replaced.

    Raises:
        InvalidParameterError: On an unknown option name or an invalid value.
    """
    base = base or TrainConfig()
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise InvalidParameterError(
            f"unknown training options {unknown}; known: {sorted(known)}: check the spelling"
        )
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    return dataclasses.replace(base, **{k: v for k, v in given.items() if v is not None})  # type: ignore[arg-type]


def parse_settings(settings: list[str] | None) -> dict[str, object]:
    """``NAME=VALUE`` strings (the value in TOML syntax, bare words as strings) as options.

    Raises:
        InvalidParameterError: If a setting has no ``=`` or an unreadable value.
    """
    out: dict[str, object] = {}
    for item in settings or ():
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            raise InvalidParameterError(
                f"--set {item!r} is not NAME=VALUE: write e.g. --set gce_q=0.5"
            )
        try:
            value = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = text.strip()  # a bare word: a string option such as finetune_norm=train
        out[name.strip()] = tuple(value) if isinstance(value, list) else value
    return out


def load_train_config(path: str | os.PathLike[str]) -> TrainConfig:
    """Training options from a TOML file: `TrainConfig` fields as keys, top level or in
    a ``[train]`` table; fields left out keep their defaults.

    Raises:
        InputNotFoundError: If the file does not exist.
        InvalidParameterError: If it is not TOML or names unknown options.
    """
    file = Path(path)
    if not file.is_file():
        raise InputNotFoundError(f"training options file {file} not found: check the path")
    try:
        doc = tomllib.loads(file.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidParameterError(
            f"{file} is not valid TOML ({exc}): write `key = value` lines, e.g. `epochs = 20`"
        ) from exc
    table = doc.get("train", doc)
    if not isinstance(table, dict):
        raise InvalidParameterError(f"[train] in {file} must be a table of options")
    return configure(None, **table)
