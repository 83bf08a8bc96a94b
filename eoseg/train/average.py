"""The mean of a model's weights over the optimiser steps of a stage.

A stage with no validation to pick an epoch (the refit on all labels of a few dozen
polygons, or a run with ``--val-fraction 0``) ends on its last weights, and with a few
hundred labelled pixels those depend on the seed: the last batches seen, the last
augmentations drawn. Averaging the weights of every step from ``average_from`` of the
stage on (stochastic weight averaging, Izmailov et al., UAI 2018, here along the
one-cycle schedule) ends near the centre of the region the steps wander in, which
generalises better and depends less on the seed. Batch-norm running statistics are
averaged with the weights; integer buffers (batch counts) keep their last value.

On ``eolearn_slovenia`` (refit for the epochs the validated stage ran; held-out OA /
mIoU, mean of five seeds; `benchmarks/README.md`): last weights 0.839 / 0.361 (three
seeds), averaged from half the steps 0.842 / 0.359, from a quarter 0.848 / 0.363, from a
tenth (the default) 0.853 / 0.364.

The running mean is part of a stage's checkpoint, so a resumed run ends on the same
average as an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(slots=True)
class WeightAverage:
    """Running arithmetic mean of a model's weights from step ``first_step`` on.

    Attributes:
        first_step: The first optimiser step (from 1) whose weights enter the mean.
        count: Steps averaged so far.
        mean: The mean state dict (None before ``first_step``).
    """

    first_step: int
    count: int = 0
    mean: dict[str, torch.Tensor] | None = field(default=None)

    @classmethod
    def for_stage(cls, average_from: float | None, total_steps: int) -> WeightAverage | None:
        """The average of a stage of ``total_steps`` steps, or None when off (``>= 1``)."""
        if average_from is None or average_from >= 1:
            return None
        return cls(first_step=max(1, math.floor(average_from * total_steps) + 1))

    def update(self, model: torch.nn.Module, step: int) -> None:
        """Add the weights after optimiser step ``step`` (from 1) when it is averaged."""
        if step < self.first_step:
            return
        self.count += 1
        state = model.state_dict()
        if self.mean is None:
            self.mean = {k: v.detach().clone() for k, v in state.items()}
            return
        for key, value in state.items():
            if value.dtype.is_floating_point:
                self.mean[key].add_(value.detach() - self.mean[key], alpha=1.0 / self.count)
            else:
                self.mean[key].copy_(value)

    def apply(self, model: torch.nn.Module) -> bool:
        """Load the mean into ``model``; False (model untouched) when nothing was averaged."""
        if self.mean is None:
            return False
        model.load_state_dict(self.mean)
        return True

    def to_state(self) -> dict[str, Any]:
        """Checkpointable state (see `from_state`)."""
        return {"first_step": self.first_step, "count": self.count, "mean": self.mean}

    @classmethod
    def from_state(cls, state: dict[str, Any] | None) -> WeightAverage | None:
        """The average saved by `to_state` (None stays None)."""
        if state is None:
            return None
        return cls(int(state["first_step"]), int(state["count"]), state.get("mean"))
