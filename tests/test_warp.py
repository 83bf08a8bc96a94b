from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
from odc.geo.geobox import GeoBox
from rasterio.enums import Resampling
from rasterio.transform import from_origin

from eoseg.catalog import discover_scenes
from eoseg.warp import choose_resampling, read_scene


@pytest.mark.parametrize(
    ("source", "target", "expected"),
    [(10, 10, Resampling.bilinear), (10, 14, Resampling.bilinear), (10, 60, Resampling.average)],
    ids=["same", "similar", "much-finer"],
)
def test_choose_resampling(source: float, target: float, expected: Resampling) -> None:
    assert choose_resampling(source, target) is expected


def test_categorical_band_keeps_its_classes(tmp_path: Path) -> None:
    classes = np.tile(np.array([[1, 7], [7, 1]], dtype="uint8").repeat(4, 0).repeat(4, 1), (2, 2))
    path = tmp_path / "classes.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=16,
        height=16,
        count=1,
        dtype="uint8",
        crs="EPSG:32632",
        transform=from_origin(500000, 5300000, 10, 10),
    ) as dst:
        dst.write(classes[None])
    (scene,) = discover_scenes([path])
    box = GeoBox.from_bbox(scene.bounds, scene.crs, resolution=7.0)  # off-grid, finer
    blended, _ = read_scene(scene, box)
    assert not np.isin(blended, (1, 7)).all()  # bilinear mixes classes at the edges
    categorical = replace(scene, bands=(replace(scene.bands[0], kind="categorical"),))
    values, ok = read_scene(categorical, box)
    assert ok.sum() > 100 and np.isin(values[0][ok], (1, 7)).all()
