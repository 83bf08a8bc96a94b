"""Every store eoseg writes opens with plain xarray + rioxarray, on any grid CRS.

A user who never heard of eoseg opens a cube, labels or class map with
``xr.open_zarr(path, decode_coords="all")`` and must get the grid's CRS, transform and
coordinates, on projected and geographic grids alike; the metadata is consolidated, so
opening a store on object storage reads one key instead of listing them all.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
import zarr
from odc.geo.geobox import GeoBox

from eoseg.cube import ingest, open_cube
from eoseg.grid import grid_coords
from eoseg.labels import rasterize_labels
from eoseg.predict import predict
from tests.conftest import save_untrained_model

GRIDS = [("EPSG:32632", 10.0), ("EPSG:4326", 0.0001), ("EPSG:3035", 10.0)]


@pytest.fixture(scope="module", params=GRIDS, ids=["utm", "lonlat", "laea"])
def products(request, demo_data, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    """A cube, labels and class map written on one grid CRS (a small box of the demo)."""
    crs, resolution = request.param
    work = tmp_path_factory.mktemp("stores")
    cube = ingest(
        [demo_data.catalog],
        work / "cube.zarr",
        crs=crs,
        resolution=resolution,
        bbox=demo_data.holdout_bbox,  # about 1 km, across the zone boundary
        tile_size=64,
    ).path
    labels = work / "labels.zarr"
    rasterize_labels(demo_data.noisy_labels, cube, labels)
    bands = tuple(str(b) for b in open_cube(cube)["band"].values)
    model = save_untrained_model(work / "model", bands)
    classmap = work / "classmap.zarr"
    predict(cube, model, classmap)
    return {"cube": cube, "labels": labels, "classmap": classmap}


@pytest.mark.parametrize("product", ["cube", "labels", "classmap"])
def test_store_opens_georeferenced_with_plain_xarray(
    products: dict[str, Path], product: str
) -> None:
    path = products[product]
    grid: GeoBox = open_cube(products["cube"]).odc.geobox
    ds = xr.open_zarr(path, decode_coords="all")
    for name, var in ds.data_vars.items():
        assert var.dims[-2:] == ("y", "x"), name
    assert set(ds.dims) <= {"time", "band", "y", "x"}
    assert ds.rio.crs == grid.crs.to_wkt() or ds.rio.crs.to_epsg() == grid.crs.epsg
    assert ds.rio.transform().almost_equals(grid.affine, precision=1e-9)
    assert (ds.rio.height, ds.rio.width) == grid.shape.yx
    np.testing.assert_allclose(ds["x"].values, grid_coords(grid)["x"].values)
    np.testing.assert_allclose(ds["y"].values, grid_coords(grid)["y"].values)


@pytest.mark.parametrize("product", ["cube", "labels", "classmap"])
def test_store_metadata_is_consolidated(products: dict[str, Path], product: str) -> None:
    path = products[product]
    meta = json.loads((path / "zarr.json").read_text())["consolidated_metadata"]["metadata"]
    names = set(xr.open_zarr(path, decode_coords="all").variables)
    assert names <= set(meta)  # every array is described in the one root document
    group = zarr.open_consolidated(str(path), zarr_format=3)
    assert group.attrs["eoseg_complete"] is True


def test_geographic_coordinates_are_named_for_their_axis() -> None:
    grid = GeoBox.from_bbox((-56.4, -1.5, -56.3, -1.4), "EPSG:4326", resolution=0.01)
    coords = grid_coords(grid)
    assert set(coords) == {"y", "x", "spatial_ref"}
    assert coords["x"].attrs["standard_name"] == "longitude"
    assert coords["y"].attrs["units"] == "degrees_north"
    np.testing.assert_allclose(coords["x"].values[[0, -1]], [-56.395, -56.305])
