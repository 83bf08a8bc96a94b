"""The chips of fine-tuning: clean chips, rehearsal of missing classes, replay of noisy ones.

Fine-tuning on a small clean set trains on its clean chips, plus noisy pretraining chips
showing the classes the clean labels lack (`rehearse_missing`), with a share of all of
them replaced by noisy pretraining chips from the whole area (`replay_noisy`) so that the
model keeps seeing the whole area. The noisy chips are flagged: they take their own pixel
loss (`eoseg.train.losses.SegmentationLoss.noisy_kind`).
"""

from __future__ import annotations

import logging

import numpy as np

from eoseg.classes import IGNORE_ID
from eoseg.sampling import ChipSet

logger = logging.getLogger(__name__)


def finetune_chips(
    clean: ChipSet, noisy: ChipSet, n_classes: int, *, rehearse: bool, share: float, seed: int
) -> tuple[ChipSet, np.ndarray]:
    """The fine-tuning chips and, per chip, whether its labels are the noisy ones.

    Args:
        clean: Chips of the clean labels.
        noisy: Pretraining chips.
        n_classes: Classes of the schema.
        rehearse: Add noisy chips of the classes the clean chips lack.
        share: Share of the chips replaced by noisy pretraining chips.
        seed: Seed of the replay.
    """
    n_clean = len(clean)
    # Rehearsal first: which classes are missing is a property of the clean labels alone.
    if rehearse:
        clean = rehearse_missing(clean, noisy, n_classes)
    rehearsed = np.arange(len(clean)) >= n_clean  # rehearsed chips follow the clean ones
    chips, keep = _replay(clean, noisy, share, seed)
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
