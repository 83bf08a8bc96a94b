"""Bad input values (issue 10): absurd options, label values that are no class ids, rasters
on other grids, doubtful requests. Every case must be refused with exit 2, a message
naming the flag, no traceback and every file untouched (see tests/badinput.py); the
normal tests after the table check that the limits let real work through.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from tests.badinput import Case, run_case
from tests.conftest import write_geotiff

SCHEMA_2 = [
    {"id": 0, "name": "water", "color": "#1f78b4"},
    {"id": 1, "name": "forest", "color": "#33a02c"},
]


def _cube_grid(ws: Path) -> Any:
    from eoseg.cube import open_cube

    return open_cube(ws / "cube.zarr").odc.geobox


def _label_raster(name: str, values: np.ndarray, *, nodata: float | None = None):  # type: ignore[no-untyped-def]
    """A ``prepare`` writing a class-id GeoTIFF on the cube's grid: ``values`` (a 2x2 pattern
    tiled over it) in its top-left quarter, class 1 elsewhere."""

    def prepare(ws: Path) -> None:
        grid = _cube_grid(ws)
        data = np.ones(grid.shape.yx, dtype=values.dtype)
        h, w = grid.shape.y // 2, grid.shape.x // 2
        data[:h, :w] = np.tile(values, (h // 2 + 1, w // 2 + 1))[:h, :w]
        write_geotiff(ws / name, data, crs=str(grid.crs), transform=grid.affine, nodata=nodata)

    return prepare


def _scene_like(name: str, *, crs: str | None = None, origin: tuple[float, float] | None = None,
                empty: bool = False):  # type: ignore[no-untyped-def]  # fmt: skip
    """A ``prepare`` writing a copy of ``scene.tif`` elsewhere (another CRS/place), or one
    whose every pixel is nodata."""

    def prepare(ws: Path) -> None:
        import rasterio

        with rasterio.open(ws / "scene.tif") as src:
            data, profile = src.read(1), src.profile
        if empty:
            write_geotiff(ws / name, np.zeros_like(data), crs=str(profile["crs"]),
                          transform=profile["transform"], nodata=0)  # fmt: skip
        else:
            write_geotiff(ws / name, data, crs=crs or str(profile["crs"]),
                          origin=origin or (0.0, 0.0), res=abs(profile["transform"].a))  # fmt: skip

    return prepare


def _schema_and_raster(ws: Path) -> None:
    (ws / "classes.json").write_text(json.dumps(SCHEMA_2))
    _label_raster("ids.tif", np.array([[0, 1], [3, 1]], dtype="uint8"))(ws)


def _shifted_labels(ws: Path) -> None:
    """``shifted.zarr``: the labels moved one pixel east (same shape, other grid)."""
    shutil.copytree(ws / "labels.zarr", ws / "shifted.zarr")
    x = zarr.open_array(ws / "shifted.zarr" / "x", mode="r+")
    x[:] = x[:] + 10.0


def _empty_vector(ws: Path) -> None:
    import geopandas as gpd

    gpd.read_file(ws / "polygons.gpkg").iloc[:0].to_file(ws / "empty.gpkg")


def _registry_file(ws: Path) -> None:
    (ws / "registry.txt").write_text("not a registry\n")


INGEST = ["ingest", "{ws}/scene.tif", "--out", "{ws}/new.zarr"]
TRAIN = ["train", "--cube", "{ws}/cube.zarr", "--labels", "{ws}/labels.zarr", "--out", "{ws}/m"]
EXPORT = ["export", "{ws}/map.zarr", "--polygons", "{ws}/map.gpkg"]
PREDICT = ["predict", "--cube", "{ws}/cube.zarr", "--model", "{ws}/model", "--out", "{ws}/new.zarr"]

CASES = [
    # ingest: the grid's pixel size, tiling and size limit
    Case("ingest-resolution-zero", [*INGEST, "--resolution", "0"], ("--resolution", "found 0.0")),
    Case("ingest-resolution-negative", [*INGEST, "--resolution", "-10"], ("--resolution", "-10")),
    Case("ingest-resolution-inf", [*INGEST, "--resolution", "inf"], ("--resolution", "found inf")),
    Case("ingest-resolution-nan", [*INGEST, "--resolution", "nan"], ("--resolution", "found nan")),
    Case("ingest-grid-too-large", [*INGEST, "--resolution", "0.001"],
         ("--max-pixels", "1,310,000 x 1,810,000 px", "--resolution 0.001 is 10,000 times finer")),
    Case("ingest-grid-above-max-pixels", [*INGEST, "--max-pixels", "1000"],
         ("131 x 181 px", "more than --max-pixels 1,000", "raise --max-pixels")),
    Case("ingest-max-pixels-zero", [*INGEST, "--max-pixels", "0"], ("--max-pixels", "found 0")),
    Case("ingest-max-pixels-nan", [*INGEST, "--max-pixels", "nan"], ("--max-pixels", "found nan")),
    Case("ingest-scenes-far-apart", [*INGEST[:2], "{ws}/far.tif", *INGEST[2:]],
         ("scene far", "beyond the area", "the first scene's CRS EPSG:32632", "separate cubes",
          "--allow-distant-crs"), prepare=_scene_like("far.tif", crs="EPSG:32610",
                                                      origin=(500000.0, 4200000.0))),
    Case("ingest-scenes-far-apart-grid-too-large",
         [*INGEST[:2], "{ws}/far.tif", *INGEST[2:], "--crs", "EPSG:4326", "--resolution", "0.0001"],
         ("--max-pixels", "2 CRSs", "EPSG:32610"),
         prepare=_scene_like("far.tif", crs="EPSG:32610", origin=(500000.0, 4200000.0))),
    Case("ingest-crs-far-from-scene", [*INGEST, "--crs", "EPSG:32610"],
         ("--crs EPSG:32610", "132° beyond", "its UTM zone is EPSG:32632", "--allow-distant-crs")),
    # --allow-distant-crs passes the CRS check (the size limit then refuses the tiny grid)
    Case("ingest-allow-distant-crs-then-grid-above-max-pixels",
         [*INGEST, "--crs", "EPSG:32610", "--resolution", "10", "--allow-distant-crs",
          "--max-pixels", "100"], ("more than --max-pixels 100",)),
    Case("ingest-tile-size-zero", [*INGEST, "--tile-size", "0"], ("--tile-size", "found 0")),
    Case("ingest-tile-size-negative", [*INGEST, "--tile-size", "-256"], ("--tile-size", "-256")),
    Case("ingest-too-many-tiles", [*INGEST, "--tile-size", "1", "--resolution", "0.1"],
         ("--tile-size 1", "237,110,000 tiles", "raise --tile-size")),
    Case("ingest-chunk-size-zero", [*INGEST, "--chunk-size", "0"],
         ("--chunk-size must be at least 1 px", "found 0")),
    Case("ingest-chunk-size-not-a-divisor", [*INGEST, "--chunk-size", "100"],
         ("--chunk-size 100", "must divide --tile-size 2048")),
    Case("ingest-bbox-nan", [*INGEST, "--bbox", "nan,47,12,48"], ("--bbox", "four numbers")),
    Case("ingest-bbox-not-degrees", [*INGEST, "--bbox", "722480,5320000,724290,5321310"],
         ("--bbox", "lon before lat")),
    Case("ingest-missing-source", ["ingest", "{ws}/missing.tif", "--out", "{ws}/new.zarr"],
         ("missing.tif does not exist",)),
    Case("ingest-all-nodata", ["ingest", "{ws}/empty.tif", "--out", "{ws}/new.zarr",
                               "--scheduler", "{scheduler}"],
         ("no scene holds a valid pixel", "(1 scene(s): empty;", "nodata value"),
         prepare=_scene_like("empty.tif", empty=True)),
    # rasterize: values of a class-id raster, empty vector files
    Case("rasterize-fractional-class-ids",
         ["rasterize", "{ws}/ids.tif", "--cube", "{ws}/cube.zarr", "--out", "{ws}/new.zarr"],
         ("1.5", "not whole", "expected whole class ids 0..254"),
         prepare=_label_raster("ids.tif", np.array([[0, 1.5], [2, 2.25]], dtype="float32"))),
    Case("rasterize-class-id-300",
         ["rasterize", "{ws}/ids.tif", "--cube", "{ws}/cube.zarr", "--out", "{ws}/new.zarr"],
         ("300", "no class id", "declares no nodata value", "--code-map"),
         prepare=_label_raster("ids.tif", np.array([[0, 300], [2, 1]], dtype="uint16"))),
    Case("rasterize-class-id-outside-schema",
         ["rasterize", "{ws}/ids.tif", "--classes", "{ws}/classes.json", "--cube",
          "{ws}/cube.zarr", "--out", "{ws}/new.zarr"],
         ("3 (no class id)", "0..1 (the classes of --classes)"), prepare=_schema_and_raster),
    Case("rasterize-empty-vector",
         ["rasterize", "{ws}/empty.gpkg", "--cube", "{ws}/cube.zarr", "--out", "{ws}/new.zarr"],
         ("empty.gpkg has no features",), prepare=_empty_vector),
    # train: every numeric option, labels on another grid, untrained models
    Case("train-epochs-zero", [*TRAIN, "--epochs", "0"], ("--epochs must be", "found 0")),
    Case("train-finetune-epochs-zero-with-finetune-labels",
         [*TRAIN, "--finetune-labels", "{ws}/labels.zarr", "--finetune-epochs", "0"],
         ("--finetune-epochs 0", "--finetune-labels unused")),
    Case("train-chip-size-zero", [*TRAIN, "--chip-size", "0"], ("--chip-size must be", "found 0")),
    Case("train-chip-size-not-divisible", [*TRAIN, "--chip-size", "60", "--depth", "3"],
         ("--chip-size 60 is not divisible by 2**depth = 8",)),
    Case("train-block-size-zero", [*TRAIN, "--block-size", "0"], ("--block-size must be",)),
    Case("train-batch-size-zero", [*TRAIN, "--batch-size", "0"], ("--batch-size must be",)),
    Case("train-val-fraction-nan", [*TRAIN, "--val-fraction", "nan"], ("--val-fraction", "nan")),
    Case("train-finetune-lr-zero", [*TRAIN, "--finetune-lr", "0"], ("--finetune-lr must be",)),
    Case("train-lr-inf", [*TRAIN, "--set", "lr=inf"], ("--set lr=... must be", "found inf")),
    Case("train-lr-negative", [*TRAIN, "--set", "lr=-0.1"], ("--set lr=... must be", "-0.1")),
    Case("train-elastic-inf", [*TRAIN, "--elastic", "inf"], ("--elastic must be", "found inf")),
    Case("train-seed-negative", [*TRAIN, "--seed", "-1"], ("--seed must be", "found -1")),
    Case("train-num-threads-zero", [*TRAIN, "--num-threads", "0"], ("--num-threads must be",)),
    Case("train-depth-zero", [*TRAIN, "--depth", "0"], ("--depth must be",)),
    Case("train-patience-zero", [*TRAIN, "--patience", "0"], ("--patience must be",)),
    Case("train-train-chips-zero", [*TRAIN, "--train-chips", "0"], ("--train-chips must be",)),
    Case("train-min-labelled-above-one", [*TRAIN, "--min-labelled", "1.5"],
         ("--min-labelled must be in [0, 1]",)),
    Case("train-epochs-fractional-in-config", [*TRAIN, "--set", "epochs=2.5"],
         ("--epochs must be a whole number", "2.5")),
    Case("train-labels-other-grid",
         ["train", "--cube", "{ws}/cube.zarr", "--labels", "{ws}/shifted.zarr", "--out", "{ws}/m"],
         ("--labels {ws}/shifted.zarr lies on another grid", "than the cube", "eoseg rasterize"),
         prepare=_shifted_labels),
    Case("train-finetune-labels-other-grid",
         [*TRAIN, "--finetune-labels", "{ws}/shifted.zarr"],
         ("--finetune-labels {ws}/shifted.zarr lies on another grid",), prepare=_shifted_labels),
    # predict: the chip lattice and precision (the workspace's model: depth 2, 32 px chips)
    Case("predict-overlap-negative", [*PREDICT, "--overlap", "-1"],
         ("--overlap must be 0..128 px", "--chip-size 256", "found -1")),
    Case("predict-overlap-above-half-chip", [*PREDICT, "--chip-size", "32", "--overlap", "20"],
         ("--overlap must be 0..16 px", "found 20", "or 16 for the four-fold blend")),
    Case("predict-chip-size-not-a-multiple", [*PREDICT, "--chip-size", "30"],
         ("--chip-size must be a positive multiple of 4", "found 30", "choose e.g. 28")),
    Case("predict-chip-size-zero", [*PREDICT, "--chip-size", "0"],
         ("--chip-size must be a positive multiple of 4", "found 0")),
    Case("predict-precision-unknown", [*PREDICT, "--precision", "fp16"],
         ("--precision must be one of auto, fp32, bf16", "found 'fp16'")),
    # evaluate, export, query
    Case("evaluate-truth-other-grid", ["evaluate", "{ws}/map.zarr", "--truth", "{ws}/shifted.zarr"],
         ("--truth {ws}/shifted.zarr lies on another grid", "than the class map"),
         prepare=_shifted_labels),
    Case("export-simplify-negative", [*EXPORT, "--simplify", "-1"], ("--simplify", "found -1")),
    Case("export-simplify-nan", [*EXPORT, "--simplify", "nan"], ("--simplify", "found nan")),
    Case("export-simplify-inf", [*EXPORT, "--simplify", "inf"], ("--simplify", "found inf")),
    Case("query-aoi-outside", ["query", "{ws}/map.zarr", "--aoi", "100,10,101,11"],
         ("the aoi (lon 100.0000..101.0000, lat 10.0000..11.0000) lies outside the area of the "
          "class map (lon 11.98",)),
    Case("query-aoi-nan", ["query", "{ws}/map.zarr", "--aoi", "11.9,nan,12,48"],
         ("--aoi", "four numbers")),
    Case("query-aoi-inf", ["query", "{ws}/map.zarr", "--aoi", "11.9,47,inf,48"],
         ("--aoi", "four numbers")),
    # models, demo
    Case("models-list-registry-is-file", ["models", "list", "--registry", "{ws}/registry.txt"],
         ("--registry {ws}/registry.txt is a file", "expected a registry folder"),
         prepare=_registry_file),
    Case("demo-seed-negative", ["demo", "--workdir", "{ws}/demo", "--seed", "-1"],
         ("--seed", "found -1")),
]  # fmt: skip

WKT_WORDS = ("PROJCRS", "GEOGCRS", "BASEGEOGCRS", "PARAMETER[")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, bad_input_template: Path, tmp_path: Path, request) -> None:  # type: ignore[no-untyped-def]
    if any("{scheduler}" in a for a in case.args):
        # Refused only after its tiles ran: on the session's threaded cluster, not a new one.
        address = request.getfixturevalue("client").scheduler_info()["address"]
        args = [a.replace("{scheduler}", address) for a in case.args]
        case = dataclasses.replace(case, args=args)
    outcome = run_case(case, bad_input_template, tmp_path)
    # One readable paragraph: no CRS dumped as WKT, no wall of text.
    assert not any(w in outcome.output for w in WKT_WORDS), outcome.output
    assert len(outcome.output) < 800, outcome.output


def _scenes(path: Path) -> list[Any]:
    from eoseg.catalog import scan_sources

    return list(scan_sources([path]).scenes)


def test_max_pixels_lets_a_large_grid_through(bad_input_template: Path) -> None:
    """A 2.4e10 px grid (a 1.3 x 1.8 km scene at 1 cm) is refused by default and planned
    (without listing a tile or reading a pixel) once --max-pixels allows it."""
    from eoseg.errors import InvalidParameterError
    from eoseg.ingest_plan import plan_grid

    scenes = _scenes(bad_input_template / "scene.tif")
    with pytest.raises(InvalidParameterError, match="131,000 x 181,000 px"):
        plan_grid(scenes, resolution=0.01)
    grid = plan_grid(scenes, resolution=0.01, max_pixels=1e11)
    assert (grid.shape.y, grid.shape.x) == (131_000, 181_000)
    assert grid.resolution.x == pytest.approx(0.01)
    assert tuple(grid.boundingbox) == pytest.approx(scenes[0].bounds)


def test_allow_distant_crs_plans_the_grid(bad_input_template: Path) -> None:
    from eoseg.errors import GeoreferenceError
    from eoseg.ingest_plan import plan_grid

    scenes = _scenes(bad_input_template / "scene.tif")
    with pytest.raises(GeoreferenceError, match="EPSG:32610"):
        plan_grid(scenes, "EPSG:32610", 10.0)
    grid = plan_grid(scenes, "EPSG:32610", 10.0, allow_distant_crs=True)
    assert grid.crs is not None and grid.crs.epsg == 32610
    # A neighbouring zone (Germany in 33N, as national grids do) needs no permission.
    assert plan_grid(scenes, "EPSG:32633", 10.0).crs.epsg == 32633  # type: ignore[union-attr]


def test_raster_labels_honour_nodata_and_nan(bad_input_template: Path, tmp_path: Path) -> None:
    """Values equal to the raster's nodata (300 in a uint16 raster) and NaN in a float raster
    without nodata carry no label: they become 255, every class id stays as it was."""
    from eoseg.labels import open_labels, rasterize_labels

    ws = tmp_path
    shutil.copytree(bad_input_template / "cube.zarr", ws / "cube.zarr")
    ids = np.array([[0, 300], [2, 1]], dtype="uint16")
    _label_raster("nodata.tif", ids, nodata=300)(ws)
    _label_raster("nan.tif", np.array([[0, np.nan], [2, 1]], dtype="float32"))(ws)
    grid = _cube_grid(ws)
    expected = np.ones(grid.shape.yx, dtype="uint8")
    h, w = grid.shape.y // 2, grid.shape.x // 2
    expected[:h, :w] = np.tile([[0, 255], [2, 1]], (h // 2 + 1, w // 2 + 1))[:h, :w]
    for name in ("nodata.tif", "nan.tif"):
        result = rasterize_labels(ws / name, ws / "cube.zarr", ws / f"{name}.zarr")
        np.testing.assert_array_equal(open_labels(result.path).values, expected)
        assert result.class_counts[2] == int((expected == 2).sum())


def test_same_grid_tolerates_float_noise_only() -> None:
    from affine import Affine
    from odc.geo.geobox import GeoBox

    from eoseg.errors import GeoreferenceError
    from eoseg.grid import check_same_grid

    grid = GeoBox((64, 64), Affine(10, 0, 500000, 0, -10, 5300000), "EPSG:32632")
    noisy = GeoBox((64, 64), Affine(10, 0, 500000 + 1e-6, 0, -10, 5300000), "EPSG:32632")
    check_same_grid(grid, noisy, what="labels", on="the cube", fix="rasterize them")
    others = {
        "shifted": GeoBox((64, 64), Affine(10, 0, 500010, 0, -10, 5300000), "EPSG:32632"),
        "other CRS": GeoBox((64, 64), grid.affine, "EPSG:32633"),
        "finer": GeoBox((64, 64), Affine(5, 0, 500000, 0, -5, 5300000), "EPSG:32632"),
        "cropped": GeoBox((64, 63), grid.affine, "EPSG:32632"),
    }
    for name, other in others.items():
        with pytest.raises(GeoreferenceError, match="labels lies on another grid"):
            check_same_grid(grid, other, what="labels", on="the cube", fix="rasterize them")
        assert name


def test_cluster_starts_only_when_used() -> None:
    """A command refused before its first tile never contacts the scheduler."""
    from eoseg.cli.common import dask_client

    with dask_client("tcp://127.0.0.1:9"):  # nothing listens there
        pass


def _numeric_train_fields() -> list[str]:
    from eoseg.train.config import TrainConfig

    return [
        f.name
        for f in dataclasses.fields(TrainConfig)
        if str(f.type).split(" | ")[0] in ("int", "float")
    ]


@pytest.mark.parametrize("name", _numeric_train_fields())
def test_every_numeric_train_option_is_checked_and_names_its_flag(name: str) -> None:
    """-1, NaN and infinity are refused for every numeric training option, by a message
    that starts with the option's flag (never the TrainConfig field name)."""
    from eoseg.errors import InvalidParameterError
    from eoseg.train.config import TrainConfig, flag

    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(InvalidParameterError) as info:
            TrainConfig(**{name: bad})
        assert str(info.value).startswith(f"{flag(name)} must be "), info.value
