"""Tests of eoseg.reference_sample and ``eoseg sample``: allocation and stratified draws."""

from __future__ import annotations

import json
from pathlib import Path

import dask.array
import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import pytest
from odc.geo.xr import wrap_xr
from typer.testing import CliRunner

from eoseg.cli import app
from eoseg.errors import InvalidParameterError
from eoseg.reference_sample import SampleDesign, allocate, draw_sample, parse_counts, read_sample
from tests.classmaps import UTM, schema_of, utm_grid, write_classmap

FOUR = schema_of(("a", "b", "c", "d"))


@pytest.mark.parametrize(
    ("pixels", "design", "expected"),
    [
        # 100 points over 1000/100/10 px: shares 90.1/9.0/0.9 lift b and c to 10 each,
        # and a gets the other 80; d is not mapped.
        ([1000, 100, 10, 0], SampleDesign(n=100, min_per_class=10), [80, 10, 10, 0]),
        # b has 5 pixels: it gets all 5, a the other 45.
        ([1000, 5, 0, 0], SampleDesign(n=50, min_per_class=10), [45, 5, 0, 0]),
        # Largest remainder: 600/300/100 of 7 -> 4.2/2.1/0.7 -> 4, 2, 1.
        ([600, 300, 100, 0], SampleDesign(n=7, min_per_class=0), [4, 2, 1, 0]),
        # Given counts (capped at the pixels there are).
        ([50, 50, 3, 9], SampleDesign(counts=(("a", 20), ("c", 5))), [20, 0, 3, 0]),
    ],
    ids=["minimum", "small-class", "remainder", "counts"],
)
def test_allocate(pixels: list[int], design: SampleDesign, expected: list[int]) -> None:
    got = allocate(np.array(pixels), FOUR, design)
    assert got.tolist() == expected


def test_allocate_refuses_too_few_points() -> None:
    with pytest.raises(InvalidParameterError, match=r"--n 20 .* raise --n to 30"):
        allocate(np.array([100, 100, 100, 0]), FOUR, SampleDesign(n=20, min_per_class=10))


def test_parse_counts() -> None:
    assert parse_counts("a=50, b=100") == (("a", 50), ("b", 100))
    with pytest.raises(InvalidParameterError, match="CLASS=POINTS"):
        parse_counts("a:50")
    with pytest.raises(InvalidParameterError, match="'x'"):
        allocate(np.array([1, 1, 1, 1]), FOUR, SampleDesign(counts=(("x", 1),)))


@pytest.fixture(scope="module")
def classmap() -> np.ndarray:
    rng = np.random.default_rng(11)
    cls = rng.choice(4, size=(96, 80), p=[0.7, 0.2, 0.08, 0.02]).astype(np.uint8)
    cls[:, :5] = 255
    return cls


def _draw(cls: np.ndarray, design: SampleDesign, chunks: int = 32) -> gpd.GeoDataFrame:
    grid = utm_grid(*cls.shape)
    data = wrap_xr(dask.array.from_array(cls, chunks=chunks), grid)
    return draw_sample(data, FOUR, design)


def test_draw_sample_strata_positions_and_seed(classmap: np.ndarray) -> None:
    design = SampleDesign(n=120, min_per_class=15, seed=3)
    sample = _draw(classmap, design)
    pixels = np.bincount(classmap[classmap != 255], minlength=4)
    expected = allocate(pixels, FOUR, design)
    assert sample["map_class"].value_counts().sort_index().tolist() == expected.tolist()
    grid = utm_grid(*classmap.shape)
    col, row = ~grid.affine * (sample["x"].values, sample["y"].values)
    assert np.allclose(col % 1, 0.5) and np.allclose(row % 1, 0.5)  # pixel centres
    r, c = row.astype(int), col.astype(int)
    assert (classmap[r, c] == sample["map_class"].values).all()
    assert len(set(zip(r, c, strict=True))) == len(sample)  # without replacement
    assert (sample["map_class_name"] == np.array(FOUR.names)[sample["map_class"]]).all()
    assert sample["reference"].isna().all()
    assert sample["id"].tolist() == list(range(1, len(sample) + 1))
    lon, lat = pyproj.Transformer.from_crs(UTM, 4326, always_xy=True).transform(
        sample["x"].values, sample["y"].values
    )
    assert np.allclose(sample["lon"], lon) and np.allclose(sample["lat"], lat)
    assert sample.crs == pyproj.CRS(UTM)
    again = _draw(classmap, design)
    assert again.equals(sample)
    other = _draw(classmap, SampleDesign(n=120, min_per_class=15, seed=4))
    assert not other[["x", "y"]].equals(sample[["x", "y"]])


def test_draw_is_uniform_within_a_stratum() -> None:
    # One class over 2 tiles of 8x8: drawing 32 of 128 pixels many times, each tile gets
    # half the points on average (no tile is favoured by the rank-to-tile mapping).
    cls = np.zeros((8, 16), dtype=np.uint8)
    counts = []
    for seed in range(40):
        s = _draw(cls, SampleDesign(counts=(("a", 32),), seed=seed), chunks=8)
        counts.append(int((s["x"] < 500_080).sum()))
    assert np.mean(counts) == pytest.approx(16, abs=1.0)


@pytest.mark.parametrize("suffix", [".csv", ".gpkg"])
def test_cli_sample_writes_a_readable_file(
    tmp_path: Path, classmap: np.ndarray, suffix: str
) -> None:
    grid = utm_grid(*classmap.shape)
    store = write_classmap(tmp_path / "map.zarr", classmap, grid, FOUR)
    out = tmp_path / f"sample{suffix}"
    args = ["sample", str(store), "--out", str(out), "--n", "60", "--min-per-class", "5"]
    result = CliRunner().invoke(app, [*args, "--seed", "2", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["points"] == 60 and sum(doc["classes"].values()) == 60
    x, y, labels = read_sample(out, "reference", grid.crs.proj)
    table = pd.read_csv(out) if suffix == ".csv" else gpd.read_file(out)
    assert list(table.columns[:4]) == ["id", "map_class", "map_class_name", "reference"]
    col, row = ~grid.affine * (x, y)
    assert (classmap[row.astype(int), col.astype(int)] == table["map_class"].values).all()
    assert all(v is None or v != v or v == "" for v in labels)  # empty, to be filled
    again = CliRunner().invoke(app, [*args, "--seed", "2"])
    assert again.exit_code == 2 and "--overwrite" in again.output
