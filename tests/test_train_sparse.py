"""Default training on a small scene with a dozen small polygons drawn in another CRS.

The scene: the synthetic landscape rendered over 4 x 4 km (a ~440 px cube in UTM 32N);
the labels: twelve squares of 50-90 m (5-9 px) on water, forest, grassland and cropland,
drawn in EPSG:4326 and rasterized by `eoseg.labels.rasterize_labels` — about 0.3 % of the
scene, the normal case of hand-drawn clean labels. Default options (only the thread count
and the epochs lowered) must sample, validate on held-out labelled blocks and learn.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rioxarray  # noqa: F401  (the .rio accessor)
import shapely
import torch
from scipy import ndimage
from typer.testing import CliRunner

from eoseg.classes import IGNORE_ID, generic_schema
from eoseg.cli import app
from eoseg.cube import ingest, open_cube
from eoseg.labels import open_labels, rasterize_labels
from eoseg.models import load_model
from eoseg.models.card import adjust_logits, normalize
from eoseg.synthetic import DemoSpec, make_demo_data
from eoseg.train import TrainConfig, train_from_stores
from eoseg.train.plan import plan_sampling
from eoseg.train.prior import class_pixels, logit_adjustment
from eoseg.train.run import sample_training_chips

CLASSES = (0, 1, 2, 3)
"""Water, forest, grassland, cropland: spectrally separable in the synthetic scenes."""
PER_CLASS = 3
CONFIG = TrainConfig(num_threads=2, epochs=5, refit=False)
"""The defaults, with fewer epochs for test time, and the model that validation measured
(no refit on all labels after it; `test_cli_trains_without_size_options` has the refit)."""


def _draw_squares(truth: np.ndarray, rng: np.random.Generator) -> list[tuple[int, int, int, int]]:
    """``(row, col, side, class)`` of squares lying on one class each, spread out."""
    chosen: list[tuple[int, int, int, int]] = []
    for k in CLASSES:
        side = 9
        inside = ndimage.minimum_filter((truth == k).astype(np.uint8), size=side + 4) > 0
        inside[:30], inside[-30:], inside[:, :30], inside[:, -30:] = False, False, False, False
        cand = np.argwhere(inside)
        for i in rng.permutation(len(cand)):
            r, c = cand[i]
            if all(abs(r - q[0]) + abs(c - q[1]) > 40 for q in chosen):
                chosen.append((int(r), int(c), int(rng.integers(5, 10)), k))
                if sum(q[3] == k for q in chosen) == PER_CLASS:
                    break
    return chosen


@pytest.fixture(scope="module")
def sparse_scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(cube, labels)`` stores of the small scene and its twelve polygons."""
    root = tmp_path_factory.mktemp("sparse")
    data = make_demo_data(root / "data", DemoSpec(seed=3, width_m=4000.0, height_m=4000.0))
    cube = root / "cube.zarr"
    ingest([data.catalog], cube, tile_size=256)
    with rasterio.open(data.truth) as src:
        truth, tf, crs = src.read(1), src.transform, src.crs
    squares = _draw_squares(truth, np.random.default_rng(0))
    geoms = []
    for r, c, side, _ in squares:
        x0, y0 = tf * (c - side / 2, r - side / 2)
        x1, y1 = tf * (c + side / 2, r + side / 2)
        geoms.append(shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
    gdf = gpd.GeoDataFrame({"class_id": [q[3] for q in squares]}, geometry=geoms, crs=crs)
    vector = root / "polygons.gpkg"
    gdf.to_crs(4326).to_file(vector, driver="GPKG", engine="pyogrio")
    labels = root / "labels.zarr"
    rasterize_labels(vector, cube, labels)
    return cube, labels


def test_scene_is_small_and_sparse(sparse_scene) -> None:
    cube, labels = sparse_scene
    lab = open_labels(labels).values
    assert 400 <= min(lab.shape) <= 480
    assert open_cube(cube).rio.crs.to_epsg() == 32632
    assert sorted(np.unique(lab[lab != IGNORE_ID])) == list(CLASSES)
    assert ndimage.label(lab != IGNORE_ID)[1] == len(CLASSES) * PER_CLASS
    assert np.mean(lab != IGNORE_ID) < 0.01


def test_default_training_starts_validates_and_learns(sparse_scene, tmp_path) -> None:
    """Sizes are derived (small chips, chip-sized blocks), validation holds labelled
    blocks, and the card's val_miou is the mIoU of the validation chips' labelled pixels
    over the classes present in them, computed here independently."""
    cube_path, labels_path = sparse_scene
    start = time.perf_counter()
    card = train_from_stores(cube_path, labels_path, tmp_path / "m", config=CONFIG)
    seconds = time.perf_counter() - start
    sampling = card.sampling
    print(f"trained in {seconds:.0f} s; sampling {json.dumps(sampling)}; metrics "
          f"{ {k: card.metrics[k] for k in ('val_miou', 'val_accuracy', 'chips')} }")  # fmt: skip
    assert card.chip_size == sampling["chip_size"] <= 64
    assert {"chip_size", "block_size", "min_labelled", "train_chips"} <= set(sampling["derived"])
    assert sampling["split"] == "blocks" and sampling["val_blocks"] >= 1
    assert sampling["stages"]["pretrain"]["min_labelled"] < 0.05
    assert card.metrics["chips"]["pretrain"][1] > 0  # validation chips
    # learns: four classes, chance mIoU ~0.25 at best
    assert card.metrics["val_accuracy"] > 0.8 and card.metrics["val_miou"] > 0.6
    assert "labelled pixels" in card.metrics["val_note"]
    # the figure, recomputed from the chips and the saved model
    cube, labels = open_cube(cube_path), open_labels(labels_path)
    plan = plan_sampling({"pretrain": labels}, CONFIG)
    sets, _ = sample_training_chips(cube, {"pretrain": labels}, plan, CONFIG, generic_schema(4))
    train, val = sets["pretrain"]
    model, loaded = load_model(tmp_path / "m")
    # balanced chips over-represent the smaller polygons' classes: the card undoes it
    expected = logit_adjustment(
        sampling["stages"]["pretrain"]["class_pixels"], class_pixels(train.y, 4)
    )
    assert loaded.logit_adjustment == pytest.approx(expected) and max(map(abs, expected)) > 0.05
    with torch.no_grad():
        pred = np.concatenate([
            adjust_logits(model(normalize(torch.from_numpy(val.x[i : i + 16]), loaded)), loaded)
            .argmax(1)
            .numpy()
            for i in range(0, len(val), 16)
        ])  # fmt: skip
    keep = val.y != IGNORE_ID
    truth, guess = val.y[keep], pred[keep]
    ious = [
        np.sum((truth == k) & (guess == k)) / np.sum((truth == k) | (guess == k))
        for k in np.unique(truth)
    ]
    assert card.metrics["val_miou"] == pytest.approx(float(np.mean(ious)), abs=1e-9)
    assert card.metrics["val_accuracy"] == pytest.approx(float(np.mean(truth == guess)))


def test_cli_trains_without_size_options(sparse_scene, tmp_path) -> None:
    cube, labels = sparse_scene
    out = tmp_path / "m"
    args = ["train", "--cube", str(cube), "--labels", str(labels), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--epochs", "2", "--num-threads", "2", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["chip_size"] <= 64 and doc["val_miou"] is not None
    card = json.loads((out / "model.json").read_text())
    assert card["sampling"]["chip_size"] == doc["chip_size"]
    assert card["metrics"]["chips"]["pretrain"][1] > 0
    # a dozen polygons: refit on all of them for the epochs the validated stage ran,
    # ending on the mean of the refit's weights after its first tenth of steps
    assert card["sampling"]["refit_chips"] > 0 and "refit" in card["sampling"]["derived"]
    refit, pretrain = card["metrics"]["refit"], card["metrics"]["pretrain"]
    assert len(refit["train_loss"]) == len(pretrain["train_loss"]) and not refit["val_miou"][0]
    steps = len(refit["train_loss"]) * -(-card["metrics"]["chips"]["refit"][0] // 8)
    assert refit["averaged_steps"] == steps - int(0.1 * steps)
    assert "measured before the refit" in card["metrics"]["val_note"]
    # and, refit, three networks of seeds 0-2 averaged as one model
    assert card["architecture"]["members"] == 3 and len(card["metrics"]["members"]) == 3
    assert len({m["version"] for m in card["metrics"]["members"]}) == 3


def test_cli_chip_larger_than_the_scene_names_the_option(sparse_scene, tmp_path) -> None:
    cube, labels = sparse_scene
    args = ["train", "--cube", str(cube), "--labels", str(labels), "--out", str(tmp_path / "m")]
    result = CliRunner().invoke(app, [*args, "--chip-size", "512"])
    assert result.exit_code == 2
    assert "--chip-size" in result.stderr and "512" in result.stderr
    assert not (tmp_path / "m").exists()


def test_an_ensemble_interrupted_resumes_with_its_finished_members(sparse_scene, tmp_path) -> None:
    """A dozen polygons train an ensemble by default (the members' seeds follow --seed);
    killed while the second member trains, the run resumes with the first member's folder
    as it was and ends on the model an uninterrupted run saves."""
    cube, labels = sparse_scene
    config = TrainConfig(num_threads=2, epochs=1, members=2)
    whole = train_from_stores(cube, labels, tmp_path / "whole", config=config)
    assert whole.architecture["members"] == 2 and len(whole.metrics["members"]) == 2
    assert not list(tmp_path.glob(".whole.member-*"))  # members removed once saved

    sampled = []

    def stop_in_second_member(stage, step, total, info) -> None:
        sampled.append(stage == "sample" and step == 0)
        if sum(sampled) == 2 and stage == "pretrain":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_from_stores(
            cube, labels, tmp_path / "m", config=config, progress=stop_in_second_member
        )
    first = tmp_path / ".m.member-0" / "model.json"
    finished = json.loads(first.read_text())
    assert not (tmp_path / "m").exists()
    card = train_from_stores(cube, labels, tmp_path / "m", config=config)
    assert card.metrics["members"][0]["version"] == finished["version"]
    assert card.version == whole.version  # the CPU result of an uninterrupted run
