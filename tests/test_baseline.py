"""The random-forest baseline (benchmarks/baseline.py) on tiny generated data.

A 64x64 px scene in UTM with three spectrally separable classes in diagonal bands, six
small training squares drawn in EPSG:4326, and the rest of the scene as held-out truth:
the forest must map it almost perfectly, from a class-id GeoTIFF, a labels store or a
vector truth alike, and print its figures beside eoseg's class map.
"""

from __future__ import annotations

import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import xarray as xr
from rasterio.transform import from_origin
from rich.console import Console
from shapely.geometry import box

from benchmarks.baseline import (
    ForestOptions,
    compare,
    format_classes,
    format_table,
    main,
    training_pixels,
)
from eoseg.cube import ingest, open_cube
from eoseg.labels import open_labels, rasterize_labels
from eoseg.predict import predict

SIZE = 64
CRS = "EPSG:32633"
TRANSFORM = from_origin(465_000.0, 5_080_000.0, 10.0, 10.0)
BANDS = ("B02", "B03", "B04", "B11")
# Class means per band: far apart against the noise (sd 0.02), so the classes separate.
MEANS = np.array([[0.05, 0.30, 0.10, 0.40], [0.20, 0.10, 0.30, 0.05], [0.40, 0.40, 0.40, 0.30]])
# Training squares (row, col) of 5x5 px, two per class, wholly inside their class.
SQUARES = {0: [(2, 2), (10, 20)], 1: [(20, 30), (40, 10)], 2: [(50, 50), (58, 35)]}
WINDOW = 24  # forest windows smaller than the grid: edge windows are partial


@dataclass(frozen=True)
class Scene:
    cube: Path
    labels: Path
    truth_tif: Path
    truth_gpkg: Path
    classes: np.ndarray  # the true class of every pixel
    train: np.ndarray  # True on training pixels


def _classes() -> np.ndarray:
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    return ((rows + cols) // 43).astype(np.uint8)  # diagonal bands 0, 1, 2


def _squares(train: np.ndarray) -> gpd.GeoDataFrame:
    shapes, ids = [], []
    for cid, origins in SQUARES.items():
        for r, c in origins:
            train[r : r + 5, c : c + 5] = True
            x0, y0 = TRANSFORM * (c, r + 5)  # lower-left corner
            shapes.append(box(x0, y0, x0 + 50.0, y0 + 50.0).buffer(-1.0))
            ids.append(cid)
    return gpd.GeoDataFrame({"class_id": ids}, geometry=shapes, crs=CRS)


def _write_tif(path: Path, data: np.ndarray, nodata: float | int | None) -> None:
    profile = {
        "driver": "GTiff",
        "width": SIZE,
        "height": SIZE,
        "count": data.shape[0],
        "dtype": data.dtype.name,
        "crs": CRS,
        "transform": TRANSFORM,
        "nodata": nodata,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Scene:
    root = tmp_path_factory.mktemp("baseline")
    cls = _classes()
    rng = np.random.default_rng(0)
    image = MEANS[cls].transpose(2, 0, 1) + rng.normal(0, 0.02, (len(BANDS), SIZE, SIZE))
    _write_tif(root / "scene.tif", image.astype(np.float32), np.nan)
    with rasterio.open(root / "scene.tif", "r+") as dst:
        dst.descriptions = BANDS
    train = np.zeros((SIZE, SIZE), bool)
    polygons = _squares(train)
    polygons.to_crs("EPSG:4326").to_file(root / "train.gpkg")  # labels in another CRS
    truth = np.where(train, 255, cls).astype(np.uint8)[None]
    _write_tif(root / "truth.tif", truth, 255)
    # A vector truth: one held-out square per class, away from the training squares.
    held = {0: (20, 5), 1: (30, 30), 2: (45, 54)}  # 6x6 px squares (row, col) of each class
    shapes = [box(*(TRANSFORM * (c, r + 6)), *(TRANSFORM * (c + 6, r))) for r, c in held.values()]
    held_out = gpd.GeoDataFrame({"class_id": list(held)}, geometry=shapes, crs=CRS)
    held_out.to_file(root / "truth.gpkg")
    cube = root / "cube.zarr"
    ingest([root / "scene.tif"], cube, tile_size=32)
    rasterize_labels(root / "train.gpkg", cube, root / "labels.zarr")
    return Scene(cube, root / "labels.zarr", root / "truth.tif", root / "truth.gpkg", cls, train)


def test_scene_is_what_the_tests_assume(scene: Scene) -> None:
    """The labels store holds exactly the training squares, with their classes."""
    labels = open_labels(scene.labels).values
    np.testing.assert_array_equal(labels != 255, scene.train)
    np.testing.assert_array_equal(labels[scene.train], scene.classes[scene.train])
    assert tuple(open_cube(scene.cube)["band"].values) == BANDS


@pytest.mark.parametrize("truth_kind", ["geotiff", "store", "vector"])
def test_forest_maps_separable_classes(scene: Scene, tmp_path: Path, truth_kind: str) -> None:
    truth = {"geotiff": scene.truth_tif, "vector": scene.truth_gpkg}.get(truth_kind)
    if truth is None:
        truth = tmp_path / "truth.zarr"
        rasterize_labels(scene.truth_tif, scene.cube, truth)
    result = compare(scene.cube, scene.labels, truth, options=ForestOptions(window=WINDOW))
    report = result.forest.report
    expected_pixels = {"geotiff": SIZE * SIZE - 150, "store": SIZE * SIZE - 150, "vector": 108}
    assert report.n_pixels == expected_pixels[truth_kind]
    assert report.overall_accuracy > 0.98
    assert report.miou > 0.95
    assert report.class_names == ("class_0", "class_1", "class_2")  # generic: no schema given
    assert result.forest.train_pixels == 150
    assert result.eoseg is None


def test_training_pixels_take_the_median_over_valid_dates() -> None:
    """A three-date cube: the forest sees eoseg's model input, the median of valid dates."""
    rng = np.random.default_rng(3)
    data = rng.uniform(0, 1, (3, 2, 8, 8)).astype(np.float32)
    valid = np.ones((3, 8, 8), np.uint8)
    valid[0, :4] = 0  # date 0 clouded in the top half
    cube = xr.Dataset(
        {"data": (("time", "band", "y", "x"), data), "valid": (("time", "y", "x"), valid)}
    )
    labels = xr.DataArray(np.full((8, 8), 255, np.uint8), dims=("y", "x"))
    labels[1, 2] = 0  # top half: dates 1 and 2 only
    labels[6, 5] = 1  # bottom half: all three dates
    x, y = training_pixels(cube, labels, ForestOptions(window=5))
    np.testing.assert_array_equal(y, [0, 1])
    np.testing.assert_allclose(x[0], np.median(data[1:, :, 1, 2], axis=0))
    np.testing.assert_allclose(x[1], np.median(data[:, :, 6, 5], axis=0))


def test_table_and_json_show_eoseg_beside_the_forest(
    scene: Scene, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from conftest import save_untrained_model

    model = save_untrained_model(tmp_path / "model", BANDS)
    classmap = tmp_path / "map.zarr"
    predict(scene.cube, model, classmap)
    result = compare(
        scene.cube, scene.labels, scene.truth_tif, classmap=classmap, options=ForestOptions()
    )
    assert result.eoseg is not None
    # The class map's schema (the untrained model's six demo classes) scores both maps.
    assert result.forest.report.class_names == result.eoseg.report.class_names
    assert result.forest.report.n_pixels == result.eoseg.report.n_pixels == SIZE * SIZE - 150
    # An untrained U-Net cannot match the forest on separable classes.
    assert result.forest.report.miou > result.eoseg.report.miou
    out = io.StringIO()
    console = Console(file=out, width=200)
    console.print(format_table(result))
    console.print(format_classes(result))
    text = out.getvalue()
    assert "eoseg U-Net" in text and "random forest (200 trees)" in text
    assert f"{result.forest.report.overall_accuracy:.3f}" in text
    assert f"{result.eoseg.report.miou:.3f}" in text

    argv = ["baseline.py", "--cube", str(scene.cube), "--labels", str(scene.labels)]
    argv += ["--truth", str(scene.truth_tif), "--classmap", str(classmap), "--json"]
    monkeypatch.setattr(sys, "argv", argv)
    main()
    doc = json.loads(capsys.readouterr().out)
    assert doc["forest"]["miou"] == pytest.approx(result.forest.report.miou)
    assert doc["eoseg"]["overall_accuracy"] == pytest.approx(result.eoseg.report.overall_accuracy)
    assert doc["forest"]["train_pixels"] == 150
