"""Training at several contexts: chips widened around the sampled ones, fusion weights
fitted on validation chips.

`widen_chips` turns the sampled chips (context 1, `eoseg.sampling.sample_chips`) into
chips of context ``c``: the window of ``c x chip_size`` px centred on each chip, its image
pooled to ``chip_size`` px by the rule prediction follows (`eoseg.contexts.pool`,
mirrored beyond the grid edge as prediction mirrors it), and its labels kept at full
resolution (``c x chip_size`` px; the labels of blocks outside the chip's part hidden,
255 beyond the grid). The loss compares them with the network's output upsampled
bilinearly (`eoseg.train.loop.to_label_size`), as prediction upsamples probabilities. A
run with ``contexts=(1, 2, 4)`` samples its chips once per context with the same seeds
(so the chips of every context are centred on the same pixels), trains on all of them,
each batch of one context (`eoseg.train.loop.fit_stage`), and keeps the epoch whose fused
contexts score the best validation mIoU.

`fit_fusion` scores each context on the validation chips of the stage that made the
model, on the pixels of the context-1 chips (so every context is scored on the same
pixels, with the centre of its own window), and chooses the fusion weights by grid
search over the simplex (steps of `WEIGHT_STEP`) for the least class-balanced
cross-entropy of the fused probabilities: a proper score, smooth where mIoU on a few
chips jumps, with each class counting alike as in mIoU. The model
card records the weights with each context's and the fusion's validation mIoU.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch.nn import functional

from eoseg.blocks import BlockSplit, Part
from eoseg.classes import IGNORE_ID
from eoseg.contexts import PROB_FLOOR, fusion_record, pool, read_mirrored, upsample
from eoseg.metrics import report_from_confusion
from eoseg.model_input import TimeMode, input_stack
from eoseg.models.accel import Accelerator
from eoseg.models.card import ModelCard, adjust_logits, normalize
from eoseg.sampling import ChipSet

logger = logging.getLogger(__name__)

WEIGHT_STEP = 0.05
"""Step of the grid of fusion weights (0.1 for more than four contexts)."""
MAX_FIT_PIXELS = 2**18
"""Most validation pixels the weight search scores (an even subsample beyond)."""


def widen_chips(
    cube: xr.Dataset,
    chips: ChipSet,
    labels: xr.DataArray,
    *,
    split: BlockSplit,
    part: Part,
    context: int,
    time: TimeMode,
) -> ChipSet:
    """The chips of context ``context`` around sampled chips.

    Args:
        cube: The cube the chips were cut from.
        chips: Sampled chips (context 1).
        labels: The labels they were sampled from.
        split: The block split of the sampling.
        part: The part of ``split`` they were sampled from (other parts' labels hidden).
        context: Extent as a multiple of the chip size.
        time: The model input over the dates; a per-date chip keeps its date.

    Returns:
        ``x`` pooled to the chips' size, ``y`` at ``context`` times it; ``origins`` those
        of ``chips``.
    """
    k = int(chips.x.shape[-1])
    wide, pad = context * k, (context - 1) * k // 2
    band_index = [list(map(str, cube["data"]["band"].values)).index(b) for b in chips.bands]
    data = cube["data"].isel(band=band_index)
    valid = cube.get("valid")
    xs, ys = [], []
    for i, (r, c) in enumerate(chips.origins.tolist()):
        rows, cols = (r - pad, r - pad + wide), (c - pad, c - pad + wide)
        images, ok = input_stack(
            read_mirrored(data, rows, cols),
            None if valid is None else read_mirrored(valid, rows, cols),
            time,
        )
        t = _same_date(images[:, :, pad : pad + k, pad : pad + k], chips.x[i])
        lab = _label_window(labels, split, part, rows, cols)
        lab[~ok[t]] = IGNORE_ID
        xs.append(pool(images[t], context))
        ys.append(lab)
    if not xs:
        x = np.zeros((0, len(chips.bands), k, k), np.float32)
        return ChipSet(x, np.zeros((0, wide, wide), np.uint8), chips.origins, chips.bands)
    return ChipSet(np.stack(xs), np.stack(ys), chips.origins, chips.bands)


def _same_date(images: np.ndarray, chip: np.ndarray) -> int:
    """The date whose image is the chip's (a per-date chip is one date of its window)."""
    if len(images) == 1:
        return 0
    differ = ~((images == chip[None]) | (np.isnan(images) & np.isnan(chip[None])))
    return int(differ.reshape(len(images), -1).sum(axis=1).argmin())


def _label_window(
    labels: xr.DataArray,
    split: BlockSplit,
    part: Part,
    rows: tuple[int, int],
    cols: tuple[int, int],
) -> np.ndarray:
    """Labels of a window that may pass the grid edge: 255 beyond it and in the blocks
    of other parts than ``part``."""
    h, w = labels.shape
    out = np.full((rows[1] - rows[0], cols[1] - cols[0]), IGNORE_ID, np.uint8)
    y0, y1, x0, x1 = max(rows[0], 0), min(rows[1], h), max(cols[0], 0), min(cols[1], w)
    if y0 >= y1 or x0 >= x1:
        return out
    lab = np.asarray(labels.isel(y=slice(y0, y1), x=slice(x0, x1)).values)
    if part != "all":
        n_rows, n_cols = split.grid
        by = np.minimum(np.arange(y0, y1) // split.block_size, n_rows - 1)
        bx = np.minimum(np.arange(x0, x1) // split.block_size, n_cols - 1)
        member = np.zeros((n_rows, n_cols), bool)
        for block in split.blocks(part):
            member[block] = True
        lab = np.where(member[np.ix_(by, bx)], lab, IGNORE_ID)
    out[y0 - rows[0] : y1 - rows[0], x0 - cols[0] : x1 - cols[0]] = lab
    return out


def context_log_probs(
    model: torch.nn.Module,
    card: ModelCard,
    chips: ChipSet,
    context: int,
    accel: Accelerator,
    batch_size: int = 16,
) -> torch.Tensor:
    """Log-probabilities ``(N, class, k, k)`` of the central ``k x k`` pixels of chips of
    a context (those of the context-1 chips they widen), upsampled as prediction does."""
    k = int(chips.x.shape[-1])
    pad = (context - 1) * k // 2
    out = []
    model.eval()
    with torch.no_grad(), accel.autocast():
        for i in range(0, len(chips), batch_size):
            x = normalize(torch.from_numpy(chips.x[i : i + batch_size]), card)
            logits = adjust_logits(model(accel.to_input(x)).float(), card)
            probs = torch.softmax(logits, dim=1).cpu()
            if context > 1:
                probs = torch.stack([torch.from_numpy(upsample(p.numpy(), context)) for p in probs])
            centre = probs[..., pad : pad + k, pad : pad + k]
            out.append(torch.log(centre.clamp_min(PROB_FLOOR)))
    return torch.cat(out)


def fit_fusion(
    model: torch.nn.Module,
    card: ModelCard,
    vals: Mapping[int, ChipSet],
    accel: Accelerator,
) -> dict[str, Any]:
    """The card's ``contexts`` entry: fusion weights fitted on validation chips, and the
    validation mIoU and cross-entropy of each context and of the fusion.

    Args:
        model: The trained network.
        card: Its card (with the logit adjustment prediction applies).
        vals: Validation chips per context, each widened from ``vals[1]`` (same order).
        accel: Device and precision.

    Returns:
        `eoseg.contexts.fusion_record`; equal weights (and no figures) without a
        labelled validation pixel.
    """
    contexts = sorted(vals)
    base = vals[1]
    mask = torch.from_numpy(base.y != IGNORE_ID)
    if not len(base) or not bool(mask.any()):
        return fusion_record(
            contexts, dict.fromkeys(contexts, 1 / len(contexts)),
            val_note="no labelled validation pixel: equal weights",
        )  # fmt: skip
    y = torch.from_numpy(base.y.astype(np.int64))[mask]
    logp = torch.stack(
        [
            context_log_probs(model, card, vals[c], c, accel).permute(0, 2, 3, 1)[mask]
            for c in contexts
        ]
    )  # (context, pixel, class)
    step = max(1, len(y) // MAX_FIT_PIXELS)
    weights = dict(zip(contexts, _search_weights(logp[:, ::step], y[::step]), strict=True))
    w = torch.tensor([weights[c] for c in contexts]).view(-1, 1, 1)
    fused = (w * logp).sum(dim=0)
    n = len(card.classes)
    miou = {str(c): _miou(logp[i], y, n) for i, c in enumerate(contexts)}
    ce = {str(c): _cross_entropy(logp[i], y) for i, c in enumerate(contexts)}
    note = (
        f"{len(base)} validation chips, {len(y)} labelled pixels, scored on the pixels of "
        "the context-1 chips; weights: least class-balanced cross-entropy of the fusion "
        f"on a grid of step {_step(len(contexts))} over the simplex"
    )
    logger.debug("context fusion weights %s (val mIoU %s)", weights, miou)
    return fusion_record(
        contexts,
        weights,
        val_miou={**miou, "fused": _miou(fused, y, n)},
        val_cross_entropy={**ce, "fused": _cross_entropy(fused, y)},
        val_note=note,
    )


def _step(n: int) -> float:
    return WEIGHT_STEP if n <= 4 else 2 * WEIGHT_STEP


def _search_weights(logp: torch.Tensor, y: torch.Tensor) -> tuple[float, ...]:
    """The weights (one per context of ``logp``: ``(context, pixel, class)``) on the
    simplex grid whose fusion has the least class-balanced cross-entropy; the first
    found on a tie."""
    n, pixels, classes = logp.shape
    m = round(1 / _step(n))
    grid = (
        torch.tensor(
            [
                [*h, m - sum(h)]
                for h in itertools.product(range(m + 1), repeat=n - 1)
                if sum(h) <= m
            ],
            dtype=torch.float32,
        )
        / m
    )
    onehot = functional.one_hot(y, classes).float()  # (pixel, class)
    count = onehot.sum(dim=0)
    chunk = max(1, 2**24 // (pixels * classes))  # bounds the (weights, pixel, class) block
    scores = []
    for start in range(0, len(grid), chunk):
        fused = torch.einsum("gn,npk->gpk", grid[start : start + chunk], logp)
        loss = torch.logsumexp(fused, dim=2) - fused.gather(
            2, y.view(1, -1, 1).expand(len(fused), -1, 1)
        ).squeeze(2)
        per_class = (loss @ onehot)[:, count > 0] / count[count > 0]
        scores.append(per_class.mean(dim=1))
    best = int(torch.cat(scores).argmin())
    return tuple(round(float(v), 6) for v in grid[best])


def _cross_entropy(logp: torch.Tensor, y: torch.Tensor) -> float:
    """Class-balanced cross-entropy of (unnormalised) log-probabilities ``(pixel, class)``:
    the mean over the classes present in ``y`` of their pixels' mean cross-entropy, so
    that each class counts alike, as in mIoU (a plain mean lets the many pixels of
    common classes outvote a rare class that only a wide context tells apart)."""
    loss = functional.cross_entropy(logp, y, reduction="none")
    n = logp.shape[1]
    total = torch.zeros(n).index_add_(0, y, loss)
    count = torch.bincount(y, minlength=n).float()
    present = count > 0
    return float((total[present] / count[present]).mean())


def _miou(logp: torch.Tensor, y: torch.Tensor, n: int) -> float:
    """mIoU of the argmax over the classes present in ``y`` (as `eoseg.train.loop.evaluate`)."""
    pred = logp.argmax(dim=1).numpy()
    cm = np.bincount(y.numpy() * n + pred, minlength=n * n).reshape(n, n)
    iou = np.asarray(report_from_confusion(cm, tuple(map(str, range(n)))).iou)
    return float(iou[cm.sum(axis=1) > 0].mean())


Widen = Callable[[ChipSet, xr.DataArray, Part], ChipSet]
"""``(chips, labels, part) -> wider chips``: what chip sampling applies for a wider context."""


def widener(cube: xr.Dataset, split: BlockSplit, context: int, time: TimeMode) -> Widen:
    """The `widen_chips` of one context, for `eoseg.train.run.sample_training_chips`."""

    def widen(chips: ChipSet, labels: xr.DataArray, part: Part) -> ChipSet:
        return widen_chips(cube, chips, labels, split=split, part=part, context=context, time=time)

    return widen
