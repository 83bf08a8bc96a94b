"""Tests of eoseg.cog: class and confidence COGs, valid per GDAL's COG layout, with
categorical overviews, colours, class names and a QGIS style beside them."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import rasterio
from odc.geo.geobox import GeoBox
from rio_cogeo.cogeo import cog_validate

from eoseg.classes import DEMO_CLASSES, IGNORE_ID
from eoseg.classmap import open_classmap
from eoseg.cog import write_cog
from eoseg.errors import InvalidParameterError, OutputExistsError
from eoseg.predict import predict
from eoseg.publish import export_classmap
from eoseg.synthetic_maps import write_synthetic_classmap

# 1300 x 1100 px: two overview levels (650 x 550, 325 x 275) above 512 px blocks; tiles of
# 256 px do not match the COG's blocks, so the writer must stitch them.
GRID = GeoBox.from_bbox(
    (500_000, 5_300_000, 500_000 + 1300 * 10, 5_300_000 + 1100 * 10), "EPSG:32632", resolution=10
)


@pytest.fixture(scope="module")
def classmap(cube_path: Path, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cog") / "map.zarr"
    predict(cube_path, model_dir, out)
    return out


@pytest.fixture(scope="module")
def large_map(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cog-large") / "map.zarr"
    return write_synthetic_classmap(out, GRID, tile_size=256, seed=3)


def _levels(path: Path) -> list[np.ndarray]:
    with rasterio.open(path) as src:
        n = len(src.overviews(1))
    levels = []
    for i in range(n):
        with rasterio.open(path, OVERVIEW_LEVEL=i) as ov:
            levels.append(ov.read(1))
    return levels


def test_cog_is_the_class_map(classmap: Path, tmp_path: Path) -> None:
    out = write_cog(classmap, tmp_path / "map.tif")
    ds = open_classmap(classmap)
    with rasterio.open(out) as src:
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert src.crs.to_epsg() == 32632 and src.nodata == 255
        assert tuple(src.transform)[:6] == tuple(ds.odc.geobox.affine)[:6]
        np.testing.assert_array_equal(src.read(1), ds["class"].values)
        assert src.colormap(1)[0][:3] == (0x1F, 0x78, 0xB4)
        assert src.tags(1)["class_5"] == "road"


def test_cog_is_not_overwritten(classmap: Path, tmp_path: Path) -> None:
    target = tmp_path / "map.tif"
    target.write_bytes(b"good product")
    with pytest.raises(OutputExistsError):
        write_cog(classmap, target)
    assert target.read_bytes() == b"good product"


@pytest.mark.parametrize("layer", ["class", "confidence"])
def test_layout_is_a_valid_cog(large_map: Path, tmp_path: Path, layer: str) -> None:
    out = write_cog(large_map, tmp_path / f"{layer}.tif", layer=layer)  # type: ignore[arg-type]
    valid, errors, warnings = cog_validate(out, strict=True)
    assert valid and errors == [] and warnings == []
    with rasterio.open(out) as src:
        assert src.block_shapes == [(512, 512)]
        assert src.overviews(1) == [2, 4]
        assert src.compression.name == "zstd"
        assert src.tags()["layer"] == layer
        expected = open_classmap(large_map)[layer].values
        np.testing.assert_array_equal(src.read(1), expected)


def test_class_overviews_are_categorical(large_map: Path, tmp_path: Path) -> None:
    out = write_cog(large_map, tmp_path / "class.tif")
    full = open_classmap(large_map)["class"].values
    present = set(np.unique(full).tolist())
    levels = _levels(out)
    assert [a.shape for a in levels] == [(550, 650), (275, 325)]
    for level in levels:
        assert set(np.unique(level).tolist()) <= present
    # Patches are >= 8 px and start on multiples of 8: each 2 x 2 block inside one is of
    # one class, which the mode keeps (an average of ids would not).
    blocks = full.reshape(550, 2, 650, 2)
    whole = (blocks == blocks[:, :1, :, :1]).all(axis=(1, 3)) & (full[::2, ::2] != IGNORE_ID)
    assert whole.mean() > 0.5
    np.testing.assert_array_equal(levels[0][whole], full[::2, ::2][whole])


def test_confidence_cog_averages_valid_pixels(large_map: Path, tmp_path: Path) -> None:
    out = write_cog(large_map, tmp_path / "confidence.tif", layer="confidence")
    ds = open_classmap(large_map)
    full = ds["confidence"].values.astype(float)
    with rasterio.open(out) as src:
        assert src.nodata == 0
        assert src.descriptions == ("confidence (top-class probability x 255)",)
    level = _levels(out)[0]
    blocks = full.reshape(550, 2, 650, 2)
    valid = (blocks > 0).all(axis=(1, 3))
    mean = blocks.mean(axis=(1, 3))
    assert np.abs(level[valid] - mean[valid]).max() <= 1  # rounding of the average
    assert (level[~(blocks > 0).any(axis=(1, 3))] == 0).all()  # all nodata stays nodata


def test_colour_table_names_and_style(large_map: Path, tmp_path: Path) -> None:
    out = write_cog(large_map, tmp_path / "class.tif")
    with rasterio.open(out) as src:
        colours = src.colormap(1)
        assert src.descriptions == ("class",)
        tags = src.tags(1)
    for c in DEMO_CLASSES:
        assert colours[c.id] == (*c.rgb(), 255)
        assert tags[f"class_{c.id}"] == c.name
    assert colours[IGNORE_ID][3] == 0  # nodata is transparent
    style = ET.parse(tmp_path / "class.qml").getroot()
    entries = style.findall(".//rasterrenderer[@type='paletted']/colorPalette/paletteEntry")
    assert [(int(e.get("value", -1)), e.get("color"), e.get("label")) for e in entries] == [
        (c.id, c.color, c.name) for c in DEMO_CLASSES
    ]
    write_cog(large_map, tmp_path / "confidence.tif", layer="confidence")
    gray = ET.parse(tmp_path / "confidence.qml").getroot().find(".//rasterrenderer")
    assert gray is not None and gray.get("type") == "singlebandgray"


def test_export_styles_polygons_and_refuses_shared_styles(large_map: Path, tmp_path: Path) -> None:
    small = write_synthetic_classmap(
        tmp_path / "small.zarr",
        GeoBox.from_bbox((500_000, 5_300_000, 500_640, 5_300_640), "EPSG:32632", resolution=10),
        tile_size=32,
    )
    polygons = tmp_path / "polygons.parquet"
    doc = export_classmap(small, polygons=polygons, confidence_cog=tmp_path / "conf.tif")
    assert doc["polygons"] == polygons and doc["confidence_cog"] == tmp_path / "conf.tif"
    root = ET.parse(tmp_path / "polygons.qml").getroot().find("renderer-v2")
    assert root is not None and root.get("attr") == "class_id"
    labels = [(c.get("value"), c.get("label")) for c in root.iter("category")]
    assert labels == [(str(c.id), c.name) for c in DEMO_CLASSES]
    with pytest.raises(InvalidParameterError, match="both keep their QGIS style in"):
        export_classmap(small, cog=tmp_path / "x.tif", polygons=tmp_path / "x.gpkg")
    (tmp_path / "mine.qml").write_text("<qgis>my own style</qgis>")
    with pytest.raises(OutputExistsError, match="is not a style eoseg wrote"):
        export_classmap(small, cog=tmp_path / "mine.tif")
    assert (tmp_path / "mine.qml").read_text() == "<qgis>my own style</qgis>"
    assert not (tmp_path / "mine.tif").exists() and not (tmp_path / "x.tif").exists()
