"""Training an ensemble: several networks from several seeds, saved as one model.

`train_members` trains the first network as any run does; its sampling plan then says
whether more pay (`members_for`): when the last stage is refit on a few dozen sparse
polygons, one network depends on which of them its validation held out and on its
initial weights, and a few networks cost minutes. The others train with the next seeds
(their own validation split, initial weights and chips) and the first one's chip size
and network, and `save_ensemble` writes them as one `eoseg.models.ensemble.Ensemble`.
Each member trains in a hidden folder beside the model (with its own checkpoint), so
an interrupted run resumes with the members it finished.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from eoseg.errors import InvalidParameterError
from eoseg.models import ModelCard, load_model, read_card, save_model
from eoseg.models.ensemble import Ensemble, renormalisation
from eoseg.store import swap_into_place
from eoseg.train.checkpoint import checkpoint_dir
from eoseg.train.config import TrainConfig

logger = logging.getLogger(__name__)

MEMBERS = 3
"""Networks of a derived ensemble: on eolearn_slovenia three averaged U-Nets scored
0.854-0.874 OA and 0.369-0.377 mIoU over seven sets (five: 0.866 / 0.375; one network:
0.839-0.873 and 0.353-0.375; the random forest: 0.845-0.850 and 0.366-0.369)."""

TrainOne = Callable[[TrainConfig, Path, Path, bool], ModelCard]
"""Trains one network with a configuration into a model folder (its checkpoint in the
second folder), returning its card; with True it may return the card of a network that
folder already holds from the same inputs and options."""


def member_dir(out_dir: Path, index: int) -> Path:
    """The hidden folder member ``index`` of ``out_dir``'s ensemble trains in."""
    return out_dir.with_name(f".{out_dir.name}.member-{index}")


def members_for(config: TrainConfig, first: ModelCard) -> tuple[int, str]:
    """How many networks to train, from the options and the first network's plan, and why."""
    if config.members is not None:
        return config.members, f"members: {config.members} (--members)"
    if first.contexts:
        return 1, "members: 1 (multi-context models are not averaged)"
    if config.refit is not None or not first.sampling.get("refit_chips"):
        # the derived refit is the survey's "a few sparse polygons"; --refit is not
        return 1, "members: 1 (not a few sparse polygons: one network's spread is small)"
    return MEMBERS, (
        f"members: {MEMBERS} (the last stage is refit on a few sparse regions: averaging "
        "networks of other seeds and validation splits removes much of their spread)"
    )


def check_members(config: TrainConfig) -> None:
    """Refuse options an ensemble cannot take.

    Raises:
        InvalidParameterError: On ``--members`` above 1 with multi-context training.
    """
    if (config.members or 1) > 1 and len(config.contexts) > 1:
        raise InvalidParameterError(
            f"--members {config.members} with --contexts {','.join(map(str, config.contexts))}: "
            "multi-context models are not averaged; give --members 1 or --contexts 1"
        )


def train_members(train_one: TrainOne, out_dir: Path, config: TrainConfig) -> ModelCard:
    """Train one network, or an ensemble when `members_for` says so, into ``out_dir``."""
    check_members(config)
    if config.members == 1 or len(config.contexts) > 1:
        return train_one(config, out_dir, checkpoint_dir(out_dir), False)
    # The first network checkpoints where a single one would: a run that turns out to
    # need one network resumes as before.
    first = train_one(config, member_dir(out_dir, 0), checkpoint_dir(out_dir), True)
    count, why = members_for(config, first)
    if count == 1:
        card = _move_model(member_dir(out_dir, 0), out_dir)
        logger.info("%s", why)
        return card
    arch = first.architecture
    same = dataclasses.replace(
        config,
        members=1,
        chip_size=first.chip_size,
        base_width=int(arch["base_width"]),
        depth=int(arch["depth"]),
    )
    cards = [first]
    for i in range(1, count):
        logger.info("training member %d of %d (seed %d)", i + 1, count, config.seed + i)
        member = dataclasses.replace(same, seed=config.seed + i)
        folder = member_dir(out_dir, i)
        cards.append(train_one(member, folder, checkpoint_dir(folder), True))
    card = save_ensemble([member_dir(out_dir, i) for i in range(count)], cards, out_dir, why)
    for i in range(count):
        shutil.rmtree(member_dir(out_dir, i), ignore_errors=True)
    return card


def save_ensemble(dirs: list[Path], cards: list[ModelCard], out_dir: Path, why: str) -> ModelCard:
    """Write the members of ``dirs`` as one ensemble model folder ``out_dir``."""
    nets = [load_model(d)[0] for d in dirs]
    scale, shift = renormalisation([c.mean for c in cards], [c.std for c in cards])
    classes = len(cards[0].classes)
    adjustment = torch.tensor(
        [list(c.logit_adjustment) or [0.0] * classes for c in cards], dtype=torch.float32
    )
    model = Ensemble(nets, scale, shift, adjustment)
    first = cards[0]
    card = dataclasses.replace(
        first,
        architecture={**first.architecture, "members": len(cards)},
        logit_adjustment=(),
        parameters=sum(c.parameters for c in cards),
        flops_per_pixel=sum(c.flops_per_pixel for c in cards),
        sampling={**first.sampling, "why": [*first.sampling.get("why", []), why]},
        metrics=_ensemble_metrics(cards),
        fingerprint="+".join(c.fingerprint for c in cards),
    )
    return save_model(model, card, out_dir)


def _ensemble_metrics(cards: list[ModelCard]) -> dict[str, Any]:
    """The first member's metrics, each member's validation figures, and their mean."""
    metrics = dict(cards[0].metrics)
    members = [
        {"seed_offset": i, "version": c.version,
         **{k: c.metrics.get(k) for k in ("val_miou", "val_accuracy", "val_note")}}
        for i, c in enumerate(cards)
    ]  # fmt: skip
    metrics["members"] = members
    for key in ("val_miou", "val_accuracy"):
        values = [float(c.metrics[key]) for c in cards if c.metrics.get(key) is not None]
        metrics[key] = sum(values) / len(values) if values else None
    if metrics.get("val_miou") is not None:
        metrics["val_note"] = (
            f"mean of the {len(cards)} members' validation figures, each on its own "
            "held-out regions (the ensemble itself has none: the members saw each "
            "other's); first member: " + str(cards[0].metrics.get("val_note", ""))
        )
    return metrics


def _move_model(src: Path, out_dir: Path) -> ModelCard:
    """Put the model folder ``src`` in place of ``out_dir`` (a rename: one folder)."""
    card = read_card(src)
    swap_into_place(src, out_dir)
    return card
