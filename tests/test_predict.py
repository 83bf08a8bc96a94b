from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from eoseg.errors import BandMismatchError
from eoseg.predict import blend_window, open_classmap, predict


def test_blend_weights_are_a_partition_of_unity() -> None:
    chip = 32
    w = blend_window(chip)
    total = np.zeros((chip * 3, chip * 3), dtype="float64")
    for r in range(0, chip * 2 + 1, chip // 2):
        for c in range(0, chip * 2 + 1, chip // 2):
            total[r : r + chip, c : c + chip] += w
    inner = total[chip // 2 : -chip // 2, chip // 2 : -chip // 2]
    np.testing.assert_allclose(inner, 1.0, atol=1e-6)


@pytest.fixture(scope="module")
def classmap_path(cube_path: Path, model_dir: Path, client) -> Path:  # type: ignore[no-untyped-def]
    out = cube_path.parent / "classmap.zarr"
    predict(cube_path, model_dir, out, client=client, overwrite=True)
    return out


def test_classmap_is_valid_where_cube_is(classmap_path: Path, cube_path: Path) -> None:
    from eoseg.cube import open_cube

    cmap = open_classmap(classmap_path)
    valid = open_cube(cube_path)["valid"].isel(time=0).values.astype(bool)
    cls = cmap["class"].values
    assert ((cls == 255) == ~valid).all()
    assert cls[valid].max() < 6
    assert cmap.attrs["model_version"]


def test_tiling_leaves_no_seams(
    cube_path: Path, model_dir: Path, classmap_path: Path, tmp_path: Path
) -> None:
    """Probabilities come from one global chip lattice: tiles of 96 px and one whole-grid
    tile give the same class map, pixel for pixel."""
    import shutil

    import xarray as xr
    import zarr

    whole_cube = tmp_path / "cube-one-tile.zarr"
    shutil.copytree(cube_path, whole_cube)
    zarr.open_group(str(whole_cube), mode="r+").attrs["tile_size"] = 4096
    out = tmp_path / "whole.zarr"
    predict(whole_cube, model_dir, out)
    tiled = open_classmap(classmap_path)
    whole = xr.open_zarr(out, consolidated=False)
    np.testing.assert_array_equal(tiled["class"].values, whole["class"].values)
    conf_diff = np.abs(tiled["confidence"].values.astype(int) - whole["confidence"].values)
    assert conf_diff.max() <= 1


def test_band_mismatch_is_refused(cube_path: Path, tmp_path: Path) -> None:
    from conftest import save_untrained_model

    save_untrained_model(tmp_path / "m", ("B02", "B03", "B04", "B11"))
    with pytest.raises(BandMismatchError, match="B11"):
        predict(cube_path, tmp_path / "m", tmp_path / "out.zarr")
    assert not (tmp_path / "out.zarr").exists()
