"""Segmentation losses: cross-entropy, noise-robust variants and soft Jaccard.

Every loss ignores pixels labelled 255 (`eoseg.classes.IGNORE_ID`) and takes optional
per-class weights, averaged like ``torch.nn.functional.cross_entropy``: the sum of
``weight[target] * loss`` over labelled pixels divided by the sum of their weights.
Losses are computed in float32 whatever the logits' dtype (bf16 autocast on CUDA).

The noise-robust losses are meant for pretraining on noisy labels (rasterised
OpenStreetMap): generalized cross-entropy (Zhang & Sabuncu, NeurIPS 2018) and soft or
hard bootstrapping (Reed et al., ICLR workshop 2015). During fine-tuning the noisy chips
mixed in with the clean ones can take one of them too (`SegmentationLoss.noisy_kind`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch.nn import functional as F  # noqa: N812

from eoseg.classes import IGNORE_ID
from eoseg.errors import InvalidParameterError

LossKind = Literal["ce", "gce", "bootstrap"]
BootstrapMode = Literal["soft", "hard"]


def _labelled(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mask = target != IGNORE_ID
    return mask, torch.where(mask, target, torch.zeros_like(target)).long()


def _log_probs(logits: torch.Tensor) -> torch.Tensor:
    return F.log_softmax(logits.float(), dim=1)


def _pixel_loss(
    kind: LossKind,
    logp: torch.Tensor,
    safe: torch.Tensor,
    q: float,
    beta: float,
    mode: BootstrapMode,
) -> torch.Tensor:
    """Per-pixel ``(N, H, W)`` loss of ``kind`` from log-probabilities against ``safe`` ids."""
    log_py = logp.gather(1, safe.unsqueeze(1)).squeeze(1)
    if kind == "gce":
        return (1.0 - torch.exp(q * log_py)) / q  # p**q in log space: stable for tiny p
    if kind == "bootstrap":
        if mode == "soft":
            own = -(logp.exp() * logp).sum(dim=1)
        else:
            own = -logp.gather(1, logp.detach().argmax(dim=1, keepdim=True)).squeeze(1)
        return -beta * log_py + (1.0 - beta) * own
    return -log_py


def _weighted_mean(
    per_pixel: torch.Tensor, mask: torch.Tensor, safe: torch.Tensor, weight: torch.Tensor | None
) -> torch.Tensor:
    w = mask.float() if weight is None else weight.float()[safe] * mask
    total = w.sum()
    if total.item() == 0:  # nothing labelled: a zero that keeps the graph
        return (per_pixel * w).sum()
    return (per_pixel * w).sum() / total


def generalized_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    q: float = 0.7,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Generalized cross-entropy ``(1 - p_y**q) / q`` (Zhang & Sabuncu 2018).

    ``q -> 0`` gives cross-entropy, ``q = 1`` the (noise-robust) mean absolute error.

    Args:
        logits: ``(N, C, H, W)`` class logits.
        target: ``(N, H, W)`` class ids, 255 = ignore.
        q: Exponent in ``(0, 1]``.
        weight: Optional ``(C,)`` class weights.

    Returns:
        Scalar loss (0 when no pixel is labelled).

    Raises:
        InvalidParameterError: If ``q`` is outside ``(0, 1]``.
    """
    if not 0.0 < q <= 1.0:
        raise InvalidParameterError(f"GCE q must be in (0, 1]; got {q}")
    mask, safe = _labelled(target)
    per_pixel = _pixel_loss("gce", _log_probs(logits), safe, q, 1.0, "soft")
    return _weighted_mean(per_pixel, mask, safe, weight)


def bootstrap_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    beta: float = 0.95,
    mode: BootstrapMode = "soft",
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Bootstrapping loss (Reed et al. 2015): cross-entropy against a blended target.

    The target is ``beta * onehot(label) + (1 - beta) * b`` where ``b`` is the predicted
    distribution (``"soft"``; equivalent to an entropy penalty, the gradient flows
    through it) or the one-hot predicted class (``"hard"``; Reed et al. use beta 0.8).

    Args:
        logits: ``(N, C, H, W)`` class logits.
        target: ``(N, H, W)`` class ids, 255 = ignore.
        beta: Trust in the given labels, in ``[0, 1]``; 1 gives cross-entropy.
        mode: ``"soft"`` or ``"hard"``.
        weight: Optional ``(C,)`` class weights (indexed by the given label).

    Returns:
        Scalar loss (0 when no pixel is labelled).

    Raises:
        InvalidParameterError: If ``beta`` or ``mode`` is out of range.
    """
    if not 0.0 <= beta <= 1.0:
        raise InvalidParameterError(f"bootstrap beta must be in [0, 1]; got {beta}")
    if mode not in ("soft", "hard"):
        raise InvalidParameterError(f"bootstrap mode must be 'soft' or 'hard'; got {mode!r}")
    mask, safe = _labelled(target)
    per_pixel = _pixel_loss("bootstrap", _log_probs(logits), safe, 0.7, beta, mode)
    return _weighted_mean(per_pixel, mask, safe, weight)


def soft_jaccard_loss(
    logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0
) -> torch.Tensor:
    """Soft Jaccard (IoU) loss averaged over classes; pixels labelled 255 are ignored."""
    n_classes = logits.shape[1]
    mask = (target != IGNORE_ID).unsqueeze(1).float()
    probs = logits.float().softmax(dim=1) * mask
    onehot = F.one_hot(target.clamp(max=n_classes - 1).long(), n_classes).permute(0, 3, 1, 2)
    onehot = onehot.float() * mask
    inter = (probs * onehot).sum(dim=(0, 2, 3))
    union = (probs + onehot).sum(dim=(0, 2, 3)) - inter
    return 1.0 - ((inter + smooth) / (union + smooth)).mean()


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> tuple[float, ...]:
    """Class weights ``n / (k * count_c)`` from label frequencies (255 ignored).

    ``n`` is the number of labelled pixels and ``k`` the number of classes present, so a
    uniform label distribution gives weights of 1. Absent classes get weight 1 (they
    never enter the loss).

    Args:
        labels: Class ids of any shape (e.g. the ``y`` of the sampled chips).
        num_classes: Number of classes of the schema.

    Returns:
        One weight per class id.
    """
    ids = np.asarray(labels).ravel()
    counts = np.bincount(ids[ids != IGNORE_ID], minlength=num_classes)[:num_classes]
    present = counts > 0
    if not present.any():
        return (1.0,) * num_classes
    w = np.ones(num_classes, dtype=np.float64)
    w[present] = counts.sum() / (present.sum() * counts[present])
    return tuple(float(v) for v in w)


@dataclass(frozen=True, slots=True)
class SegmentationLoss:
    """A configured training loss: a pixel loss plus a weighted soft Jaccard term.

    Attributes:
        kind: ``"ce"`` (cross-entropy), ``"gce"`` or ``"bootstrap"``.
        weight: Optional per-class weights of the pixel loss.
        q: GCE exponent.
        beta: Bootstrapping trust in the labels.
        mode: Bootstrapping mode, ``"soft"`` or ``"hard"``.
        jaccard_weight: Weight of `soft_jaccard_loss` (0 disables it).
        noisy_kind: Pixel loss of the chips flagged noisy in a call (None: ``kind``).
    """

    kind: LossKind = "ce"
    weight: tuple[float, ...] | None = None
    q: float = 0.7
    beta: float = 0.95
    mode: BootstrapMode = "soft"
    jaccard_weight: float = 0.0
    noisy_kind: LossKind | None = None

    def __call__(
        self, logits: torch.Tensor, target: torch.Tensor, noisy: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Scalar loss of ``(N, C, H, W)`` logits against ``(N, H, W)`` ids (255 ignored).

        ``noisy`` (``(N,)`` bool, optional) flags chips whose pixels take ``noisy_kind``;
        the pixel loss is then averaged over all labelled pixels of the batch, each
        with its own kind.
        """
        w = None
        if self.weight is not None:
            w = torch.tensor(self.weight, dtype=torch.float32, device=logits.device)
        if noisy is not None and self.noisy_kind not in (None, self.kind) and bool(noisy.any()):
            loss = self._mixed(logits, target, w, noisy.to(logits.device))
        elif self.kind == "gce":
            loss = generalized_cross_entropy(logits, target, self.q, w)
        elif self.kind == "bootstrap":
            loss = bootstrap_loss(logits, target, self.beta, self.mode, w)
        else:
            loss = F.cross_entropy(logits.float(), target, weight=w, ignore_index=IGNORE_ID)
        if self.jaccard_weight > 0:
            loss = loss + self.jaccard_weight * soft_jaccard_loss(logits, target)
        return loss

    def _mixed(
        self,
        logits: torch.Tensor,
        target: torch.Tensor,
        w: torch.Tensor | None,
        noisy: torch.Tensor,
    ) -> torch.Tensor:
        mask, safe = _labelled(target)
        logp = _log_probs(logits)
        own = _pixel_loss(self.kind, logp, safe, self.q, self.beta, self.mode)
        robust = _pixel_loss(self.noisy_kind or self.kind, logp, safe, self.q, self.beta, self.mode)
        per_pixel = torch.where(noisy.view(-1, 1, 1), robust, own)
        return _weighted_mean(per_pixel, mask, safe, w)
