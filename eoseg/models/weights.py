"""Loading a model folder: weights (safetensors only) verified against their card.

A model folder is trusted only once its card makes sense (`eoseg.models.card.check_card`),
its weights have the shapes the card's bands, classes and architecture imply, and their
content hashes to the card's version. A truncated or foreign weights file, or a card
edited after saving, is refused with a message, before any tile is computed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from torch import nn

from eoseg.errors import InvalidStoreError
from eoseg.models.card import (
    CARD_FILE,
    MODEL_FIX,
    WEIGHTS_FILE,
    ModelCard,
    build_model,
    card_from_doc,
    content_version,
    parse_card,
    read_model_file,
)


def load_model(
    model_dir: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelCard]:
    """Load a model folder (safetensors only), verified, and return the network in eval mode.

    The card is checked (`check_card`), the weights' shapes against the card's bands,
    classes and architecture, and their content against the card's version.

    Args:
        model_dir: Folder holding ``weights.safetensors`` and ``model.json``.
        device: Torch device to place the weights on.

    Returns:
        ``(model, card)``.

    Raises:
        InputNotFoundError: If the folder, the card or the weights are missing.
        InvalidStoreError: If the card or weights are damaged or do not belong together.
    """
    folder = Path(model_dir)
    card_doc, card = parse_card(read_model_file(folder / CARD_FILE), str(folder))
    model = verify_model(read_model_file(folder / WEIGHTS_FILE), card_doc, str(folder))[0]
    model.to(device)
    model.eval()
    return model, card


def verify_model(
    weights: bytes, card_doc: Mapping[str, Any], where: str, fix: str = MODEL_FIX
) -> tuple[nn.Module, ModelCard]:
    """Build the network of a card with its weights, refusing any mismatch.

    Args:
        weights: Contents of ``weights.safetensors``.
        card_doc: The card's JSON document, as stored.
        where: The model folder (or URL), for messages.
        fix: What the messages tell the user to do.

    Returns:
        ``(model, card)``, the model on the CPU.

    Raises:
        InvalidStoreError: Weights unreadable (truncated, another format), of shapes the
            card does not describe, or whose content hash is not the card's version.
    """
    card = card_from_doc(card_doc, where, fix)
    state, metadata = _read_weights(weights, where, fix)
    model = build_model(card)
    _check_shapes(model, state, card, where, fix)
    model.load_state_dict(state)
    saved_as = metadata.get("version")
    found = content_version(state, card_doc)
    if found != card.version:
        cause = (
            f"the weights are those of version {saved_as}"
            if saved_as and saved_as != card.version
            else f"its content hashes to {found}"
        )
        raise InvalidStoreError(
            f"model {where} claims version {card.version!r} but {cause}: the weights or the "
            f"card were changed or replaced after saving; {fix}"
        )
    return model, card


def _read_weights(
    data: bytes, where: str, fix: str
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file (never a pickle)."""
    try:
        state = load_safetensors(data)
        size = int.from_bytes(data[:8], "little")  # the format: header length, JSON header
        metadata = json.loads(data[8 : 8 + size]).get("__metadata__") or {}
    except (SafetensorError, ValueError) as exc:
        raise InvalidStoreError(
            f"{where}/{WEIGHTS_FILE} is not a readable safetensors file ({exc}; "
            f"{len(data)} bytes): it is truncated or in another format; {fix}"
        ) from exc
    return state, dict(metadata)


def _check_shapes(
    model: nn.Module, state: Mapping[str, torch.Tensor], card: ModelCard, where: str, fix: str
) -> None:
    """Refuse weights the card's network cannot take, naming the first mismatch."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if expected.keys() != found.keys():
        odd = sorted(expected.keys() ^ found.keys())[:3]
        raise InvalidStoreError(
            f"{where}/{WEIGHTS_FILE} does not hold the tensors of the card's architecture "
            f"{card.architecture} (differing: {odd}): the weights belong to another "
            f"network; {fix}"
        )
    for key in expected:
        if expected[key] == found[key]:
            continue
        if key == _INPUT_KEY:
            what = f"{found[key][1]} input channels; the card lists {len(card.bands)} bands"
        elif key.startswith(_OUTPUT_PREFIX):
            what = f"{found[key][0]} output channels; the card lists {len(card.classes)} classes"
        else:
            what = f"{key} of shape {found[key]}; the card's architecture needs {expected[key]}"
        raise InvalidStoreError(
            f"{where}/{WEIGHTS_FILE} has {what}: card and weights do not belong together; {fix}"
        )


_INPUT_KEY = "encoder.0.0.weight"
"""The first convolution of `UNet`: ``(width, bands, 3, 3)``."""
_OUTPUT_PREFIX = "head."
"""The last convolution of `UNet`: ``(classes, width, 1, 1)`` and its bias."""
