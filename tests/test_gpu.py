"""GPU paths (marked ``gpu``; excluded from ``make test``, run where a CUDA device is lent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


def test_cuda_bf16_prediction_matches_cpu(cube_path: Path, model_dir: Path) -> None:
    """bf16 channels-last inference on CUDA agrees with fp32 CPU on almost every pixel."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from eoseg.blend import Lattice
    from eoseg.cube import open_cube
    from eoseg.grid import iter_tiles
    from eoseg.models import load_model
    from eoseg.models.accel import resolve_accelerator
    from eoseg.tile_prediction import predict_window, read_window

    cube = open_cube(cube_path)
    data = cube["data"].isel(time=0)
    tile = next(iter_tiles(cube.odc.geobox, 96))
    cpu_model, card = load_model(model_dir)
    gpu_model, _ = load_model(model_dir, device="cuda")
    accel = resolve_accelerator("cuda", inference=True)
    gpu_model = accel.prepare(gpu_model)
    lattice = Lattice(64, 8)
    window = read_window(data, cube.odc.geobox, tile, lattice)
    fp32 = resolve_accelerator("cpu", "fp32", inference=True)
    cpu = predict_window(cpu_model, card, window, lattice=lattice, accel=fp32).argmax(axis=0)
    gpu = predict_window(gpu_model, card, window, lattice=lattice, accel=accel).argmax(axis=0)
    assert (cpu == gpu).mean() > 0.98
    assert np.isfinite(gpu).all()


def test_cuda_bf16_training_learns(tmp_path: Path) -> None:
    """Training in bf16 autocast with channels-last tensors on CUDA learns the toy scene."""
    import dataclasses

    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from test_train import FAST, SCHEMA, make_scene

    from eoseg.train import train_model

    cube, noisy, _ = make_scene()
    config = dataclasses.replace(FAST, device="cuda")
    card = train_model(cube, noisy, tmp_path / "m", schema=SCHEMA, config=config)
    assert card.metrics["val_miou"] > 0.6


def test_predict_on_local_cuda_cluster(cube_path: Path, model_dir: Path, tmp_path: Path) -> None:
    """``--scheduler cuda``: one dask-cuda worker per GPU predicts the same map as in-process."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    pytest.importorskip("dask_cuda")
    from eoseg.cluster import connect
    from eoseg.predict import open_classmap, predict

    def model_on_gpu() -> bool:
        from eoseg.inference import _MODELS

        return bool(_MODELS) and all(next(m.parameters()).is_cuda for m, _, _ in _MODELS.values())

    with connect("cuda", local_directory=tmp_path / "dask") as client:
        assert len(client.scheduler_info()["workers"]) == torch.cuda.device_count()
        predict(cube_path, model_dir, tmp_path / "cluster.zarr", client=client)
        assert all(client.run(model_on_gpu).values())
    predict(cube_path, model_dir, tmp_path / "local.zarr")
    a = open_classmap(tmp_path / "cluster.zarr")["class"].values
    b = open_classmap(tmp_path / "local.zarr")["class"].values
    assert a.shape == b.shape
    assert (a == b).mean() > 0.999
