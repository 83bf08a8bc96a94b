"""The mean weights a stage without validation ends on (`eoseg.train.average`)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from eoseg.classes import generic_schema
from eoseg.errors import InvalidParameterError
from eoseg.models.accel import Accelerator
from eoseg.models.card import ModelCard
from eoseg.models.unet import UNet
from eoseg.sampling import ChipSet
from eoseg.train.average import WeightAverage
from eoseg.train.config import TrainConfig
from eoseg.train.loop import StageSpec, fit_stage
from eoseg.train.losses import SegmentationLoss

SCHEMA = generic_schema(2)


def _chips(n: int = 8, size: int = 16) -> ChipSet:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 2, size, size)).astype("float32")
    y = (x[:, 0] > 0).astype("uint8")
    origins = np.zeros((n, 2), dtype="int64")
    return ChipSet(x, y, origins, ("b1", "b2"))


def _card(model: UNet) -> ModelCard:
    return ModelCard(name="t", bands=("b1", "b2"), mean=(0.0, 0.0), std=(1.0, 1.0),
                     classes=SCHEMA, chip_size=16, architecture=model.architecture)  # fmt: skip


def test_mean_of_the_steps_from_first_step() -> None:
    model = torch.nn.Linear(2, 1)
    avg = WeightAverage.for_stage(0.5, total_steps=6)
    assert avg is not None and avg.first_step == 4
    seen = []
    for step in range(1, 7):
        with torch.no_grad():
            model.weight.fill_(float(step))
        avg.update(model, step)
        if step >= 4:
            seen.append(float(step))
    assert avg.count == 3
    assert avg.apply(model)
    assert model.weight.detach().numpy() == pytest.approx(np.full((1, 2), np.mean(seen)))
    restored = WeightAverage.from_state(avg.to_state())
    assert restored is not None and restored.count == 3 and restored.first_step == 4
    assert WeightAverage.for_stage(1.0, 10) is None


def test_integer_buffers_keep_their_last_value() -> None:
    model = torch.nn.BatchNorm1d(2)
    avg = WeightAverage(first_step=1)
    for step in (1, 2, 3):
        model.num_batches_tracked.fill_(step * 10)
        model.running_mean.fill_(float(step))
        avg.update(model, step)
    assert avg.mean is not None
    assert int(avg.mean["num_batches_tracked"]) == 30
    assert float(avg.mean["running_mean"][0]) == pytest.approx(2.0)


def _spec(average_from: float) -> StageSpec:
    return StageSpec(stage="refit", epochs=3, lr=1e-2, freeze_epochs=0,
                     loss=SegmentationLoss(kind="ce"), batch_size=4, weight_decay=0.0,
                     jitter=0.0, keep_best=False, average_from=average_from)  # fmt: skip


def _fit(average_from: float) -> tuple[UNet, dict]:
    torch.manual_seed(0)
    model = UNet(2, 2, 4, 2)
    chips = _chips()
    none = ChipSet(chips.x[:0], chips.y[:0], chips.origins[:0], chips.bands)
    accel = Accelerator(torch.device("cpu"), bf16=False, channels_last=False)
    history = fit_stage(model, chips, none, _card(model), _spec(average_from),
                        torch.Generator().manual_seed(0), accel)  # fmt: skip
    return model, history


def test_stage_without_validation_ends_on_the_mean() -> None:
    last, plain = _fit(1.0)
    mean, history = _fit(0.5)
    # 3 epochs of 2 steps: steps 4, 5 and 6 averaged
    assert "averaged_steps" not in plain and history["averaged_steps"] == 3
    assert history["train_loss"] == plain["train_loss"]  # the same steps were taken
    differs = [
        not torch.equal(a, b)
        for (k, a), b in zip(mean.state_dict().items(), last.state_dict().values(), strict=True)
        if a.dtype.is_floating_point
    ]
    assert any(differs)


def test_average_from_is_checked() -> None:
    with pytest.raises(InvalidParameterError, match=r"average_from=\.\.\. must be in \[0, 1\]"):
        TrainConfig(average_from=1.5)
    assert dataclasses.replace(TrainConfig(), average_from=1.0).average_from == 1.0
