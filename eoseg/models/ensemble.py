"""Ensembles: several networks of one architecture whose class probabilities are averaged.

A model trained on a few dozen polygons depends on which of them its validation held out
and on its initial weights; averaging the probabilities of a few such models (a *deep
ensemble*, Lakshminarayanan et al. 2017) removes much of that spread. On
eolearn_slovenia (487 labelled pixels) three U-Nets 16/2 scored 0.854-0.874 OA and
0.369-0.377 mIoU on held-out truth where one scored 0.839-0.873 and 0.353-0.375
(benchmarks/README.md), and three of them cost less per pixel than one default GPU
U-Net 32/4.

An `Ensemble` is one `torch.nn.Module`: it takes the input normalised with the first
member's statistics, re-normalises it for each member (their statistics come from
their own samples of the cube), adds each member's logit adjustment, and returns the
log of the mean of the members' probabilities. Prediction and validation treat it as
any network returning logits (a softmax of its output is the mean probability).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


class Ensemble(nn.Module):
    """Mean class probabilities of several networks, as log-probabilities.

    Args:
        members: The networks (one architecture, same bands and classes).
        scale: ``(members, bands)``: input normalised with the first member's statistics
            times ``scale`` plus ``shift`` is each member's normalised input.
        shift: ``(members, bands)``.
        adjustment: ``(members, classes)`` logit adjustment of each member (zeros: none).
    """

    scale: torch.Tensor
    shift: torch.Tensor
    adjustment: torch.Tensor

    def __init__(
        self,
        members: Sequence[nn.Module],
        scale: torch.Tensor,
        shift: torch.Tensor,
        adjustment: torch.Tensor,
    ) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.register_buffer("scale", scale.float())
        self.register_buffer("shift", shift.float())
        self.register_buffer("adjustment", adjustment.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, classes, H, W)`` log mean probability for input ``(N, bands, H, W)``."""
        scale, shift, adjustment = self.scale, self.shift, self.adjustment
        logs = []
        for i, member in enumerate(self.members):
            xi = x * scale[i].view(1, -1, 1, 1).to(x.dtype) + shift[i].view(1, -1, 1, 1).to(x.dtype)
            logits = member(xi).float() + adjustment[i].view(1, -1, 1, 1)
            logs.append(torch.log_softmax(logits, dim=1))
        return torch.logsumexp(torch.stack(logs), dim=0) - math.log(len(logs))


def renormalisation(
    mean: Sequence[Sequence[float]], std: Sequence[Sequence[float]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` of `Ensemble` from each member's per-band mean and std: an input
    normalised with member 0's statistics becomes one normalised with member i's."""
    m = torch.tensor(mean, dtype=torch.float64)
    s = torch.tensor(std, dtype=torch.float64)
    scale = s[0] / s
    shift = (m[0] - m) / s
    return scale.float(), shift.float()
