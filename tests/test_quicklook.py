"""Tests of eoseg.quicklook: a small PNG of a class map."""

from __future__ import annotations

from pathlib import Path

import pytest

from eoseg.predict import predict
from eoseg.quicklook import write_quicklook


@pytest.fixture(scope="module")
def classmap(cube_path: Path, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("quicklook") / "map.zarr"
    predict(cube_path, model_dir, out)
    return out


def test_quicklook_png(classmap: Path, tmp_path: Path) -> None:
    out = write_quicklook(classmap, tmp_path / "q.png", max_size=64)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
