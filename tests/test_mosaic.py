"""Tests of eoseg.mosaic: two class maps that overlap, mosaicked by each rule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rioxarray  # noqa: F401  (registers .rio)
import xarray as xr
from odc.geo.geobox import GeoBox
from typer.testing import CliRunner

from eoseg.classes import IGNORE_ID
from eoseg.classmap import open_classmap
from eoseg.cli import app
from eoseg.errors import InvalidParameterError
from eoseg.mosaic import mosaic_classmaps, union_grid
from eoseg.store import tile_provenance
from eoseg.synthetic_maps import write_synthetic_classmap

X0, Y0, H, W = 500_000.0, 5_300_000.0, 80, 96
SHIFT_Y, SHIFT_X = 24, 40
"""Map B lies 24 px south and 40 px east of map A: they share a 56 x 56 px block."""
runner = CliRunner()


def _grid(row: int, col: int) -> GeoBox:
    x, top = X0 + col * 10, Y0 - row * 10
    return GeoBox.from_bbox((x, top - H * 10, x + W * 10, top), "EPSG:32632", resolution=10)


@pytest.fixture(scope="module")
def maps(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("mosaic")
    a = write_synthetic_classmap(
        folder / "a.zarr", _grid(0, 0), tile_size=32, seed=1, attrs={"date": "2024-07-01"}
    )
    b = write_synthetic_classmap(
        folder / "b.zarr",
        _grid(SHIFT_Y, SHIFT_X),
        tile_size=32,
        seed=2,
        attrs={"date": "2024-06-01"},
    )
    return a, b


def _on_union(path: Path, row: int, col: int) -> tuple[np.ndarray, np.ndarray]:
    """A map's class and confidence placed on the union grid (255 / 0 elsewhere)."""
    shape = (H + SHIFT_Y, W + SHIFT_X)
    cls, conf = np.full(shape, IGNORE_ID, "uint8"), np.zeros(shape, "uint8")
    ds = open_classmap(path)
    cls[row : row + H, col : col + W] = ds["class"].values
    conf[row : row + H, col : col + W] = ds["confidence"].values
    return cls, conf


def _expected(maps: tuple[Path, Path], rule: str) -> dict[str, np.ndarray]:
    (ca, pa), (cb, pb) = _on_union(maps[0], 0, 0), _on_union(maps[1], SHIFT_Y, SHIFT_X)
    va, vb = ca != IGNORE_ID, cb != IGNORE_ID
    # confidence: B where higher (equal: A, listed first); latest: A is dated 2024-07-01,
    # B 2024-06-01, so A wherever it has a class.
    b_wins = vb & (~va | (pb > pa)) if rule == "confidence" else vb & ~va
    source = np.where(b_wins, 1, np.where(va, 0, IGNORE_ID)).astype("uint8")
    return {
        "class": np.where(b_wins, cb, ca),
        "confidence": np.where(b_wins, pb, pa),
        "source": source,
    }


@pytest.mark.parametrize("rule", ["confidence", "latest"])
def test_overlap_follows_the_rule(maps: tuple[Path, Path], tmp_path: Path, rule: str) -> None:
    out = tmp_path / "mosaic.zarr"
    result = mosaic_classmaps(list(maps), out, rule=rule)
    expected = _expected(maps, rule)
    ds = xr.open_zarr(out, decode_coords="all", zarr_format=3)  # plain xarray + rioxarray
    assert ds.rio.crs.to_epsg() == 32632
    union = _grid(0, 0).affine
    assert tuple(ds.rio.transform())[:6] == tuple(union)[:6]
    assert ds["class"].shape == (H + SHIFT_Y, W + SHIFT_X) == result.shape
    for name, values in expected.items():
        np.testing.assert_array_equal(ds[name].values, values, err_msg=name)
    overlap = (expected["source"][SHIFT_Y:H, SHIFT_X:W] == 1).mean()
    assert 0.0 < overlap < 1.0  # both maps win pixels of the overlap
    # Provenance: the layers, and per tile the pixels each won (summing to the map's).
    assert [s["path"] for s in ds.attrs["sources"]] == [str(p) for p in maps]
    assert [s["date"] for s in ds.attrs["sources"]] == ["2024-07-01", "2024-06-01"]
    assert ds.attrs["mosaic_rule"] == rule
    counts = [int((expected["source"] == k).sum()) for k in (0, 1)]
    records = tile_provenance(out)
    assert len(records) == result.tiles == 4 * 5
    assert [sum(r["sources"].get(str(k), 0) for r in records) for k in (0, 1)] == counts
    assert result.pixels_by_source == {0: counts[0], 1: counts[1]}


def test_ties_go_to_the_map_listed_first(maps: tuple[Path, Path], tmp_path: Path) -> None:
    a, _ = maps
    out = mosaic_classmaps([a, a], tmp_path / "same.zarr", rule="confidence").path
    source = open_classmap(out)["source"].values
    assert set(np.unique(source).tolist()) == {0, IGNORE_ID}


def test_union_grid_keeps_the_first_grids_pixels() -> None:
    grid = union_grid(_grid(0, 0), [_grid(SHIFT_Y, SHIFT_X), _grid(-3, -5)])
    assert grid.shape.yx == (H + SHIFT_Y + 3, W + SHIFT_X + 5)
    assert tuple(grid.affine)[:6] == tuple(_grid(-3, -5).affine)[:6]


def test_bad_mosaics_are_refused(maps: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = maps
    undated = write_synthetic_classmap(tmp_path / "u.zarr", _grid(0, 0), tile_size=32)
    cases = [
        ([a], "confidence", "two or more class maps"),
        ([a, b], "newest", "is no mosaic rule"),
        ([a, undated], "latest", "has none"),
    ]
    for sources, rule, match in cases:
        with pytest.raises(InvalidParameterError, match=match):
            mosaic_classmaps(sources, tmp_path / "m.zarr", rule=rule)
    assert not (tmp_path / "m.zarr").exists()


def test_a_map_in_another_crs_is_warped_by_nearest(maps: tuple[Path, Path], tmp_path: Path) -> None:
    """A map on a UTM 33N grid (the next zone) joins map A's UTM 32N grid: classes and
    confidences stay values of the source (nearest neighbour), never blends."""
    a, _ = maps
    footprint = _grid(SHIFT_Y, SHIFT_X).extent.to_crs("EPSG:32633").boundingbox
    other = GeoBox.from_bbox(footprint, "EPSG:32633", resolution=10)
    c = write_synthetic_classmap(tmp_path / "c.zarr", other, tile_size=32, seed=2)
    out = mosaic_classmaps([a, c], tmp_path / "zones.zarr").path
    ds, src = open_classmap(out), open_classmap(c)
    assert ds.rio.crs.to_epsg() == 32632
    from_c = ds["source"].values == 1
    assert from_c.sum() > 1000
    assert set(np.unique(ds["class"].values[from_c])) <= set(np.unique(src["class"].values))
    conf = set(np.unique(src["confidence"].values))
    assert set(np.unique(ds["confidence"].values[from_c])) <= conf
    assert (ds["class"].values[from_c] != IGNORE_ID).all()


def test_cli_mosaic(maps: tuple[Path, Path], tmp_path: Path, client: object) -> None:
    out = tmp_path / "cli.zarr"
    address = client.scheduler.address  # type: ignore[attr-defined]
    args = ["mosaic", *map(str, maps), "--out", str(out), "--rule", "latest", "--json"]
    args += ["--scheduler", address]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rule"] == "latest"
    np.testing.assert_array_equal(
        open_classmap(out)["class"].values, _expected(maps, "latest")["class"]
    )
    result = runner.invoke(app, ["mosaic", *map(str, maps), "--out", str(out), "--rule", "x"])
    assert result.exit_code == 2 and "is no mosaic rule" in result.stderr
