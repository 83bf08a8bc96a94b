"""Real Prefect flow runs (a temporary local server), marked ``flow``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.flow, pytest.mark.slow]


def posted_artifacts() -> dict[str, list[object]]:
    """The data of every artifact on the test server, by key."""
    import asyncio

    from prefect.client.orchestration import get_client

    async def read() -> list[object]:
        async with get_client() as prefect:
            return list(await prefect.read_artifacts())

    posted: dict[str, list[object]] = {}
    for artifact in asyncio.run(read()):
        if key := getattr(artifact, "key", None):
            posted.setdefault(key, []).append(artifact.data)  # type: ignore[attr-defined]
    return posted


def test_mapping_flow_run(
    prefect_server,
    cube_path: Path,
    model_dir: Path,
    demo_data,  # type: ignore[no-untyped-def]
    client,
    tmp_path: Path,
) -> None:
    from eoseg.cube import open_cube
    from eoseg.inference import PredictOptions, resolve_settings
    from eoseg.models import load_model
    from eoseg.predict import open_classmap
    from eoseg.registry import register, set_production
    from flows.mapping import mapping_flow, run_summary

    # The scheduled-run way: the production version of a model name in a registry.
    registry = tmp_path / "registry"
    card = register(model_dir, registry)
    set_production(registry, card.name, card.version)
    out = tmp_path / "classmap.zarr"
    result = mapping_flow(
        str(cube_path),
        card.name,
        str(out),
        truth=str(demo_data.holdout_truth),
        scheduler=client.scheduler.address,
        registry=str(registry),
        chip_size=64,
        probabilities=True,
    )
    # The options given reach the class map; those left out are the library's defaults.
    classmap = open_classmap(out)
    asked = PredictOptions(chip_size=64, probabilities=True)
    grid = open_cube(cube_path).odc.geobox.shape.yx
    expected = resolve_settings(load_model(model_dir)[1], grid, asked).to_dict()
    assert classmap.attrs["predict_settings"] == expected
    assert expected["chip_size"] == 64 and "probabilities" in classmap
    assert result["model"] == str(registry / card.name / card.version)
    assert result["predict"]["model"] == f"{card.name}@{card.version}"
    assert Path(result["export"]["cog"]).exists()
    assert Path(result["export"]["polygons"]).exists()
    assert 0 <= result["evaluate"]["overall_accuracy"] <= 1
    areas = result["areas"]
    assert sum(c["km2"] for c in areas["classes"]) == pytest.approx(areas["valid_km2"])
    # The report beside the products, holding the run's figures, and the run's summary.
    report = result["evaluate"]["report"]
    assert Path(report["html"]).parent == tmp_path / "report"
    oa = f"{result['evaluate']['overall_accuracy']:.3f}"
    table = f"| overall accuracy | {result['evaluate']['overall_accuracy']:.4f} |"
    assert table in Path(report["markdown"]).read_text()
    summary = run_summary(result)
    assert f"OA {oa}" in summary and "## Class areas (km²)" in summary
    assert all(c["name"] in summary for c in areas["classes"])
    # The run's artifacts on the server: the summary and the quicklook image.
    posted = posted_artifacts()
    assert summary in map(str, posted["mapping-run"])
    assert Path(result["export"]["quicklook"]).resolve().as_uri() in posted["mapping-quicklook"]
    assert Path(result["export"]["quicklook"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_predict_options_from_flow_parameters() -> None:
    """Flow parameters left None take PredictOptions' defaults; contexts become a tuple."""
    from eoseg.inference import PredictOptions
    from flows.mapping import predict_options

    assert predict_options() == PredictOptions()
    assert predict_options(overlap=8, precision="fp32", contexts=[1, 2]) == PredictOptions(
        overlap=8, precision="fp32", contexts=(1, 2)
    )


def test_demo_quick_writes_only_inside_workdir(tmp_path: Path) -> None:
    """`eoseg demo --quick` end to end in a subprocess with an empty HOME and cwd: every
    product is there, and nothing was written outside --workdir (Prefect's home included)."""
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MPLCONFIG"))}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"))
    work = tmp_path / "work"
    result = subprocess.run(
        [sys.executable, "-m", "eoseg", "demo", "--quick", "--workdir", str(work), "--json"],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    for key in ("cube", "labels", "model", "classmap", "cog", "polygons", "quicklook"):
        assert Path(summary["paths"][key]).exists(), key
    import geopandas as gpd
    import rasterio

    with rasterio.open(summary["paths"]["cog"]) as src:
        assert src.crs.to_epsg() == 32632
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
    polygons = gpd.read_parquet(summary["paths"]["polygons"])
    assert len(polygons) > 0 and polygons.crs.to_epsg() == 32632
    assert polygons.geometry.is_valid.all()
    areas = summary["areas"]
    assert areas["relative_difference"] < 0.005
    assert areas["grid_km2"] == pytest.approx(areas["grid_geodesic_km2"], rel=1e-3)
    assert list(home.iterdir()) == [] and list(cwd.iterdir()) == []
    assert (work / "prefect").is_dir()


def test_train_flow_run_registers_and_promotes(
    prefect_server,
    cube_path: Path,
    demo_data,  # type: ignore[no-untyped-def]
    client,
    tmp_path: Path,
) -> None:
    """The training flow takes TrainConfig options (a TOML file and a mapping over it),
    writes the model and registers it as the production version."""
    from eoseg.classes import DEMO_CLASSES
    from eoseg.models import load_model
    from eoseg.registry import fetch_model, list_models
    from flows.train import train_flow

    classes = tmp_path / "classes.toml"
    classes.write_text(DEMO_CLASSES.to_toml())
    options = tmp_path / "train.toml"
    options.write_text("[train]\nepochs = 3\nchip_size = 32\nbase_width = 8\ndepth = 2\n")
    registry = tmp_path / "registry"
    result = train_flow(
        str(cube_path),
        str(demo_data.noisy_labels),
        str(tmp_path / "model"),
        finetune_vector=str(demo_data.clean_labels),
        scheduler=client.scheduler.address,
        classes=str(classes),
        config_file=str(options),
        options={"epochs": 1, "finetune_epochs": 1, "train_chips": 16, "val_chips": 4},
        registry=str(registry),
        promote=True,
    )
    card = result["model"]
    assert card["chip_size"] == 32 and card["architecture"]["base_width"] == 8
    assert len(card["metrics"]["pretrain"]["train_loss"]) == 1  # the mapping overrides the file
    assert len(card["metrics"]["finetune"]["train_loss"]) == 1
    assert [c["name"] for c in card["classes"]] == list(DEMO_CLASSES.names)
    assert result["labels"]["clean"]["labelled_fraction"] > 0
    assert [(m.name, m.version) for m in list_models(registry)] == [(card["name"], card["version"])]
    _, loaded = load_model(fetch_model(registry, card["name"]))
    assert loaded.version == card["version"] and result["registered"]["production"]


def test_area_query_flow_reads_a_product_version(prefect_server, tmp_path: Path) -> None:
    """The ad-hoc query as a flow run: one version of a product repository, a stored
    table, the same figures as the library's query, and a Markdown artifact."""
    import numpy as np
    import pandas as pd

    from eoseg.errors import InvalidParameterError
    from eoseg.publish import query_table
    from eoseg.version_publish import publish_classmap
    from flows.query import area_query
    from tests.classmaps import schema_of, utm_grid, write_classmap

    grid = utm_grid(64, 64)
    schema = schema_of(("water", "forest", "crops"))
    rng = np.random.default_rng(5)
    first = rng.integers(0, 3, size=(64, 64), dtype=np.uint8)
    second = np.where(first == 0, 1, first).astype(np.uint8)  # water became forest
    repo = tmp_path / "product"
    for tag, classes in (("v1", first), ("v2", second)):
        path = write_classmap(tmp_path / f"{tag}.zarr", classes, grid, schema)
        publish_classmap(path, repo, tag=tag, compare="pixels")  # same records: pixels decide
    aoi = "9.0,47.8,9.1,47.9"  # a lon/lat box over part of the map
    out = tmp_path / "areas.csv"
    doc = area_query(str(repo), aoi=aoi, map_version="v1", out=str(out))
    expected = query_table(repo, aoi=aoi, version="v1").to_dict()
    assert doc == expected
    areas = doc["regions"]["aoi"]["all"]
    assert areas["classes"][0]["km2"] > 0  # v1 still has its water
    latest = area_query(str(repo), aoi=aoi)["regions"]["aoi"]["all"]
    assert latest["classes"][0]["km2"] == 0.0
    assert latest["total_km2"] == pytest.approx(areas["total_km2"], rel=1e-12)
    assert pd.read_csv(out)["km2"].sum() == pytest.approx(areas["total_km2"], rel=1e-6)
    with pytest.raises(InvalidParameterError, match=r"--version v1: .* is a class map store"):
        query_table(tmp_path / "v1.zarr", aoi=aoi, version="v1")

    found = posted_artifacts().get("area-query", [])
    assert found and any("water" in str(data) for data in found)


def test_mapping_run_ingests_only_a_missing_cube_or_when_asked(tmp_path: Path) -> None:
    """The mapping run's ingest stage: scenes named and the cube absent (or ``reingest``);
    nothing to ingest otherwise."""
    from flows.mapping import _scenes

    cube = tmp_path / "cube.zarr"
    catalog = str(tmp_path / "catalog.json")
    args = (None, None, None, None, None)  # stac_api, collections, area, period, max_cloud
    assert _scenes(str(cube), [catalog], *args, reingest=False) == [catalog]
    assert _scenes(str(cube), None, *args, reingest=True) == []  # nothing named
    cube.mkdir()
    assert _scenes(str(cube), [catalog], *args, reingest=False) == []
    assert _scenes(str(cube), [catalog], *args, reingest=True) == [catalog]


def test_run_summary_names_the_published_version() -> None:
    from flows.mapping import run_summary

    result = {
        "run_id": "r-1",
        "model": "m",
        "predict": {"classmap": "map.zarr", "tiles": 4, "tiles_written": 1, "seconds": 2.0},
        "export": {"cog": "map.tif"},
        "areas": {"classes": [], "nodata_km2": 0.0},
        "ingest": {
            "cube": "c.zarr",
            "scenes": ["a", "b"],
            "skipped": [],
            "tiles": 4,
            "tiles_written": 4,
            "seconds": 1.0,
        },
        "publish": {
            "repository": "prod",
            "version": "V2",
            "parent": "V1",
            "committed": True,
            "tag": "2026-06",
            "tiles_written": 1,
            "tiles_unchanged": 3,
            "tiles_recorded": 0,
        },
    }
    text = run_summary(result)
    assert text.startswith("# Mapping run r-1\n")
    assert "- ingested `c.zarr`: 2 scenes used, 0 skipped; tiles 4 written of 4" in text
    assert (
        "- product `prod`: published as version `V2` (tag `2026-06`), after `V1`; "
        "tiles 1 written, 3 unchanged, 0 re-recorded"
    ) in text
    result["publish"] = {**result["publish"], "committed": False, "version": "V1"}
    assert "unchanged: still version `V1`" in run_summary(result)
