"""Every product of each real land-cover sample opens with plain xarray + rioxarray
(marked ``realdata``, ``slow``).

Issue 9, defect 1: a cube, labels store or class map must give the grid's CRS, transform
and coordinates to any xarray user — ``xr.open_zarr(path, decode_coords="all")`` and
rioxarray, nothing from eoseg — on projected and geographic grids alike. The grid is
derived from the first source file (its CRS, top-left corner and x pixel size: ingest's
defaults). The class map comes from an untrained model: georeferencing does not depend on
what the model learnt.

On the EPSG:4326 sample (``amazon_s2_l2a``) the coordinate assertions FAIL today: the
data variables have dims ``(y, x)`` without coordinates, while ``longitude``/``latitude``
are dimensions of their own (defect 1, fixed by the lead). They are not marked xfail.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from affine import Affine

from eoseg.cube import ingest, open_cube
from eoseg.labels import rasterize_labels
from eoseg.predict import predict

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

# sample: (sources relative to the sample folder, training labels, label variable's field)
SAMPLES = {
    "eolearn_slovenia": (
        ("s2_l1c_20150711.tif", "s2_l1c_20150830.tif", "s2_l1c_20150909.tif"),
        "training_polygons.gpkg",
    ),
    "amazon_s2_l2a": (("s2_l2a.tif",), "training_polygons.gpkg"),
    "spacenet_atlanta": (("sample_geotiff.tif",), "geotiff_labels.geojson"),
}
VARIABLES = {"cube": "data", "labels": "labels", "classmap": "class"}


@dataclass(frozen=True)
class Products:
    sample: str
    stores: dict[str, Path]
    crs: rasterio.crs.CRS
    transform: Affine  # the grid's: the first source's own (non-square on eolearn_slovenia)


@pytest.fixture(scope="module", params=sorted(SAMPLES))
def products(
    request: pytest.FixtureRequest, real_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Products:
    from conftest import save_untrained_model

    name = request.param
    sources, polygons = SAMPLES[name]
    folder = real_data / name
    work = tmp_path_factory.mktemp(name)
    stores = {p: work / f"{p}.zarr" for p in VARIABLES}
    ingest([folder / s for s in sources], stores["cube"], tile_size=64)
    if name == "spacenet_atlanta":
        # Footprints carry no class field: burn them as class 1 from a field we add.
        import geopandas as gpd

        footprints = gpd.read_file(folder / polygons)[["geometry"]].assign(class_id=1)
        footprints.to_file(work / "buildings.gpkg")
        rasterize_labels(work / "buildings.gpkg", stores["cube"], stores["labels"])
    else:
        rasterize_labels(folder / polygons, stores["cube"], stores["labels"])
    bands = tuple(str(b) for b in open_cube(stores["cube"])["band"].values)
    model = save_untrained_model(work / "model", bands)
    predict(stores["cube"], model, stores["classmap"])
    with rasterio.open(folder / sources[0]) as src:  # the default grid is its pixel grid
        return Products(name, stores, src.crs, src.transform)


@pytest.mark.parametrize("product", list(VARIABLES))
def test_product_opens_georeferenced_with_plain_xarray(products: Products, product: str) -> None:
    ds = xr.open_zarr(products.stores[product], decode_coords="all")
    var = ds[VARIABLES[product]]
    height, width = var.sizes[var.rio.y_dim], var.sizes[var.rio.x_dim]
    assert ds.rio.crs == products.crs
    assert var.rio.crs == products.crs
    np.testing.assert_allclose(tuple(var.rio.transform())[:6], tuple(products.transform)[:6])
    # Defect 1 (issue 9): every xarray user must see the grid's coordinates on the data
    # variable itself, not pixel indices. FAILS today on the EPSG:4326 sample.
    for dim in (var.rio.x_dim, var.rio.y_dim):
        assert dim in var.coords, (
            f"{products.sample} {product}: {VARIABLES[product]!r} has no {dim!r} coordinate "
            f"(dims {var.dims}, dataset dims {dict(ds.sizes)}): defect 1, geographic grids "
            "lose their coordinates"
        )
    t = products.transform  # north-up: pixel centres are c + (i + 0.5) * a, f + (j + 0.5) * e
    np.testing.assert_allclose(var[var.rio.x_dim].values, t.c + (np.arange(width) + 0.5) * t.a)
    np.testing.assert_allclose(var[var.rio.y_dim].values, t.f + (np.arange(height) + 0.5) * t.e)
    # rioxarray recomputes the same transform from those coordinates.
    np.testing.assert_allclose(
        tuple(var.rio.transform(recalc=True))[:6], tuple(products.transform)[:6]
    )


@pytest.mark.parametrize("product", list(VARIABLES))
def test_product_has_consolidated_metadata(products: Products, product: str) -> None:
    """Defect 1 (issue 9): stores carry consolidated metadata, so opening one on object
    storage reads one key instead of listing them all. FAILS today on every sample."""
    ds = xr.open_zarr(products.stores[product], decode_coords="all", consolidated=True)
    assert VARIABLES[product] in ds
