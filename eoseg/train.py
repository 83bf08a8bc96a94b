"""Training: pretrain a U-Net on noisy labels, then fine-tune on a small clean set.

The model input is the per-pixel temporal median of valid observations
(`eoseg.sampling.composite`), normalised with per-band statistics of the training chips
(`eoseg.models.normalize`). Loss is cross-entropy (255 ignored) plus a soft Jaccard loss.
Runs are deterministic for a given seed, data and thread count.
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
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn
from torch.nn import functional as F  # noqa: N812

from eoseg.classes import IGNORE_ID, ClassSchema, LandClass
from eoseg.errors import InvalidParameterError
from eoseg.metrics import confusion_matrix, report_from_confusion
from eoseg.models import ModelCard, UNet, count_flops_per_pixel, count_parameters, save_model
from eoseg.models import normalize as normalize_chip
from eoseg.sampling import ChipSet, sample_chips, split_blocks

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


def soft_jaccard_loss(
    logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0
) -> torch.Tensor:
    """Soft Jaccard (IoU) loss averaged over classes; pixels labelled 255 are ignored."""
    n_classes = logits.shape[1]
    mask = (target != IGNORE_ID).unsqueeze(1).float()
    probs = logits.softmax(dim=1) * mask
    onehot = F.one_hot(target.clamp(max=n_classes - 1).long(), n_classes).permute(0, 3, 1, 2)
    onehot = onehot.float() * mask
    inter = (probs * onehot).sum(dim=(0, 2, 3))
    union = (probs + onehot).sum(dim=(0, 2, 3)) - inter
    return 1.0 - ((inter + smooth) / (union + smooth)).mean()


def _augment(x: torch.Tensor, y: torch.Tensor, jitter: float, gen: torch.Generator) -> tuple:
    k = int(torch.randint(0, 4, (1,), generator=gen))
    x, y = torch.rot90(x, k, dims=(-2, -1)), torch.rot90(y, k, dims=(-2, -1))
    if bool(torch.randint(0, 2, (1,), generator=gen)):
        x, y = torch.flip(x, dims=(-1,)), torch.flip(y, dims=(-1,))
    if jitter > 0:
        gain = 1.0 + (torch.rand(x.shape[0], x.shape[1], 1, 1, generator=gen) * 2 - 1) * jitter
        x = x * gain
    return x, y


def evaluate(
    model: nn.Module, chips: ChipSet, card: ModelCard, batch_size: int = 16
) -> dict[str, Any]:
    """Validation metrics of ``model`` on ``chips``: ``val_miou``, ``val_accuracy``, IoUs."""
    n = len(card.classes)
    cm = np.zeros((n, n), dtype=np.int64)
    model.eval()
    with torch.no_grad():
        for i in range(0, len(chips), batch_size):
            x = normalize_chip(torch.from_numpy(chips.x[i : i + batch_size]), card)
            pred = model(x).argmax(dim=1).numpy()
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


def _fit(
    model: UNet,
    chips: ChipSet,
    val: ChipSet,
    card: ModelCard,
    *,
    stage: str,
    epochs: int,
    lr: float,
    freeze_epochs: int,
    config: TrainConfig,
    gen: torch.Generator,
    progress: Progress | None,
) -> dict[str, list[float | None]]:
    history: dict[str, list[float | None]] = {"train_loss": [], "val_miou": []}
    if epochs == 0 or len(chips) == 0:
        return history
    x_all, y_all = torch.from_numpy(chips.x), torch.from_numpy(chips.y).long()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=config.weight_decay)
    batches = -(-len(chips) // config.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * batches)
    encoder = model.encoder_parameters()
    step = 0
    for epoch in range(epochs):
        frozen = epoch < freeze_epochs
        for p in encoder:
            p.requires_grad_(not frozen)
        model.train()
        if frozen:  # keep the frozen encoder's batch-norm statistics too
            model.encoder.eval()
            model.bottleneck.eval()
        perm = torch.randperm(len(chips), generator=gen)
        total_loss = 0.0
        for b in range(batches):
            idx = perm[b * config.batch_size : (b + 1) * config.batch_size]
            x, y = _augment(x_all[idx], y_all[idx], config.jitter, gen)
            logits = model(normalize_chip(x, card))
            loss = F.cross_entropy(logits, y, ignore_index=IGNORE_ID)
            if config.jaccard_weight > 0:
                loss = loss + config.jaccard_weight * soft_jaccard_loss(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total_loss += loss.item()
            step += 1
            if progress is not None:
                progress(stage, step, epochs * batches, {"epoch": epoch + 1, "loss": loss.item()})
        metrics = evaluate(model, val, card) if len(val) else {"val_miou": None}
        history["train_loss"].append(total_loss / batches)
        history["val_miou"].append(metrics["val_miou"])
        logger.info(
            "%s epoch %d/%d loss %.4f val mIoU %s%s",
            stage, epoch + 1, epochs, total_loss / batches, metrics["val_miou"],
            " (encoder frozen)" if frozen else "",
        )  # fmt: skip
        if progress is not None:
            info = {"epoch": epoch + 1, "loss": total_loss / batches, **metrics}
            progress(stage, step, epochs * batches, info)
    for p in encoder:
        p.requires_grad_(True)
    return history


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
        return _train(cube, labels, out_dir, schema, config, finetune_labels, progress, name)
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
        sets[stage] = (train, val)
        logger.info("%s: %d training and %d validation chips", stage, len(train), len(val))
    if progress is not None:
        progress("sample", len(stages), len(stages), {})
    pre_train, pre_val = sets["pretrain"]
    mean, std = _band_stats(pre_train)
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    model = UNet(len(pre_train.bands), len(schema), config.base_width, config.depth)
    card = ModelCard(
        name=name,
        bands=pre_train.bands,
        mean=mean,
        std=std,
        classes=schema,
        chip_size=config.chip_size,
        architecture={"name": "unet", "base_width": config.base_width, "depth": config.depth},
        parameters=count_parameters(model),
        flops_per_pixel=count_flops_per_pixel(model, len(pre_train.bands), config.chip_size),
        fingerprint=_fingerprint(config, schema, [c for pair in sets.values() for c in pair]),
    )
    fit: dict[str, Any] = {"card": card, "config": config, "gen": gen, "progress": progress}
    metrics: dict[str, Any] = {
        "pretrain": _fit(model, pre_train, pre_val, stage="pretrain", epochs=config.epochs,
                         lr=config.lr, freeze_epochs=0, **fit),
    }  # fmt: skip
    val = pre_val
    if "finetune" in sets:
        ft_train, val = sets["finetune"]
        metrics["finetune"] = _fit(
            model, ft_train, val, stage="finetune", epochs=config.finetune_epochs,
            lr=config.finetune_lr, freeze_epochs=config.freeze_encoder_epochs, **fit,
        )  # fmt: skip
    if len(val):
        metrics.update(evaluate(model, val, card))
    metrics["chips"] = {k: [len(t), len(v)] for k, (t, v) in sets.items()}
    card = dataclasses.replace(card, metrics=metrics)
    return save_model(model, card, out_dir)


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
    schema = _read_schema(classes) if classes else _schema_from_labels(labels, clean)
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


def _read_schema(path: Path) -> ClassSchema:
    try:
        return ClassSchema.from_dict(json.loads(Path(path).read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidParameterError(
            f"could not read the class schema {path} ({exc}): expected a JSON list of "
            '{"id": 0, "name": "water", "color": "#1f78b4"} entries with ids 0..n-1'
        ) from exc


def _schema_from_labels(*stores: xr.DataArray | None) -> ClassSchema:
    import dask.array as da

    top = max(
        int(da.max(da.where(s.data == IGNORE_ID, 0, s.data)).compute())
        for s in stores
        if s is not None
    )
    palette = (
        "#1f78b4",
        "#1b7837",
        "#a6dba0",
        "#fee08b",
        "#d73027",
        "#404040",
        "#762a83",
        "#e08214",
        "#8c510a",
        "#01665e",
    )
    return ClassSchema(
        tuple(LandClass(i, f"class_{i}", palette[i % len(palette)]) for i in range(top + 1))
    )
