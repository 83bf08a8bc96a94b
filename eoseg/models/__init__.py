"""Segmentation networks and model folders (weights + card)."""

from eoseg.models.card import (
    ModelCard,
    build_model,
    check_bands,
    normalize,
    read_card,
    save_model,
)
from eoseg.models.unet import UNet, count_flops_per_pixel, count_parameters
from eoseg.models.weights import load_model, verify_model

__all__ = [
    "ModelCard",
    "UNet",
    "build_model",
    "check_bands",
    "count_flops_per_pixel",
    "count_parameters",
    "load_model",
    "normalize",
    "read_card",
    "save_model",
    "verify_model",
]
