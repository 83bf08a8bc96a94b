"""Tests of eoseg.registry and ``eoseg models``: local folders and fsspec's memory://."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from eoseg.classes import DEMO_CLASSES
from eoseg.cli import app
from eoseg.errors import InputNotFoundError, InvalidParameterError
from eoseg.models import ModelCard, UNet, load_model, save_model
from eoseg.registry import (
    fetch_model,
    list_models,
    production_version,
    production_versions,
    register,
    set_production,
)

runner = CliRunner()


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


def predictions(model_dir: Path) -> torch.Tensor:
    model, _ = load_model(model_dir)
    x = torch.from_numpy(np.random.default_rng(7).random((2, 2, 32, 32), dtype=np.float32))
    with torch.no_grad():
        return model(x)


@pytest.fixture
def memory_fs() -> Iterator[fsspec.AbstractFileSystem]:
    """fsspec's in-memory filesystem, emptied before and after the test."""
    fs = fsspec.filesystem("memory")
    fs.store.clear()
    fs.pseudo_dirs[:] = [""]
    yield fs
    fs.store.clear()
    fs.pseudo_dirs[:] = [""]


@pytest.fixture(params=["local", "file-url", "memory"])
def registry(request, tmp_path: Path, memory_fs) -> str:  # type: ignore[no-untyped-def]
    """A registry location of each kind, empty."""
    return {
        "local": str(tmp_path / "registry"),
        "file-url": f"file://{tmp_path}/registry",
        "memory": "memory://registry",
    }[request.param]


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
        fetch_model(reg, "lc")
    set_production(reg, "lc", b.version)
    assert fetch_model(reg, "lc") == reg / "lc" / b.version
    set_production(reg, "lc", a.version)
    _, loaded = load_model(fetch_model(reg, "lc"))
    assert loaded == a


def test_unknown_version_and_bad_folder(tmp_path) -> None:
    reg = tmp_path / "registry"
    a = saved_model(tmp_path / "a")
    register(tmp_path / "a", reg)
    with pytest.raises(InputNotFoundError, match=rf"registered versions: \['{a.version}'\]"):
        set_production(reg, "lc", "deadbeef0000")
    with pytest.raises(InputNotFoundError, match="no model card"):
        register(tmp_path / "missing", reg)


def test_round_trip(registry: str, tmp_path: Path) -> None:
    a = saved_model(tmp_path / "a", seed=0)
    b = saved_model(tmp_path / "b", seed=1)
    assert list_models(registry) == []
    assert register(tmp_path / "a", registry) == a
    assert register(tmp_path / "b", registry) == b
    assert register(tmp_path / "a", registry) == a  # no-op
    assert {(m.name, m.version) for m in list_models(registry)} == {
        ("lc", a.version), ("lc", b.version)
    }  # fmt: skip
    set_production(registry, "lc", b.version)
    assert production_version(registry, "lc") == b.version
    assert production_versions(registry) == {"lc": b.version}
    cache = tmp_path / "cache"
    prod = fetch_model(registry, "lc", cache_dir=cache)
    older = fetch_model(registry, "lc", a.version, cache_dir=cache)
    if registry.startswith("memory://"):
        assert prod == cache / "lc" / b.version
        assert fetch_model(registry, "lc", cache_dir=cache) == prod  # cache reused
    else:
        assert prod == tmp_path / "registry" / "lc" / b.version
        assert not cache.exists()
    assert torch.equal(predictions(prod), predictions(tmp_path / "b"))
    assert torch.equal(predictions(older), predictions(tmp_path / "a"))
    out = fetch_model(registry, "lc", a.version, out_dir=tmp_path / "copy")
    assert out == tmp_path / "copy"
    assert torch.equal(predictions(out), predictions(tmp_path / "a"))


def test_half_upload_is_invisible_and_completed(registry: str, tmp_path: Path) -> None:
    a = saved_model(tmp_path / "a")
    fs, root = fsspec.core.url_to_fs(registry)
    half = f"{root}/lc/{a.version}"
    fs.makedirs(half, exist_ok=True)
    fs.pipe_file(
        f"{half}/weights.safetensors", (tmp_path / "a" / "weights.safetensors").read_bytes()[:100]
    )
    assert list_models(registry) == []
    with pytest.raises(InputNotFoundError, match="registered versions: none"):
        set_production(registry, "lc", a.version)
    with pytest.raises(InputNotFoundError, match="is not in registry"):
        fetch_model(registry, "lc", a.version, cache_dir=tmp_path / "cache")
    assert register(tmp_path / "a", registry) == a
    assert [m.version for m in list_models(registry)] == [a.version]
    got = fetch_model(registry, "lc", a.version, cache_dir=tmp_path / "cache")
    assert torch.equal(predictions(got), predictions(tmp_path / "a"))


def test_unknown_name_version_and_url(registry: str, tmp_path: Path) -> None:
    a = saved_model(tmp_path / "a")
    register(tmp_path / "a", registry)
    with pytest.raises(InputNotFoundError, match=rf"version 'nope' .* \['{a.version}'\]"):
        fetch_model(registry, "lc", "nope", cache_dir=tmp_path / "cache")
    with pytest.raises(InputNotFoundError, match="registered versions: none"):
        fetch_model(registry, "missing", "v1", cache_dir=tmp_path / "cache")
    with pytest.raises(InputNotFoundError, match="no production version"):
        fetch_model(registry, "lc", cache_dir=tmp_path / "cache")
    with pytest.raises(InvalidParameterError, match="fsspec URL"):
        list_models("nosuchprotocol://x")


def test_interrupted_download_is_never_used(memory_fs, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    a = saved_model(tmp_path / "a")
    register(tmp_path / "a", "memory://registry")
    cache = tmp_path / "cache"

    def broken(self, rpath: str, lpath: str, **kwargs: object) -> None:
        Path(lpath).write_bytes(b"half")
        raise ConnectionError("network gone")

    monkeypatch.setattr(type(memory_fs), "get_file", broken)
    with pytest.raises(ConnectionError):
        fetch_model("memory://registry", "lc", a.version, cache_dir=cache)
    assert not (cache / "lc" / a.version).exists()
    assert list((cache / "lc").iterdir()) == []  # staging folder removed
    monkeypatch.undo()
    got = fetch_model("memory://registry", "lc", a.version, cache_dir=cache)
    assert torch.equal(predictions(got), predictions(tmp_path / "a"))


def test_cli_models(memory_fs, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    a = saved_model(tmp_path / "a")
    monkeypatch.setenv("EOSEG_REGISTRY", "memory://registry")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    result = runner.invoke(app, ["models", "register", str(tmp_path / "a"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["version"] == a.version
    result = runner.invoke(app, ["models", "promote", "lc", a.version, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "registry": "memory://registry", "name": "lc", "version": a.version, "previous": None
    }  # fmt: skip
    result = runner.invoke(app, ["models", "list", "--json"])
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)["models"]
    assert (row["name"], row["version"], row["production"]) == ("lc", a.version, True)
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 0 and a.version in result.stdout and "*" in result.stdout
    result = runner.invoke(app, ["models", "fetch", "lc"])
    assert result.exit_code == 0, result.output
    path = Path(result.stdout.strip())
    assert path == tmp_path / "xdg" / "eoseg" / "models" / "lc" / a.version
    result = runner.invoke(app, ["models", "fetch", "lc", "--out", str(tmp_path / "m"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["path"] == str(tmp_path / "m")
    assert torch.equal(predictions(tmp_path / "m"), predictions(tmp_path / "a"))
    result = runner.invoke(app, ["models", "fetch", "lc", "--out", str(tmp_path / "m")])
    assert result.exit_code == 2 and "--overwrite" in result.stderr
    result = runner.invoke(app, ["models", "fetch", "lc", "--version", "nope"])
    assert result.exit_code == 2
    assert "registered versions" in result.stderr
    assert "Traceback" not in result.output
    monkeypatch.delenv("EOSEG_REGISTRY")
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 2 and "EOSEG_REGISTRY" in result.stderr


def test_cli_unknown_version_exits_2_without_traceback(tmp_path: Path) -> None:
    saved_model(tmp_path / "a")
    reg = str(tmp_path / "registry")
    register(tmp_path / "a", reg)
    result = subprocess.run(
        [sys.executable, "-m", "eoseg", "models", "fetch", "lc", "--version", "nope",
         "--registry", reg],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "is not in registry" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
