"""Tests of the synthetic demo landscape (`eoseg.synthetic`)."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pystac
import pytest
import rasterio
import shapely
from affine import Affine
from pyproj import CRS, Transformer
from rasterio import features

from eoseg.errors import InvalidParameterError
from eoseg.synthetic import (
    BANDS,
    BOX_MIN_CLASS_SHARE,
    CLOUD_ASSET,
    REFLECTANCE_SCALE,
    SPECTRA,
    DemoData,
    DemoSpec,
    _boxes,
    make_demo_data,
)

SMALL = DemoSpec(seed=3, width_m=2560.0, height_m=1280.0)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoData:
    return make_demo_data(tmp_path_factory.mktemp("demo"), SMALL)


def _items(demo: DemoData) -> list[pystac.Item]:
    catalog = pystac.Catalog.from_file(str(demo.catalog))
    return sorted(catalog.get_items(recursive=True), key=lambda i: i.id)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix in (".tif", ".json"))


def test_same_seed_gives_identical_output(demo: DemoData, tmp_path: Path) -> None:
    again = make_demo_data(tmp_path, SMALL)
    root_a, root_b = demo.truth.parent, again.truth.parent
    files_a, files_b = _files(root_a), _files(root_b)
    assert [p.relative_to(root_a) for p in files_a] == [p.relative_to(root_b) for p in files_b]
    for a, b in zip(files_a, files_b, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
    for name in ("noisy_labels", "clean_labels", "holdout_truth"):
        ga, gb = gpd.read_file(getattr(demo, name)), gpd.read_file(getattr(again, name))
        assert ga["class_id"].tolist() == gb["class_id"].tolist()
        assert ga.geometry.to_wkb().tolist() == gb.geometry.to_wkb().tolist()
    assert again.holdout_bbox == demo.holdout_bbox and again.clean_bbox == demo.clean_bbox


def test_different_seed_differs(demo: DemoData, tmp_path: Path) -> None:
    other = make_demo_data(tmp_path, DemoSpec(seed=4, width_m=2560.0, height_m=1280.0))
    with rasterio.open(demo.truth) as a, rasterio.open(other.truth) as b:
        assert a.shape == b.shape
        assert (a.read(1) != b.read(1)).mean() > 0.2


def test_truth_raster_has_every_class(demo: DemoData) -> None:
    with rasterio.open(demo.truth) as src:
        truth = src.read(1)
        assert src.dtypes[0] == "uint8" and src.nodata == 255
        assert src.crs.to_epsg() == 3035 and src.res == (10.0, 10.0)
        assert src.shape == (128, 256)
    counts = np.bincount(truth.ravel(), minlength=256)
    assert (counts[:6] > 0).all(), counts[:6]
    assert counts[6:].sum() == 0


@pytest.mark.parametrize(("index", "epsg"), [(0, 32632), (1, 32633)], ids=["west", "east"])
def test_scene_cogs_have_native_utm_grids(demo: DemoData, index: int, epsg: int) -> None:
    item = _items(demo)[index]
    assert item.properties["proj:code"] == f"EPSG:{epsg}"
    for key in (*BANDS, CLOUD_ASSET):
        with rasterio.open(item.assets[key].get_absolute_href()) as src:
            assert src.crs.to_epsg() == epsg
            assert src.nodata == (255 if key == CLOUD_ASSET else 0)
            assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
            assert src.transform.a == 10.0 and src.transform.e == -10.0
            assert list(src.shape) == item.properties["proj:shape"]
            data = src.read(1)
        if key == CLOUD_ASSET:
            assert set(np.unique(data)) <= {0, 1, 255}
            clear = data[data != 255]
            assert 0 < (clear == 1).mean() < 0.3
        else:
            assert data.dtype == np.uint16 and (data == 0).mean() < 0.5


def test_catalog_lists_two_items_with_band_assets(demo: DemoData) -> None:
    items = _items(demo)
    assert len(items) == 2
    assert len({i.id for i in items}) == 2 and len({i.datetime for i in items}) == 2
    for item in items:
        assert set(item.assets) == {*BANDS, CLOUD_ASSET}
        assert all(item.assets[b].roles == ["data"] for b in BANDS)
        assert item.assets[CLOUD_ASSET].roles == ["cloudmask"]
        assert all(Path(a.get_absolute_href() or "").exists() for a in item.assets.values())
        lon0, lat0, lon1, lat1 = item.bbox or (0, 0, 0, 0)
        assert 11.9 < lon0 < lon1 < 12.1 and 47.9 < lat0 < lat1 < 48.1
    root = demo.catalog.parent
    text = "".join(p.read_text() for p in root.rglob("*.json"))
    assert str(root) not in text  # self-contained: relative hrefs only
    b0, b1 = items[0].bbox, items[1].bbox
    assert b0 and b1 and b0[0] < b1[0] < b0[2] < b1[2]  # west/east, overlapping


def _sample(item: pystac.Item, xs: np.ndarray, ys: np.ndarray, crs: str) -> np.ndarray:
    """Reflectance (band, point) and cloud mask of ``item`` at ground points (x, y in crs)."""
    with rasterio.open(item.assets[CLOUD_ASSET].get_absolute_href()) as src:
        px, py = Transformer.from_crs(crs, src.crs, always_xy=True).transform(xs, ys)
        rows, cols = rasterio.transform.rowcol(src.transform, px, py)
        rows, cols = np.asarray(rows), np.asarray(cols)
        inside = (rows >= 0) & (rows < src.height) & (cols >= 0) & (cols < src.width)
        rows, cols = np.where(inside, rows, 0), np.where(inside, cols, 0)
        mask = np.where(inside, src.read(1)[rows, cols], 255)
    values = []
    for band in BANDS:
        with rasterio.open(item.assets[band].get_absolute_href()) as src:
            values.append(src.read(1)[rows, cols] * REFLECTANCE_SCALE)
    return np.vstack([np.array(values), mask[None]])


def test_scenes_agree_on_the_ground_in_their_overlap(demo: DemoData) -> None:
    with rasterio.open(demo.truth) as src:
        truth, tf, crs = src.read(1), src.transform, src.crs.to_string()
    # Interior pixels only (same class in a 5x5 window), so resampling cannot change the class.
    interior = np.ones_like(truth, bool)
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            interior &= np.roll(truth, (dy, dx), axis=(0, 1)) == truth
    rows, cols = np.nonzero(interior[2:-2, 2:-2])
    xs, ys = rasterio.transform.xy(tf, rows + 2, cols + 2)
    west, east = (_sample(i, np.asarray(xs), np.asarray(ys), crs) for i in _items(demo))
    both = (west[4] == 0) & (east[4] == 0)
    assert both.sum() > 2000, "the scenes should share a clear overlap of a few thousand px"
    w, e, cls = west[:4, both], east[:4, both], truth[rows + 2, cols + 2][both]
    assert np.median(np.abs(w - e)) < 0.01
    assert np.corrcoef(w[3], e[3])[0, 1] > 0.9
    for c in np.unique(cls):
        for scene in (w, e):
            mean = np.median(scene[:, cls == c], axis=1)
            np.testing.assert_allclose(mean, SPECTRA[c], rtol=0.2, atol=0.01, err_msg=f"class {c}")


def test_labels_open_with_class_id_and_no_overlaps(demo: DemoData) -> None:
    for path in (demo.noisy_labels, demo.clean_labels, demo.holdout_truth):
        gdf = gpd.read_file(path)
        assert gdf.crs.to_epsg() == 4326
        assert gdf["class_id"].dtype.kind == "i"
        assert gdf["class_id"].between(0, 5).all() and len(gdf) > 0
        assert (gdf.geom_type == "Polygon").all() and gdf.is_valid.all()
        metric = gdf.to_crs(3035)
        overlap = metric.area.sum() - shapely.union_all(metric.geometry.to_numpy()).area
        assert overlap < 1e-4 * metric.area.sum() + 1.0, path.name


def test_clean_and_holdout_boxes_are_disjoint_and_hold_their_labels(demo: DemoData) -> None:
    clean, holdout = shapely.box(*demo.clean_bbox), shapely.box(*demo.holdout_bbox)
    assert not clean.intersects(holdout)
    for path, box in ((demo.clean_labels, clean), (demo.holdout_truth, holdout)):
        gdf = gpd.read_file(path)
        assert box.buffer(1e-9).contains(shapely.union_all(gdf.geometry.to_numpy()))
        area = shapely.area(gdf.geometry.to_numpy()).sum()
        assert area == pytest.approx(box.area, rel=1e-3)  # fully labelled box
    for item in _items(demo):  # clouds keep off the held-out box
        with rasterio.open(item.assets[CLOUD_ASSET].get_absolute_href()) as src:
            window = rasterio.windows.from_bounds(
                *rasterio.warp.transform_bounds(4326, src.crs, *demo.holdout_bbox), src.transform
            )
            mask = src.read(1, window=window.round_offsets().round_lengths(), boundless=True)
        assert (mask == 1).mean() < 0.05


def test_holdout_truth_matches_truth_raster(demo: DemoData) -> None:
    with rasterio.open(demo.truth) as src:
        truth, tf, crs = src.read(1), src.transform, src.crs
    gdf = gpd.read_file(demo.holdout_truth).to_crs(crs)
    burnt = features.rasterize(
        zip(gdf.geometry, gdf["class_id"], strict=True), truth.shape, transform=tf, fill=255
    )
    inside = burnt != 255
    assert inside.mean() > 0.05
    assert (burnt[inside] == truth[inside]).mean() > 0.97


def test_noisy_labels_omit_part_of_the_area(demo: DemoData) -> None:
    noisy = gpd.read_file(demo.noisy_labels).to_crs(3035)
    total = SMALL.width_m * SMALL.height_m
    assert 0.4 * total < noisy.area.sum() < 0.92 * total
    assert set(noisy["class_id"]) >= {0, 1, 5}


@pytest.mark.parametrize(
    "kwargs",
    [{"width_m": 100.0}, {"clean_fraction": 0.5}, {"omission_rate": 1.0}],
    ids=["tiny", "big-box", "omit-all"],
)
def test_bad_spec_raises(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidParameterError, match="must"):
        DemoSpec(**kwargs)  # type: ignore[arg-type]


def _grid(spec: DemoSpec) -> tuple[CRS, Affine, int, int]:
    """The reference grid of `make_demo_data` (EPSG:3035 centred on the spec's centre)."""
    crs = CRS.from_user_input(spec.crs)
    cx, cy = Transformer.from_crs(4326, crs, always_xy=True).transform(
        spec.center_lon, spec.center_lat
    )
    w, h = round(spec.width_m / spec.resolution), round(spec.height_m / spec.resolution)
    left = round((cx - w * spec.resolution / 2) / spec.resolution) * spec.resolution
    top = round((cy + h * spec.resolution / 2) / spec.resolution) * spec.resolution
    return crs, Affine(spec.resolution, 0, left, 0, -spec.resolution, top), h, w


def _window(cls: np.ndarray, crs: CRS, tf: Affine, bbox: tuple[float, ...]) -> np.ndarray:
    x0, y0, x1, y1 = rasterio.warp.transform_bounds(4326, crs, *bbox)
    win = rasterio.windows.from_bounds(x0, y0, x1, y1, tf).round_offsets().round_lengths()
    return cls[win.toslices()]


def _all_classes(cls: np.ndarray, row: int, col: int, side: int) -> None:
    """Paint a ``side`` px square of six horizontal stripes, one per class, at ``row, col``."""
    for k in range(6):
        cls[row + k * side // 6 : row + (k + 1) * side // 6, col : col + side] = k


def test_holdout_box_moves_to_where_every_class_is_and_the_clean_box_stays() -> None:
    spec = DemoSpec(clean_fraction=0.02)
    crs, tf, h, w = _grid(spec)
    cls = np.full((h, w), 3, np.uint8)  # cropland only, but for one patch
    boundary = Transformer.from_crs(4326, crs, always_xy=True).transform(12.0, 48.0)[0]
    _all_classes(cls, round(0.45 * h), round((boundary - tf.c) / tf.a) - 60, 120)
    clean, holdout = _boxes(spec, crs, tf, cls)
    assert clean == _boxes(spec, crs, tf, np.full((h, w), 3, np.uint8))[0]  # fixed place
    assert not shapely.box(*clean).intersects(shapely.box(*holdout))
    assert holdout[0] < 12.0 < holdout[2]  # still across the zone boundary
    window = _window(cls, crs, tf, holdout)
    share = np.bincount(window.ravel(), minlength=6) / window.size
    assert (share >= BOX_MIN_CLASS_SHARE).all(), share


def test_holdout_box_stays_put_with_a_warning_where_no_place_holds_every_class(
    caplog: pytest.LogCaptureFixture,
) -> None:
    spec = DemoSpec()
    crs, tf, h, w = _grid(spec)
    with caplog.at_level("WARNING", logger="eoseg.synthetic"):
        clean, holdout = _boxes(spec, crs, tf, np.full((h, w), 3, np.uint8))
    assert "holds all" in caplog.text
    # The nominal boxes: the held-out one centred on the zone boundary, the clean one north.
    assert (holdout[0] + holdout[2]) / 2 == pytest.approx(12.0, abs=1e-3)
    assert clean[1] > holdout[3]
