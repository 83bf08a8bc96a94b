"""Shared fixtures: tiny synthetic data built once per session, and a threaded Dask cluster."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.s3 import s3, s3_endpoint, s3_server  # noqa: F401  (object-storage fixtures)

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real samples beside the checkout; tests using them skip when absent."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real samples not found at {REAL_DATA}")
    return REAL_DATA


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A small two-zone landscape (2.56 km x 1.28 km at 10 m) with labels."""
    from eoseg.synthetic import DemoSpec, make_demo_data

    return make_demo_data(
        tmp_path_factory.mktemp("demo"), DemoSpec(seed=1, width_m=2560.0, height_m=1280.0)
    )


@pytest.fixture(scope="session")
def cube_path(demo_data, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    """The demo scenes ingested into a cube with 96 px tiles (several tiles, both zones)."""
    from eoseg.cube import ingest

    out = tmp_path_factory.mktemp("cube") / "cube.zarr"
    ingest([demo_data.catalog], out, tile_size=96)
    return out


@pytest.fixture(scope="session")
def labels_path(demo_data, cube_path: Path) -> Path:  # type: ignore[no-untyped-def]
    """The noisy labels rasterized onto the cube's grid."""
    from eoseg.labels import rasterize_labels

    out = cube_path.parent / "labels.zarr"
    rasterize_labels(demo_data.noisy_labels, cube_path, out)
    return out


def write_geotiff(
    path: Path,
    data: Any,
    *,
    crs: str = "EPSG:32632",
    origin: tuple[float, float] = (500000.0, 5300000.0),
    res: float = 10.0,
    transform: Any = None,
    nodata: float | None = None,
    descriptions: tuple[str, ...] | None = None,
) -> Path:
    """Write ``data`` (``(y, x)`` or ``(band, y, x)``) as a GeoTIFF; returns ``path``.

    Its top-left corner is ``origin`` with square ``res`` pixels, unless ``transform`` is
    given.
    """
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    bands = np.asarray(data)
    bands = bands[None] if bands.ndim == 2 else bands
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=bands.shape[2],
        height=bands.shape[1],
        count=bands.shape[0],
        dtype=bands.dtype,
        crs=crs,
        transform=transform if transform is not None else from_origin(*origin, res, res),
        nodata=nodata,
    ) as dst:
        dst.write(bands)
        if descriptions is not None:
            dst.descriptions = descriptions
    return path


def save_untrained_model(
    out: Path, bands: tuple[str, ...], name: str = "test-unet", time: str = "median", seed: int = 0
) -> Path:
    """A seeded, untrained U-Net (base width 8, depth 2, 32 px chips) saved as a model folder;
    ``time`` is its input over the cube's dates (``"median"`` or ``"per-date"``); another
    ``seed`` makes another model version."""
    import torch

    from eoseg.classes import DEMO_CLASSES
    from eoseg.model_input import check_time_mode
    from eoseg.models.card import ModelCard, save_model
    from eoseg.models.unet import UNet

    torch.manual_seed(seed)
    model = UNet(len(bands), len(DEMO_CLASSES), base_width=8, depth=2)
    card = ModelCard(
        name=name,
        bands=bands,
        mean=(0.1,) * len(bands),
        std=(0.1,) * len(bands),
        classes=DEMO_CLASSES,
        chip_size=32,
        architecture={"name": "unet", "base_width": 8, "depth": 2},
        time=check_time_mode(time),
    )
    save_model(model, card, out)
    return out


@pytest.fixture(scope="session")
def model_dir(cube_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained model folder for the cube's bands."""
    from eoseg.cube import open_cube

    bands = tuple(str(b) for b in open_cube(cube_path)["band"].values)
    return save_untrained_model(tmp_path_factory.mktemp("model") / "model", bands)


QUIET_CLUSTER = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
}
"""Dask settings of the tests' threaded cluster: no statistical profiler (it samples the
worker threads every 10 ms) and a slow event-loop tick (every 20 ms by default). Both wake
the cluster's thread, which takes the GIL and a core from in-process torch on 2 cores."""


@pytest.fixture(scope="module")
def client() -> Iterator[object]:
    """A threaded LocalCluster for the tests of one module (process clusters are slow on
    2 cores). Per module, not per session: a cluster left running slows in-process torch
    in every later module (test_ranking's models trained in 129-144 s each beside it,
    71-79 s without); starting one takes about a second."""
    import dask

    from eoseg.cluster import connect

    with dask.config.set(QUIET_CLUSTER), connect(None, n_workers=2, processes=False) as c:
        yield c


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One temporary Prefect server for the session, its home in a temp dir."""
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(autouse=True)
def _quiet_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    # A training to a URL stages under $XDG_CACHE_HOME (eoseg.storage.staging_dir).
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    os.environ.setdefault("PYTHONHASHSEED", "0")


@pytest.fixture(scope="session")
def bad_input_template(  # type: ignore[no-untyped-def]
    demo_data, cube_path: Path, labels_path: Path, model_dir: Path, tmp_path_factory
) -> Path:
    """A valid workspace (scene, cube, labels, polygons, model, class map) that the
    bad-input cases copy and spoil (see tests/badinput.py)."""
    from tests.badinput import build_workspace

    return build_workspace(
        tmp_path_factory.mktemp("badinput") / "template",
        demo=demo_data,
        cube=cube_path,
        labels=labels_path,
        model=model_dir,
    )
