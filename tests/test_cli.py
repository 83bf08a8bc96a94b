"""The command line: outputs, --json, and bad input (exit 2, one message, no traceback)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import pytest
from shapely.geometry import box
from typer.testing import CliRunner

from eoseg.cli import app

runner = CliRunner()


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    """The real ``eoseg`` entry point in a subprocess (what users meet)."""
    return subprocess.run(
        [sys.executable, "-m", "eoseg", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_help_teaches_every_command() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in (
        "ingest",
        "rasterize",
        "train",
        "predict",
        "export",
        "evaluate",
        "query",
        "demo",
    ):
        assert command in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ingest", "missing.tif", "--out", "c.zarr"], "does not exist"),
        (["predict", "--cube", "nope.zarr", "--model", "m", "--out", "x.zarr"], "no cube"),
        (["query", "nope.zarr", "--aoi", "1,2,3"], "no classmap"),
    ],
    ids=["missing-source", "missing-cube", "missing-map"],
)
def test_bad_input_exits_2_without_traceback(tmp_path: Path, args: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "eoseg", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_unreadable_raster_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "scene.tif"
    bad.write_bytes(b"not a tiff at all")
    result = _run("ingest", str(bad), "--out", str(tmp_path / "c.zarr"))
    assert result.returncode == 2 and "not a raster GDAL can read" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "c.zarr").exists()


def test_ingest_json_is_one_document(demo_data, client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "cube.zarr"
    result = runner.invoke(
        app,
        [
            "ingest",
            str(demo_data.catalog),
            "--out",
            str(out),
            "--tile-size",
            "128",
            "--scheduler",
            client.scheduler.address,
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["cube"] == str(out) and doc["bands"] == ["B02", "B03", "B04", "B08"]
    assert doc["grid"]["crs"] == "EPSG:32632"


def test_rasterize_outside_cube_exits_2(cube_path: Path, tmp_path: Path) -> None:
    far = tmp_path / "far.gpkg"
    gpd.GeoDataFrame({"class_id": [1]}, geometry=[box(100, 10, 101, 11)], crs=4326).to_file(far)
    result = runner.invoke(
        app, ["rasterize", str(far), "--cube", str(cube_path), "--out", str(tmp_path / "l.zarr")]
    )
    assert result.exit_code == 2
    assert "do not overlap the cube" in result.stderr


def test_predict_band_mismatch_exits_2(cube_path: Path, tmp_path: Path) -> None:
    from conftest import save_untrained_model

    save_untrained_model(tmp_path / "m", ("VV", "VH"), name="s1")
    result = runner.invoke(
        app,
        [
            "predict",
            "--cube",
            str(cube_path),
            "--model",
            str(tmp_path / "m"),
            "--out",
            str(tmp_path / "x.zarr"),
        ],
    )
    assert result.exit_code == 2
    assert "VV" in result.stderr and "B02" in result.stderr


def test_predict_scheduler_cuda_without_dask_cuda_exits_2(
    cube_path: Path, model_dir: Path, tmp_path: Path
) -> None:
    pytest.importorskip("torch")
    try:
        import dask_cuda  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("dask-cuda is installed here")
    out = tmp_path / "x.zarr"
    args = ["predict", "--cube", str(cube_path), "--model", str(model_dir), "--out", str(out)]
    result = runner.invoke(app, [*args, "--scheduler", "cuda"])
    assert result.exit_code == 2
    assert "dask-cuda" in result.stderr and "eoseg[gpu]" in result.stderr
    assert "Traceback" not in result.output
    assert not out.exists()


def test_export_evaluate_query(
    cube_path: Path,
    model_dir: Path,
    demo_data,
    client,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    cmap = tmp_path / "map.zarr"
    address = client.scheduler.address
    result = runner.invoke(
        app,
        [
            "predict",
            "--cube",
            str(cube_path),
            "--model",
            str(model_dir),
            "--out",
            str(cmap),
            "--scheduler",
            address,
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app,
        [
            "export",
            str(cmap),
            "--cog",
            str(tmp_path / "m.tif"),
            "--polygons",
            str(tmp_path / "p.gpkg"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["polygon_count"] > 0
    result = runner.invoke(
        app, ["evaluate", str(cmap), "--truth", str(demo_data.holdout_truth), "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert 0 <= report["overall_accuracy"] <= 1 and len(report["classes"]) == 6
    # The same truth in another nomenclature: codes through --code-map, and class names.
    from eoseg.classes import DEMO_CLASSES

    truth = gpd.read_file(demo_data.holdout_truth)
    truth["code"] = truth["class_id"] + 100
    truth["label"] = [DEMO_CLASSES.names[i].upper() for i in truth["class_id"]]
    truth.drop(columns="class_id").to_file(tmp_path / "codes.gpkg")
    mapping = ",".join(f"{100 + c.id}={c.name}" for c in DEMO_CLASSES)
    for extra in (
        ["--class-field", "code", "--code-map", mapping],
        ["--class-field", "code", "--class-map", mapping],  # the old name, hidden
        ["--class-field", "label"],
    ):
        args = ["evaluate", str(cmap), "--truth", str(tmp_path / "codes.gpkg"), *extra]
        result = runner.invoke(app, [*args, "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == report
    result = runner.invoke(
        app, ["query", str(cmap), "--aoi", ",".join(map(str, demo_data.holdout_bbox)), "--json"]
    )
    assert result.exit_code == 0, result.output
    areas = json.loads(result.stdout)["regions"]["aoi"]["all"]
    total = sum(c["km2"] for c in areas["classes"]) + areas["nodata_km2"]
    assert total == pytest.approx(areas["total_km2"], rel=1e-9)
    assert areas["total_km2"] == pytest.approx(areas["aoi_km2"], rel=1e-4)


def test_train_json(cube_path: Path, labels_path: Path, tmp_path: Path) -> None:
    classes = tmp_path / "classes.json"
    from eoseg.classes import DEMO_CLASSES

    classes.write_text(json.dumps(DEMO_CLASSES.to_dict()))
    out = tmp_path / "model"
    args = [
        "train",
        "--cube",
        str(cube_path),
        "--labels",
        str(labels_path),
        "--out",
        str(out),
        "--epochs",
        "1",
        "--finetune-epochs",
        "0",
        "--chip-size",
        "32",
        "--base-width",
        "8",
        "--depth",
        "2",
        "--train-chips",
        "16",
        "--noisy-loss",
        "gce",
        "--context",
        "aspp",
        "--balanced",
        "--classes",
        str(classes),
        "--json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["bands"] == ["B02", "B03", "B04", "B08"] and len(doc["version"]) == 12
    assert (out / "weights.safetensors").exists() and (out / "model.json").exists()
    card = json.loads((out / "model.json").read_text())
    assert card["architecture"]["name"] == "unet-aspp"
    bad = runner.invoke(app, [*args[:-1], "--noisy-loss", "mse"])
    assert bad.exit_code == 2 and "noisy_loss" in bad.stderr


def test_train_bad_classes_file_exits_2(cube_path: Path, labels_path: Path, tmp_path: Path) -> None:
    bad = tmp_path / "classes.json"
    bad.write_text("{not json")
    result = runner.invoke(
        app,
        [
            "train",
            "--cube",
            str(cube_path),
            "--labels",
            str(labels_path),
            "--out",
            str(tmp_path / "m"),
            "--classes",
            str(bad),
        ],
    )
    assert result.exit_code == 2 and "class schema" in result.stderr


def test_ingest_options_reach_the_cube(demo_data, client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "cube.zarr"
    result = runner.invoke(
        app,
        [
            "ingest",
            str(demo_data.catalog),
            "--out",
            str(out),
            "--tile-size",
            "128",
            "--chunk-size",
            "64",
            "--composite",
            "median",
            "--by-date",
            "--sensor",
            "generic",
            "--scheduler",
            client.scheduler.address,
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["times"] == ["2024-06-12", "2024-06-14"] and doc["skipped"] == []
    result = runner.invoke(
        app,
        [
            "ingest",
            str(demo_data.catalog),
            "--out",
            str(tmp_path / "x.zarr"),
            "--composite",
            "mean",
        ],
    )
    assert result.exit_code == 2 and "composite must be one of" in result.stderr


def test_multi_date_class_map_through_the_cli(
    demo_data,
    client,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    """A --by-date cube and a per-date model: predict maps every date; export, query and
    evaluate take --date, export every date where the path says how, and ask for --date
    where one map is needed."""
    import rasterio
    from conftest import save_untrained_model

    from eoseg.predict import open_classmap

    cube, cmap = tmp_path / "cube.zarr", tmp_path / "map.zarr"
    address = ["--scheduler", client.scheduler.address]
    args = ["ingest", str(demo_data.catalog), "--out", str(cube), "--by-date", "--tile-size", "96"]
    assert runner.invoke(app, [*args, *address]).exit_code == 0
    model = save_untrained_model(tmp_path / "m", ("B02", "B03", "B04", "B08"), time="per-date")
    args = ["predict", "--cube", str(cube), "--model", str(model), "--out", str(cmap), "--json"]
    result = runner.invoke(app, [*args, *address])
    assert result.exit_code == 0, result.output
    days = ["2024-06-12", "2024-06-14"]
    assert json.loads(result.stdout)["dates"] == days
    assert open_classmap(cmap)["class"].dims == ("time", "y", "x")

    result = runner.invoke(app, ["export", str(cmap), "--cog", str(tmp_path / "one.tif")])
    assert result.exit_code == 2 and "--date" in result.stderr and "{date}" in result.stderr
    assert not (tmp_path / "one.tif").exists()
    each = ["--cog", str(tmp_path / "m_{date}.tif"), "--polygons", str(tmp_path / "p.parquet")]
    each += ["--quicklook", str(tmp_path / "q_{date}.png")]
    result = runner.invoke(app, ["export", str(cmap), *each, "--json"])
    assert result.exit_code == 0, result.output
    for i, day in enumerate(days):
        with rasterio.open(tmp_path / f"m_{day}.tif") as src:
            assert src.tags()["date"] == day
            assert (src.read(1) == open_classmap(cmap)["class"][i].values).all()
        assert (tmp_path / f"q_{day}.png").stat().st_size > 0
    polygons = gpd.read_parquet(tmp_path / "p.parquet")
    assert sorted(set(polygons["date"])) == days
    result = runner.invoke(
        app, ["export", str(cmap), "--date", "-1", "--cog", str(tmp_path / "one.tif")]
    )
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "one.tif") as src:
        assert src.tags()["date"] == days[1]

    aoi = ["--aoi", ",".join(map(str, demo_data.holdout_bbox))]
    result = runner.invoke(app, ["query", str(cmap), *aoi, "--json"])
    assert result.exit_code == 0, result.output
    series = json.loads(result.stdout)["regions"]["aoi"]
    assert sorted(series) == days
    result = runner.invoke(app, ["query", str(cmap), *aoi, "--date", "2024-06-14", "--json"])
    one = json.loads(result.stdout)["regions"]["aoi"]["all"]
    assert one == series[days[1]]
    result = runner.invoke(app, ["query", str(cmap), *aoi, "--date", "2024-07"])
    assert result.exit_code == 2 and "2024-06-12, 2024-06-14" in result.stderr

    truth = ["--truth", str(demo_data.holdout_truth)]
    result = runner.invoke(app, ["evaluate", str(cmap), *truth])
    assert result.exit_code == 2 and "--date" in result.stderr
    result = runner.invoke(app, ["evaluate", str(cmap), *truth, "--date", "0", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["n_pixels"] > 0
    args = ["train", "--cube", str(cube), "--labels", str(tmp_path / "l.zarr"), "--out", "m2"]
    result = runner.invoke(app, [*args, "--time", "mean"])
    assert result.exit_code == 2 and "'per-date'" in result.stderr


def test_error_messages_keep_long_paths_whole(tmp_path: Path) -> None:
    """A path longer than the terminal is printed whole (copyable), not broken mid-word."""
    deep = tmp_path / ("a-rather-long-folder-name-" * 4) / "missing-scene-file.tif"
    result = runner.invoke(app, ["ingest", str(deep), "--out", str(tmp_path / "c.zarr")])
    assert result.exit_code == 2
    assert str(deep) in result.stderr
