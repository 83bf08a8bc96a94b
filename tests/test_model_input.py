"""Tests of eoseg.model_input: one model input for training and prediction, over dates."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from eoseg import model_input, predict, sampling, tile_prediction
from eoseg.classes import DEMO_CLASSES
from eoseg.cube import ingest, open_cube
from eoseg.errors import InvalidParameterError
from eoseg.grid import iter_tiles
from eoseg.inference import card_lattice
from eoseg.model_input import cube_time_mode, input_stack, pick_date, time_slices
from eoseg.models.card import ModelCard


@pytest.fixture(scope="module")
def by_date_cube(demo_data, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    """The demo scenes ingested one time step per date (west and east halves)."""
    out = tmp_path_factory.mktemp("bydate") / "cube.zarr"
    ingest([demo_data.catalog], out, tile_size=96, by_date=True)
    return out


def _card(bands: tuple[str, ...], time: model_input.TimeMode, chip: int = 32) -> ModelCard:
    return ModelCard(
        name="t",
        bands=bands,
        mean=(0.1,) * len(bands),
        std=(0.1,) * len(bands),
        classes=DEMO_CLASSES,
        chip_size=chip,
        architecture={"name": "unet", "base_width": 8, "depth": 2},
        time=time,
    )


def test_input_stack_median_and_per_date() -> None:
    data = np.stack([np.full((2, 2, 2), 1.0), np.full((2, 2, 2), 3.0)]).astype(np.float32)
    valid = np.ones((2, 2, 2), np.uint8)
    valid[0, 0, 0] = 0  # date 0 clouded at (0, 0)
    valid[:, 1, 1] = 0  # no date valid at (1, 1)
    med, med_ok = input_stack(data, valid, "median")
    assert med.shape == (1, 2, 2, 2) and med.dtype == np.float32
    np.testing.assert_array_equal(med[0, :, 0, 0], [3.0, 3.0])  # the only valid date
    np.testing.assert_array_equal(med[0, :, 0, 1], [2.0, 2.0])  # median of 1 and 3
    np.testing.assert_array_equal(med_ok, [[[True, True], [True, False]]])
    per, per_ok = input_stack(data, valid, "per-date")
    assert per.shape == (2, 2, 2, 2)
    assert np.isnan(per[0, :, 0, 0]).all() and (per[1, :, 0, 0] == 3.0).all()
    np.testing.assert_array_equal(per_ok[0], [[False, True], [True, False]])
    np.testing.assert_array_equal(per_ok[1], [[True, True], [True, False]])
    assert time_slices(3, "median") == [slice(0, 3)]
    assert time_slices(2, "per-date") == [slice(0, 1), slice(1, 2)]


def test_pick_date_draws_only_among_dates_that_qualify() -> None:
    images = np.ones((3, 2, 4, 4), np.float32)
    images[0] = np.nan  # date 0 has no data in this window
    labels = np.zeros((4, 4), np.uint8)
    labels[0] = 255
    rng = np.random.default_rng(0)
    picked = set()
    for _ in range(40):
        chip = pick_date(images, labels, ignore=255, min_labelled=0.5, rng=rng)
        assert chip is not None
        x, y = chip
        picked.add(float(x[0, 0, 0]))
        assert (y[0] == 255).all() and (y[1:] == 0).all()
    images[1, :, 1:] = np.nan  # date 1: 25 % labelled and valid; date 2 stays
    for _ in range(10):
        chip = pick_date(images, labels, ignore=255, min_labelled=0.5, rng=rng)
        assert chip is not None
    assert pick_date(images[:2], labels, ignore=255, min_labelled=0.5, rng=rng) is None
    # A single image never draws from the generator: median sampling is as before.
    state = rng.bit_generator.state
    assert pick_date(images[2:], labels, ignore=255, min_labelled=0.5, rng=rng) is not None
    assert rng.bit_generator.state == state


@pytest.mark.parametrize("time", ["median", "per-date"], ids=["median", "per-date"])
def test_sampling_and_prediction_read_the_same_input(
    by_date_cube: Path, time: model_input.TimeMode
) -> None:
    """Both paths call the one input function, and read identical arrays for a window."""
    assert sampling.input_stack is tile_prediction.input_stack is model_input.input_stack
    cube = open_cube(by_date_cube)
    assert cube.sizes["time"] == 2 and cube_time_mode(cube) == "per-date"
    bands = ("B08", "B02", "B04")  # a subset, in another order than the cube's
    card = _card(bands, time)
    grid = cube.odc.geobox
    valid = cube["valid"].values.astype(bool)
    tile = next(  # an inner tile (no mirrored halo) that both dates (halves) cover
        t
        for t in iter_tiles(grid, 32)
        if t.y0 > 0 and t.x0 > 0 and valid[:, t.ys, t.xs].any(axis=(1, 2)).all()
    )
    have = [str(b) for b in cube["band"].values]
    index = np.array([have.index(b) for b in bands])
    sampled = sampling.read_window(cube, index, tile.ys, tile.xs, time)
    steps = time_slices(cube.sizes["time"], time)
    assert len(sampled) == len(steps) == (1 if time == "median" else 2)
    assert np.isfinite(sampled).any(axis=(1, 2, 3)).all()  # every input has data here
    lattice = card_lattice(card)
    dy = tile.y0 - lattice.span(tile.y0, tile.y0 + tile.height)[0]
    dx = tile.x0 - lattice.span(tile.x0, tile.x0 + tile.width)[0]
    for images, step in zip(sampled, steps, strict=True):
        window, valid = tile_prediction.tile_input(cube, card, tile, step, lattice)
        inner = window[:, dy : dy + tile.height, dx : dx + tile.width]
        np.testing.assert_array_equal(inner, images)  # NaN where nodata, in both
        np.testing.assert_array_equal(valid, ~np.isnan(images).any(axis=0))
    if time == "per-date":  # each date masked by its own validity: they differ
        assert not np.array_equal(sampled[0], sampled[1], equal_nan=True)


def test_per_date_chips_are_single_dates_with_the_labels(by_date_cube: Path) -> None:
    cube = open_cube(by_date_cube)
    labels = xr.DataArray(np.full((cube.sizes["y"], cube.sizes["x"]), 2, np.uint8), dims=("y", "x"))
    chips = sampling.sample_chips(
        cube, labels, chip_size=32, count=30, seed=0, time="per-date", balance=False
    )
    data = cube["data"].values
    valid = cube["valid"].values.astype(bool)
    dates = []
    for x, y, (r, c) in zip(chips.x, chips.y, chips.origins, strict=True):
        win = np.s_[r : r + 32, c : c + 32]
        per_date = [np.where(valid[t][win], data[t][(slice(None), *win)], np.nan) for t in (0, 1)]
        match = [t for t in (0, 1) if np.array_equal(x, per_date[t], equal_nan=True)]
        assert len(match) == 1  # the chip is one date's image, not a composite
        dates.append(match[0])
        np.testing.assert_array_equal(y == 255, np.isnan(x).any(axis=0))
    assert set(dates) == {0, 1}  # both dates (west and east halves) give chips


def test_card_records_the_model_input(tmp_path: Path) -> None:
    card = _card(("B02", "B08"), "per-date")
    doc = card.to_dict()
    assert doc["input"]["time"] == "per-date" and doc["input"]["bands"] == ["B02", "B08"]
    assert doc["input"]["normalisation"]["mean"] == [0.1, 0.1]
    assert "bands" not in doc and "mean" not in doc  # recorded once, under "input"
    assert ModelCard.from_dict(doc) == card
    # A card written before the input was recorded: top-level bands, trained on the median.
    old = {k: v for k, v in doc.items() if k != "input"}
    old.update(bands=["B02", "B08"], mean=[0.1, 0.2], std=[1.0, 2.0])
    read = ModelCard.from_dict(old)
    assert read.time == "median" and read.bands == ("B02", "B08") and read.std == (1.0, 2.0)
    bad = dataclasses.replace(card).to_dict()
    bad["input"]["time"] = "mean"
    with pytest.raises(InvalidParameterError, match="per-date"):
        ModelCard.from_dict(bad)


def write_dated_scenes(root: Path) -> tuple[Path, np.ndarray, tuple[slice, slice]]:
    """Two 96 px scenes (4 bands, EPSG:32633) of different dates as a STAC catalog.

    The ground is 16 px cells of water, forest and cropland; in the patch, water on the
    first date is forest on the second. Returns the catalog, the (timeless) labels of the
    ground (255 on the patch, which has no single class) and the patch.
    """
    import pystac
    import rasterio
    from affine import Affine
    from rasterio.warp import transform_bounds

    from eoseg.synthetic import BANDS, REFLECTANCE_SCALE, SPECTRA

    rng = np.random.default_rng(3)
    cells = rng.choice([0, 1, 3], size=(6, 6))
    cells[0, :3] = (0, 1, 3)  # every class shows outside the patch
    truth = np.kron(cells, np.ones((16, 16), np.int64))
    patch = np.s_[32:64, 32:64]
    labels = truth.astype(np.uint8)
    labels[patch] = 255
    tf = Affine(10.0, 0, 500000.0, 0, -10.0, 5300000.0)
    box = transform_bounds("EPSG:32633", "EPSG:4326", 500000.0, 5299040.0, 500960.0, 5300000.0)
    geom = {
        "type": "Polygon",
        "coordinates": [[(box[0], box[1]), (box[2], box[1]), (box[2], box[3]), (box[0], box[3])]],
    }
    catalog = pystac.Catalog("two-dates", "two dates of one place")
    for day, patch_class in (("2024-05-10", 0), ("2024-08-20", 1)):
        ground = truth.copy()
        ground[patch] = patch_class
        refl = SPECTRA[ground].transpose(2, 0, 1) * rng.normal(1, 0.03, (4, 1, 1))
        refl += rng.normal(0, 0.004, refl.shape)
        dn = np.clip(np.rint(refl / REFLECTANCE_SCALE), 1, 65535).astype(np.uint16)
        when = np.datetime64(day).astype("datetime64[s]").item()
        item = pystac.Item(f"scene-{day}", geom, list(box), when, {"platform": "synthetic"})
        folder = root / item.id
        folder.mkdir(parents=True)
        for k, band in enumerate(BANDS):
            path = folder / f"{band}.tif"
            profile = {"driver": "GTiff", "width": 96, "height": 96, "count": 1}
            profile.update(dtype="uint16", crs="EPSG:32633", transform=tf, nodata=0)
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(dn[k], 1)
            raster = {"nodata": 0, "scale": REFLECTANCE_SCALE, "offset": 0}
            extra = {"raster:bands": [raster]}
            item.add_asset(band, pystac.Asset(str(path), band, None, None, ["data"], extra))
        catalog.add_item(item)
    catalog.normalize_hrefs(str(root))
    catalog.save(pystac.CatalogType.ABSOLUTE_PUBLISHED)
    return root / "catalog.json", labels, patch


def test_two_date_cube_gives_a_two_date_class_map(tmp_path: Path) -> None:
    """Acceptance (issue 9, defect 6): a by-date cube trains on chips of each date and
    predicts every date; the map changes where the ground changes, and only there."""
    from eoseg.predict import open_classmap
    from eoseg.train import TrainConfig, train_model

    catalog, labels, patch = write_dated_scenes(tmp_path / "scenes")
    result = ingest([catalog], tmp_path / "cube.zarr", tile_size=48, by_date=True)
    assert result.times == ("2024-05-10", "2024-08-20")
    cube = open_cube(tmp_path / "cube.zarr")
    assert cube.attrs["by_date"] is True and cube_time_mode(cube) == "per-date"
    config = TrainConfig(
        chip_size=32, depth=2, base_width=8, epochs=12, train_chips=48, val_chips=8,
        batch_size=8, lr=1e-2, block_size=48, num_threads=1,
    )  # fmt: skip
    lab = xr.DataArray(labels, dims=("y", "x"))
    card = train_model(cube, lab, tmp_path / "model", schema=DEMO_CLASSES, config=config)
    assert card.time == "per-date"
    predict.predict(tmp_path / "cube.zarr", tmp_path / "model", tmp_path / "map.zarr")
    cmap = open_classmap(tmp_path / "map.zarr")
    assert cmap["class"].dims == ("time", "y", "x")
    np.testing.assert_array_equal(cmap["time"].values, cube["time"].values)
    cls = cmap["class"].values
    assert (cls != 255).all()  # both dates are valid everywhere
    first, second = cls[0][patch], cls[1][patch]
    assert np.mean(first == 0) > 0.9 and np.mean(second == 1) > 0.9  # water, then forest
    outside = labels != 255
    assert np.mean(cls[0][outside] == cls[1][outside]) > 0.95  # elsewhere the dates agree
    assert np.mean(cls[0][outside] == labels[outside]) > 0.9
