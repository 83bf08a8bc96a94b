"""Ensembles of networks saved as one model: the mean probability, saved and loaded."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from eoseg.classes import generic_schema
from eoseg.errors import InvalidParameterError
from eoseg.models import ModelCard, UNet, load_model, save_model
from eoseg.models.card import adjust_logits, normalize
from eoseg.models.ensemble import Ensemble, renormalisation
from eoseg.train.config import TrainConfig
from eoseg.train.ensemble import MEMBERS, check_members, members_for, save_ensemble

BANDS = ("b1", "b2", "b3")


def _member(seed: int, tmp_path) -> tuple[ModelCard, object]:
    torch.manual_seed(seed)
    net = UNet(len(BANDS), 4, base_width=4, depth=2).eval()
    rng = np.random.default_rng(seed)
    card = ModelCard(
        name="m",
        bands=BANDS,
        mean=tuple(rng.uniform(100, 300, 3).round(3)),
        std=tuple(rng.uniform(10, 50, 3).round(3)),
        classes=generic_schema(4),
        chip_size=32,
        architecture=net.architecture,
        logit_adjustment=tuple(rng.normal(0, 0.5, 4).round(3)),
        parameters=10,
        flops_per_pixel=100.0,
        fingerprint=f"f{seed}",
        metrics={"val_miou": 0.5 + seed / 10, "val_accuracy": 0.8, "val_note": "n"},
    )
    folder = tmp_path / f"member-{seed}"
    return save_model(net, card, folder), folder


def _probabilities(model: torch.nn.Module, card: ModelCard, raw: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        logits = adjust_logits(model(normalize(raw, card)), card)
        return torch.softmax(logits, 1).numpy()


def test_an_ensemble_is_the_mean_of_its_members_probabilities(tmp_path) -> None:
    """Each member sees the input normalised with its own statistics and adds its own
    logit adjustment; the saved ensemble loads verified and gives their mean."""
    members = [_member(s, tmp_path) for s in (0, 1, 2)]
    cards = [c for c, _ in members]
    raw = torch.from_numpy(np.random.default_rng(5).uniform(0, 400, (2, 3, 32, 32))).float()
    expected = np.mean([_probabilities(load_model(d)[0], c, raw) for c, d in members], axis=0)
    card = save_ensemble([d for _, d in members], cards, tmp_path / "ens", "members: 3 (test)")
    model, loaded = load_model(tmp_path / "ens")
    assert isinstance(model, Ensemble) and len(model.members) == 3
    assert loaded.version == card.version and loaded.architecture["members"] == 3
    assert loaded.logit_adjustment == () and loaded.parameters == 30
    assert loaded.mean == cards[0].mean  # the input is normalised as for the first
    got = _probabilities(model, loaded, raw)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert np.allclose(got.sum(1), 1, atol=1e-5)
    assert loaded.metrics["val_miou"] == pytest.approx(0.6)  # mean of the members'
    assert [m["version"] for m in loaded.metrics["members"]] == [c.version for c in cards]
    assert "members: 3 (test)" in loaded.sampling["why"]


def test_renormalisation_maps_the_first_members_input_to_each_members() -> None:
    mean, std = [[1.0, 2.0], [3.0, -1.0]], [[2.0, 4.0], [0.5, 8.0]]
    scale, shift = renormalisation(mean, std)
    raw = torch.tensor([7.0, -3.0])
    first = (raw - torch.tensor(mean[0])) / torch.tensor(std[0])
    for i in range(2):
        own = (raw - torch.tensor(mean[i])) / torch.tensor(std[i])
        torch.testing.assert_close(first * scale[i] + shift[i], own)


def test_members_are_derived_from_the_first_networks_plan() -> None:
    card = ModelCard(
        name="m", bands=BANDS, mean=(0,) * 3, std=(1,) * 3, classes=generic_schema(2),
        chip_size=32, architecture={"name": "unet", "base_width": 4, "depth": 2},
        sampling={"refit_chips": 64},
    )  # fmt: skip
    assert members_for(TrainConfig(), card)[0] == MEMBERS
    no_refit = dataclasses.replace(card, sampling={"refit_chips": 0})
    assert members_for(TrainConfig(), no_refit)[0] == 1
    assert members_for(TrainConfig(members=2), no_refit)[0] == 2
    assert members_for(TrainConfig(refit=True), card)[0] == 1  # asked for, not derived
    multi = dataclasses.replace(card, contexts={"contexts": [1, 2]})
    assert members_for(TrainConfig(), multi)[0] == 1
    with pytest.raises(InvalidParameterError, match="--members"):
        check_members(TrainConfig(members=3, contexts=(1, 2)))
    with pytest.raises(InvalidParameterError, match="members"):
        TrainConfig(members=0)
