"""Tests of ``eoseg evaluate --regions/--report`` (eoseg.evaluation, eoseg.report)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from typer.testing import CliRunner

from eoseg.cli import app
from eoseg.errors import UnreadableVectorError
from eoseg.evaluation import evaluate_paths
from eoseg.metrics import evaluate
from tests.classmaps import UTM, schema_of, utm_grid, write_classmap
from tests.conftest import write_geotiff

NAMES = ("forest", "water", "crop")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 64x64 class map store (model named), its truth GeoTIFF and a regions layer.

    Regions (edges on pixel edges): 'west' = columns 0-19 plus rows 50-63 of columns
    20-29 (two features, one name), 'east' = columns 40-63; the rest is outside.
    """
    root = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(5)
    truth = rng.choice(3, size=(64, 64), p=[0.5, 0.2, 0.3]).astype(np.uint8)
    pred = np.where(rng.random(truth.shape) < 0.8, truth, rng.integers(0, 3, truth.shape))
    pred = pred.astype(np.uint8)
    pred[:2] = 255
    truth[-2:] = 255
    grid = utm_grid(64, 64)
    attrs = {"model": "unet-demo", "model_version": "3", "run_id": "r1"}
    write_classmap(root / "map.zarr", pred, grid, schema_of(NAMES), attrs=attrs)
    write_geotiff(root / "truth.tif", truth, crs=UTM, origin=(500_000, 5_300_000), nodata=255)
    x0, top = 500_000, 5_300_000
    regions = gpd.GeoDataFrame(
        {"state": ["west", "east", "west"]},
        geometry=[
            shapely.box(x0, top - 640, x0 + 200, top),
            shapely.box(x0 + 400, top - 640, x0 + 640, top),
            shapely.box(x0 + 200, top - 640, x0 + 300, top - 500),
        ],
        crs=UTM,
    )
    regions.to_file(root / "regions.gpkg")
    masks = {"west": np.zeros((64, 64), bool), "east": np.zeros((64, 64), bool)}
    masks["west"][:, :20] = True
    masks["west"][50:, 20:30] = True
    masks["east"][:, 40:] = True
    np.save(root / "pred.npy", pred)
    np.save(root / "truth.npy", truth)
    np.savez(root / "masks.npz", **masks)
    return {"root": root, "map": root / "map.zarr", "truth": root / "truth.tif"}


def test_evaluate_per_region(workspace: dict[str, Path], tmp_path: Path) -> None:
    root = workspace["root"]
    pred, truth = np.load(root / "pred.npy"), np.load(root / "truth.npy")
    masks = np.load(root / "masks.npz")
    result = evaluate_paths(
        workspace["map"],
        workspace["truth"],
        workdir=tmp_path,
        regions=root / "regions.gpkg",
        region_field="state",
    )
    schema = schema_of(NAMES)
    assert result.accuracy == evaluate(pred, truth, schema)  # the whole map, not the regions
    assert list(result.regions) == ["east", "west"]
    for name in ("east", "west"):
        m = masks[name]
        assert result.regions[name] == evaluate(pred[m], truth[m], schema)
    assert result.regions["west"].n_pixels == int(  # type: ignore[union-attr]
        ((pred != 255) & (truth != 255) & masks["west"]).sum()
    )
    doc = result.to_dict()
    assert doc["region_field"] == "state"
    assert doc["regions"]["east"]["confusion_matrix"] == [
        list(r)
        for r in result.regions["east"].confusion  # type: ignore[union-attr]
    ]


def test_regions_without_the_field_are_refused(workspace: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(
        UnreadableVectorError, match=r"no field 'name' .*\['state'\].*--region-field"
    ):
        evaluate_paths(
            workspace["map"],
            workspace["truth"],
            workdir=tmp_path,
            regions=workspace["root"] / "regions.gpkg",
        )


def _markdown_table(text: str, heading: str) -> dict[str, list[str]]:
    """The first table after ``heading``: first cell -> the other cells."""
    lines = text.split(heading + "\n", 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table: dict[str, list[str]] = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        table[cells[0]] = cells[1:]
    return table


def test_report_holds_the_json_figures(workspace: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "report"
    args = ["evaluate", str(workspace["map"]), "--truth", str(workspace["truth"])]
    regions = ["--regions", str(workspace["root"] / "regions.gpkg"), "--region-field", "state"]
    result = CliRunner().invoke(app, [*args, *regions, "--report", str(out), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)  # progress goes to stderr
    assert doc["report"]["html"] == str(out / "report.html")
    md = (out / "report.md").read_text()
    summary = _markdown_table(md, "## Summary")
    assert float(summary["overall accuracy"][0]) == pytest.approx(doc["overall_accuracy"], abs=5e-5)
    assert float(summary["mIoU (classes in the reference)"][0]) == pytest.approx(
        doc["miou_reference_classes"], abs=5e-5
    )
    assert float(summary["mIoU (all classes)"][0]) == pytest.approx(
        doc["miou_all_classes"], abs=5e-5
    )
    assert float(summary["quantity disagreement"][0]) == pytest.approx(
        doc["quantity_disagreement"], abs=5e-5
    )
    assert int(summary["pixels"][0]) == doc["n_pixels"]
    per_class = _markdown_table(md, "## Per class")
    for c in doc["classes"]:
        ua, pa, f1, iou, support = per_class[c["name"]]
        assert [float(ua), float(pa), float(f1), float(iou)] == pytest.approx(
            [c["precision"], c["recall"], c["f1"], c["iou"]], abs=5e-5
        )
        assert int(support) == c["support"]
    cm = _markdown_table(md, "## Confusion matrix")
    assert [[int(v) for v in cm[n]] for n in NAMES] == doc["confusion_matrix"]
    west = _markdown_table(md, "### west")
    assert float(west["overall accuracy"][0]) == pytest.approx(
        doc["regions"]["west"]["overall_accuracy"], abs=5e-5
    )
    areas = _markdown_table(md, "## Mapped areas")
    report_json = json.loads((out / "report.json").read_text())
    for c in report_json["mapped_areas"]["classes"]:
        assert float(areas[c["name"]][0]) == pytest.approx(c["km2"], abs=1e-6)
    assert report_json["overall_accuracy"] == doc["overall_accuracy"]
    model = _markdown_table(md, "## Model")
    assert model["model"] == ["unet-demo"] and model["model_version"] == ["3"]
    for name in ("confusion.png", "class_scores.png", "quicklook.png"):
        assert (out / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"](figures/{name})" in md


def test_html_report_is_self_contained(workspace: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "report"
    args = ["evaluate", str(workspace["map"]), "--truth", str(workspace["truth"])]
    result = CliRunner().invoke(app, [*args, "--report", str(out)])
    assert result.exit_code == 0, result.output
    page = (out / "report.html").read_text()
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert len(sources) == 3 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r"https?://|<link|<script|@import|url\(", page)
    assert page.count("<table>") >= 4
    doc = json.loads((out / "report.json").read_text())
    assert f"<td>{doc['overall_accuracy']:.4f}</td>" in page


def test_report_into_a_file_is_refused(workspace: dict[str, Path], tmp_path: Path) -> None:
    target = tmp_path / "report.txt"
    target.write_text("keep me")
    args = ["evaluate", str(workspace["map"]), "--truth", str(workspace["truth"])]
    result = CliRunner().invoke(app, [*args, "--report", str(target)])
    assert result.exit_code == 2
    assert "--report" in result.output and "is a file" in result.output
    assert target.read_text() == "keep me"
