"""The logit adjustment that gives a map the labels' class prior, not the chips'."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from eoseg.blend import Lattice
from eoseg.models import load_model
from eoseg.models.card import adjust_logits, save_model
from eoseg.tile_prediction import predict_window
from eoseg.train.prior import class_pixels, logit_adjustment
from tests.conftest import save_untrained_model


def test_adjustment_is_the_log_ratio_of_the_priors() -> None:
    # labels: 90 % / 10 %; balanced chips: 50 % / 50 %
    adj = logit_adjustment([900, 100], [500, 500])
    assert adj == pytest.approx((math.log(0.9 / 0.5), math.log(0.1 / 0.5)))


def test_classes_missing_on_either_side_are_not_adjusted() -> None:
    adj = logit_adjustment([0, 300, 100], [50, 100, 100, 7])
    # shares over the classes present on both sides: labels 3/4, 1/4; chips 1/2, 1/2
    assert adj == pytest.approx((0.0, math.log(1.5), math.log(0.5), 0.0))
    assert logit_adjustment([0, 0], [5, 5]) == (0.0, 0.0)


def test_balanced_chips_with_the_adjustment_recover_the_labels_prior() -> None:
    """A classifier that is Bayes-optimal for the chips' prior, adjusted, is Bayes-optimal
    for the labels' prior: its posteriors equal the true ones."""
    rng = np.random.default_rng(0)
    prior_labels, prior_chips = np.array([0.95, 0.05]), np.array([0.5, 0.5])
    x = rng.normal(size=1000)
    # two unit-variance Gaussians at -1 and +1: log-likelihood ratio 2x
    loglik = np.stack([-0.5 * (x + 1) ** 2, -0.5 * (x - 1) ** 2])
    chips_logits = loglik + np.log(prior_chips)[:, None]
    true_logits = loglik + np.log(prior_labels)[:, None]
    adj = np.array(logit_adjustment(prior_labels * 1e4, prior_chips * 1e4))
    adjusted = chips_logits + adj[:, None]
    soft = lambda z: np.exp(z - z.max(0)) / np.exp(z - z.max(0)).sum(0)  # noqa: E731
    np.testing.assert_allclose(soft(adjusted), soft(true_logits), atol=1e-9)


def test_class_pixels_ignores_255() -> None:
    y = np.array([[0, 1, 1, 255], [2, 255, 1, 0]], np.uint8)
    assert class_pixels(y, 4).tolist() == [2, 3, 1, 0]


def test_prediction_applies_the_cards_adjustment(tmp_path: Path) -> None:
    bands = ("B02", "B03", "B04", "B08")
    folder = save_untrained_model(tmp_path / "m", bands)
    model, card = load_model(folder)
    window = np.random.default_rng(1).uniform(0, 0.3, (4, 64, 64)).astype("float32")
    lattice = Lattice(card.chip_size, card.chip_size // 2)
    plain = predict_window(model.eval(), card, window, lattice=lattice)
    boost = tuple(8.0 if k == 2 else 0.0 for k in range(len(card.classes)))
    adjusted_card = dataclasses.replace(card, logit_adjustment=boost)
    save_model(model, adjusted_card, tmp_path / "m2")
    model2, card2 = load_model(tmp_path / "m2")
    assert card2.logit_adjustment == boost  # written and read back
    adjusted = predict_window(model2.eval(), card2, window, lattice=lattice)
    assert (adjusted.argmax(0) == 2).mean() > (plain.argmax(0) == 2).mean()
    # the same as adding the bias to the logits of every chip before the blend
    x = torch.zeros(1, len(card.classes), 2, 2)
    assert adjust_logits(x, card2)[0, :, 0, 0].tolist() == list(boost)
