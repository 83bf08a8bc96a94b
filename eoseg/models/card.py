"""Model cards and model folders: weights (safetensors) plus a JSON card.

A model folder holds ``weights.safetensors`` and ``model.json``. The version is a short
hash of the weights and the card (without its ``version`` and ``created`` fields), so two
identical trainings produce the same version, and a folder can be verified against its
card (`eoseg.models.weights.load_model`). Weights load with safetensors only; no pickle
is ever opened.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from eoseg.classes import ClassSchema
from eoseg.errors import BandMismatchError, InputNotFoundError, InvalidStoreError
from eoseg.model_input import TimeMode, input_record, read_input_record
from eoseg.models.ensemble import Ensemble
from eoseg.models.unet import DEFAULT_RATES, UNet
from eoseg.store import staged_folder

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "weights.safetensors"
CARD_FILE = "model.json"
_VERSION_CHARS = 12
MODEL_FIX = (
    "restore the model folder (e.g. 'eoseg models fetch NAME --out DIR') or retrain "
    "('eoseg train'), and pass it as --model"
)
"""What to do about a damaged model folder (the end of every such message)."""


@dataclass(frozen=True, slots=True)
class ModelCard:
    """What a model needs to be used correctly, and where it came from.

    Attributes:
        name: Model name (the registry groups versions by name).
        version: Content hash of weights + card; set by `save_model`.
        bands: Band names the model reads, in input-channel order.
        mean: Per-band mean used for normalisation (same order as ``bands``).
        std: Per-band standard deviation used for normalisation.
        classes: Class schema of the output channels.
        chip_size: Side in pixels of the chips the model was trained on.
        architecture: ``{"name": "unet", "base_width": ..., "depth": ...}``, or name
            ``"unet-aspp"`` with ``"rates"`` (`UNet.architecture`); ``"members": k``
            when the model is an `Ensemble` of k such networks.
        time: How the model reads the cube's dates: ``"median"`` (one composite, a
            ``(y, x)`` class map) or ``"per-date"`` (a class map per date); see
            `eoseg.model_input`. The card writes it with ``bands``, ``mean`` and ``std``
            as its ``input`` entry; cards without one read as ``"median"``.
        parameters: Number of trainable parameters.
        flops_per_pixel: Forward FLOPs per output pixel.
        metrics: Training metrics: per-stage epoch histories, and ``val_miou``,
            ``val_accuracy``, ``val_iou`` of the validation chips of the stage that made
            the model (None when it has none) with ``val_stage`` and ``val_note``.
        sampling: What training sampled and why: chip and block size, the split,
            per-stage labelled share and chip counts (`eoseg.train.plan.SamplingPlan`).
        logit_adjustment: Per class, added to the network's logits before the softmax
            (`adjust_logits`): the log of the class frequencies of the labels over
            those of the training chips (`eoseg.train.prior`). Class-balanced chips show
            rare classes far more often than the labels do; this undoes that prior so
            the map is not flooded with them. Empty: no adjustment.
        inference: The default prediction lattice, ``{"chip_size": ..., "overlap": ...}``
            (`eoseg.blend.default_lattice`, written by training); empty in older cards,
            which get that default when they predict (`eoseg.inference.card_lattice`).
        contexts: Multi-context fusion (`eoseg.contexts`): the contexts the model was
            trained on, the fusion weights fitted on validation chips and the
            validation figures of each context and of the fusion
            (`eoseg.train.contexts.fit_fusion`). Empty for a single-context model, and
            then not written (the card of such a model is as before).
        parent: Version of the model this one was fine-tuned from, if any.
        fingerprint: Hash of the training inputs and configuration.
        created: ISO-8601 UTC time of saving (not part of the version).
    """

    name: str
    bands: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: ClassSchema
    chip_size: int
    architecture: dict[str, Any]
    time: TimeMode = "median"
    version: str = ""
    parameters: int = 0
    flops_per_pixel: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    sampling: dict[str, Any] = field(default_factory=dict)
    logit_adjustment: tuple[float, ...] = ()
    inference: dict[str, Any] = field(default_factory=dict)
    contexts: dict[str, Any] = field(default_factory=dict)
    parent: str | None = None
    fingerprint: str = ""
    created: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict of the card."""
        inputs = ("bands", "mean", "std", "time")
        d = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in inputs
        }
        d["input"] = input_record(self.bands, self.mean, self.std, self.time)
        d["classes"] = self.classes.to_dict()
        if not self.contexts:
            del d["contexts"]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelCard:
        """Build a card from the output of `to_dict` (or of an older eoseg)."""
        bands, mean, std, time = read_input_record(d)
        return cls(
            name=str(d["name"]),
            version=str(d.get("version", "")),
            bands=bands,
            mean=mean,
            std=std,
            time=time,
            classes=ClassSchema.from_dict(d["classes"]),
            chip_size=int(d["chip_size"]),
            architecture=dict(d["architecture"]),
            parameters=int(d.get("parameters", 0)),
            flops_per_pixel=float(d.get("flops_per_pixel", 0.0)),
            metrics=dict(d.get("metrics", {})),
            sampling=dict(d.get("sampling", {})),
            logit_adjustment=tuple(float(v) for v in d.get("logit_adjustment", ())),
            inference=dict(d.get("inference") or {}),
            contexts=dict(d.get("contexts", {})),
            parent=d.get("parent"),
            fingerprint=str(d.get("fingerprint", "")),
            created=str(d.get("created", "")),
        )


def adjust_logits(logits: torch.Tensor, card: ModelCard) -> torch.Tensor:
    """``(N, class, H, W)`` logits plus the card's `ModelCard.logit_adjustment` (if any)."""
    if not card.logit_adjustment:
        return logits
    bias = torch.tensor(card.logit_adjustment, dtype=logits.dtype, device=logits.device)
    return logits + bias.view(1, -1, 1, 1)


def build_model(card: ModelCard) -> nn.Module:
    """An untrained network with the architecture the card describes.

    Raises:
        InvalidStoreError: If the architecture name is unknown.
    """
    arch = card.architecture
    name = arch.get("name")
    if name not in ("unet", "unet-aspp"):
        raise InvalidStoreError(
            f"model {card.name!r} has architecture {name!r}; this eoseg knows "
            "'unet' and 'unet-aspp': upgrade eoseg or retrain the model"
        )

    def one() -> UNet:
        return UNet(
            len(card.bands),
            len(card.classes),
            base_width=int(arch.get("base_width", 32)),
            depth=int(arch.get("depth", 4)),
            context="aspp" if name == "unet-aspp" else "none",
            rates=tuple(int(r) for r in arch.get("rates", DEFAULT_RATES)),
        )

    members = int(arch.get("members", 1))
    if members == 1:
        return one()
    bands, classes = len(card.bands), len(card.classes)
    return Ensemble(
        [one() for _ in range(members)],
        torch.ones(members, bands),
        torch.zeros(members, bands),
        torch.zeros(members, classes),
    )  # the buffers are the weights file's


def content_version(state: Mapping[str, torch.Tensor], card_doc: Mapping[str, Any]) -> str:
    """The version of a model: a hash of its weights and its card's JSON document (without
    ``version`` and ``created``). Hashing the document as stored (not as this eoseg would
    write it) keeps the versions of cards written by older eoseg verifiable."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    d = {k: v for k, v in card_doc.items() if k not in ("version", "created")}
    h.update(json.dumps(d, sort_keys=True).encode())
    return h.hexdigest()[:_VERSION_CHARS]


def save_model(model: nn.Module, card: ModelCard, out_dir: str | os.PathLike[str]) -> ModelCard:
    """Write a model folder atomically and return the card with its version set.

    Files are written to a hidden sibling folder which then replaces ``out_dir``, so a
    crash never leaves a half-written model that looks complete.

    Args:
        model: The trained network.
        card: Its card; ``version`` and ``created`` are filled in here.
        out_dir: Model folder to create (replaced if it exists).

    Returns:
        The saved card (with ``version`` and ``created``).
    """
    out = Path(out_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    version = content_version(state, card.to_dict())
    created = datetime.now(UTC).isoformat(timespec="seconds")
    saved = dataclasses.replace(card, version=version, created=created)
    with staged_folder(out) as tmp:
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"version": version})
        (tmp / CARD_FILE).write_text(json.dumps(saved.to_dict(), indent=2) + "\n")
    logger.info("saved model %s version %s to %s", saved.name, version, out)
    return saved


def read_card(model_dir: str | os.PathLike[str]) -> ModelCard:
    """Read and check ``model.json`` of a model folder (see `parse_card`).

    Raises:
        InputNotFoundError: If the folder or its card is missing.
        InvalidStoreError: If the card is not valid (see `check_card`).
    """
    return parse_card(read_model_file(Path(model_dir) / CARD_FILE), str(Path(model_dir)))[1]


def parse_card(data: bytes, where: str, fix: str = MODEL_FIX) -> tuple[dict[str, Any], ModelCard]:
    """The JSON document of a card and the `ModelCard` it holds, checked (`check_card`).

    Raises:
        InvalidStoreError: If ``data`` is not a card, or not one a map can be made with.
    """
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise _invalid_card(where, exc, fix) from exc
    return doc, card_from_doc(doc, where, fix)


def card_from_doc(doc: Mapping[str, Any], where: str, fix: str = MODEL_FIX) -> ModelCard:
    """The checked `ModelCard` of a card's JSON document (see `parse_card`)."""
    try:
        card = ModelCard.from_dict(doc)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise _invalid_card(where, exc, fix) from exc
    check_card(card, where, fix)
    return card


def _invalid_card(where: str, exc: Exception, fix: str) -> InvalidStoreError:
    return InvalidStoreError(
        f"{where}/{CARD_FILE} is not a valid model card ({type(exc).__name__}: {exc}): "
        f"expected the JSON written by 'eoseg train'; {fix}"
    )


def check_card(card: ModelCard, where: str, fix: str = MODEL_FIX) -> None:
    """Refuse a card with which no map can be made: normalisation statistics that are
    missing, not finite, or a zero std (every pixel would normalise to one value), no
    class, or no positive chip size.

    Raises:
        InvalidStoreError: Naming the entry and its value.
    """
    n = len(card.bands)
    problems = []
    for name, values in (("mean", card.mean), ("std", card.std)):
        if len(values) != n:
            problems.append(f"{name} has {len(values)} values for {n} bands {card.bands}")
        elif not all(math.isfinite(v) for v in values):
            problems.append(f"{name} {list(values)} is not finite")
    if len(card.std) == n and any(v <= 0 for v in card.std):
        problems.append(f"std {list(card.std)} is not positive")
    if not n or not len(card.classes) or card.chip_size < 1:
        problems.append(
            f"it has {n} bands, {len(card.classes)} classes and chip size {card.chip_size}"
        )
    weights = card.contexts.get("weights", {})
    if not _context_weights_ok(weights):
        problems.append(f"contexts.weights {weights!r} are not context: weight >= 0 pairs")
    if problems:
        raise InvalidStoreError(
            f"model card {where}/{CARD_FILE} cannot make a map: {'; '.join(problems)}; "
            "expected per-band statistics of the training data (std > 0), as 'eoseg train' "
            f"writes them: the card was edited or damaged; {fix}"
        )


def _context_weights_ok(weights: Any) -> bool:
    """Whether a card's fusion weights map whole-number contexts to weights >= 0, not all 0."""
    if not isinstance(weights, Mapping):
        return False
    try:
        pairs = [(int(c), float(w)) for c, w in weights.items()]
    except (TypeError, ValueError):
        return False
    return not pairs or (
        all(c >= 1 and math.isfinite(w) and w >= 0 for c, w in pairs)
        and sum(w for _, w in pairs) > 0
    )


def read_model_file(path: Path) -> bytes:
    """The bytes of a model folder's file; a missing one is bad input, not a crash."""
    try:
        return path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        if path.name == CARD_FILE:
            raise InputNotFoundError(
                f"no model card at {path}: a model folder holds {CARD_FILE} and "
                f"{WEIGHTS_FILE}; pass the folder written by 'eoseg train' (or a registry "
                "version folder) as --model"
            ) from None
        raise InputNotFoundError(
            f"model card found but no weights at {path}: the model folder is incomplete; "
            "copy the whole folder or retrain, and pass it as --model"
        ) from None
    except IsADirectoryError:
        raise InvalidStoreError(
            f"{path} is a folder, expected a file of the model: pass the folder written by "
            "'eoseg train' as --model"
        ) from None


def check_bands(card: ModelCard, cube_bands: Sequence[str]) -> tuple[int, ...]:
    """Check that a cube holds every band the model reads.

    Args:
        card: The model's card.
        cube_bands: Band names of the cube (its ``band`` coordinate).

    Returns:
        Index in ``cube_bands`` of each model band, in model order (select the cube's
        bands with it; extra cube bands are ignored).

    Raises:
        BandMismatchError: If a model band is missing from the cube.
    """
    have = tuple(str(b) for b in cube_bands)
    missing = [b for b in card.bands if b not in have]
    if missing:
        raise BandMismatchError(
            f"cube has bands {have}; model {card.name!r} (version {card.version or '?'}) "
            f"expects {card.bands}, missing {tuple(missing)}: ingest the missing bands "
            "into the cube or choose a model trained on these bands"
        )
    return tuple(have.index(b) for b in card.bands)


ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def normalize(chip: ArrayT, card: ModelCard) -> ArrayT:
    """Normalise a chip with the card's per-band mean and std; NaN becomes 0.

    Args:
        chip: ``(..., C, H, W)`` array or tensor with bands in card order.
        card: The model's card.

    Returns:
        float32 ``(x - mean) / std`` of the same kind as ``chip``, NaN (nodata) set to 0.

    Raises:
        BandMismatchError: If the channel axis does not have ``len(card.bands)`` entries.
    """
    if chip.ndim < 3 or chip.shape[-3] != len(card.bands):
        raise BandMismatchError(
            f"chip of shape {tuple(chip.shape)} has no channel axis (-3) of "
            f"{len(card.bands)} bands {card.bands}: select the model's bands first"
        )
    mean = np.asarray(card.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(card.std, dtype=np.float32)[:, None, None]
    if isinstance(chip, torch.Tensor):
        m = torch.from_numpy(mean).to(chip.device)
        s = torch.from_numpy(std).to(chip.device)
        return torch.nan_to_num((chip.float() - m) / s, nan=0.0)
    out = (np.asarray(chip, dtype=np.float32) - mean) / std
    return np.nan_to_num(out, nan=0.0, copy=False)
