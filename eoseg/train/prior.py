"""The class prior a model is trained under, and the logit adjustment that undoes it.

Chips are drawn class-balanced (`eoseg.sampling`): each class present is the target of
about as many chips as any other, and each chip is centred on a pixel of its class. A
network trained with cross-entropy on those chips learns their class frequencies as its
prior, so rare classes (a few building footprints, a shrubland polygon) are predicted far
more often than the labels say they occur: on the real samples the map over-predicted
them and lost overall accuracy to a per-pixel random forest trained on the same labels
(benchmarks/README.md).

Logit adjustment (Menon et al., "Long-tail learning via logit adjustment", ICLR 2021)
corrects that after training: adding ``log p_labels(c) - log p_chips(c)`` to the logits
of class ``c`` turns a classifier of the chips' prior into one of the labels' prior,
while the balanced sampling still gives rare classes the gradient they need. Classes
missing from either side get no adjustment.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from eoseg.classes import IGNORE_ID

logger = logging.getLogger(__name__)


def class_pixels(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Labelled pixels per class id ``0..n_classes-1`` of a labels array (255 ignored)."""
    values = np.asarray(labels).ravel()
    values = values[values != IGNORE_ID]
    return np.bincount(values, minlength=n_classes)[:n_classes].astype(np.int64)


def logit_adjustment(
    label_pixels: Sequence[int] | np.ndarray, chip_pixels: Sequence[int] | np.ndarray
) -> tuple[float, ...]:
    """Per class, ``log`` of its share of the labels over its share of the chips.

    Args:
        label_pixels: Labelled pixels per class id in the labels the stage trains on
            (the prior the map should follow).
        chip_pixels: Labelled pixels per class id in the stage's training chips (the
            prior the network learned), same length.

    Returns:
        One float per class; 0 where a class has no pixel on either side.
    """
    labels = np.asarray(label_pixels, dtype=np.float64)
    chips = np.asarray(chip_pixels, dtype=np.float64)
    n = max(len(labels), len(chips))
    labels = np.pad(labels, (0, n - len(labels)))
    chips = np.pad(chips, (0, n - len(chips)))
    both = (labels > 0) & (chips > 0)
    if not both.any():
        return (0.0,) * n
    p_labels = labels / labels[both].sum()
    p_chips = chips / chips[both].sum()
    out = np.zeros(n)
    out[both] = np.log(p_labels[both]) - np.log(p_chips[both])
    logger.info("logit adjustment per class %s", np.round(out, 3).tolist())
    return tuple(float(round(v, 6)) for v in out)
