from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from eoseg.classmap import open_classmap
from eoseg.cog import write_cog
from eoseg.errors import OutputExistsError
from eoseg.predict import predict


@pytest.fixture(scope="module")
def classmap(cube_path: Path, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cog") / "map.zarr"
    predict(cube_path, model_dir, out)
    return out


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
