"""Tests of eoseg.registry: register, list, production pointer."""

from __future__ import annotations

import pytest
import torch

from eoseg.classes import DEMO_CLASSES
from eoseg.errors import InputNotFoundError
from eoseg.models import ModelCard, UNet, load_model, save_model
from eoseg.registry import list_models, production_model, register, set_production


def saved_model(path, name: str = "lc", seed: int = 0) -> ModelCard:
    torch.manual_seed(seed)
    card = ModelCard(
        name=name,
        bands=("B02", "B03"),
        mean=(0.1, 0.1),
        std=(0.05, 0.05),
        classes=DEMO_CLASSES,
        chip_size=32,
        architecture={"name": "unet", "base_width": 4, "depth": 2},
    )
    return save_model(UNet(2, len(DEMO_CLASSES), base_width=4, depth=2), card, path)


def test_register_list_and_promote(tmp_path) -> None:
    reg = tmp_path / "registry"
    assert list_models(reg) == []
    a = saved_model(tmp_path / "a", seed=0)
    b = saved_model(tmp_path / "b", seed=1)
    c = saved_model(tmp_path / "c", name="other")
    for card, folder in ((a, "a"), (b, "b"), (c, "c")):
        assert register(tmp_path / folder, reg) == card
    assert register(tmp_path / "a", reg) == a  # idempotent
    assert (reg / "lc" / a.version / "weights.safetensors").is_file()
    listed = list_models(reg)
    assert {(m.name, m.version) for m in listed} == {
        ("lc", a.version), ("lc", b.version), ("other", c.version)
    }  # fmt: skip
    with pytest.raises(InputNotFoundError, match="no production version"):
        production_model(reg, "lc")
    set_production(reg, "lc", b.version)
    assert production_model(reg, "lc") == reg / "lc" / b.version
    set_production(reg, "lc", a.version)
    _, loaded = load_model(production_model(reg, "lc"))
    assert loaded == a


def test_unknown_version_and_bad_folder(tmp_path) -> None:
    reg = tmp_path / "registry"
    a = saved_model(tmp_path / "a")
    register(tmp_path / "a", reg)
    with pytest.raises(InputNotFoundError, match=rf"registered versions: \['{a.version}'\]"):
        set_production(reg, "lc", "deadbeef0000")
    with pytest.raises(InputNotFoundError, match="no model card"):
        register(tmp_path / "missing", reg)
