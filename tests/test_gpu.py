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
    from eoseg.cube import open_cube
    from eoseg.grid import iter_tiles
    from eoseg.models.card import load_model
    from eoseg.predict import predict_window, read_window

    cube = open_cube(cube_path)
    data = cube["data"].isel(time=0)
    tile = next(iter_tiles(cube.odc.geobox, 96))
    cpu_model, card = load_model(model_dir)
    gpu_model, _ = load_model(model_dir, device="cuda")
    gpu_model = gpu_model.to(memory_format=torch.channels_last)
    window = read_window(data, cube.odc.geobox, tile, card.chip_size)
    cpu = predict_window(cpu_model, card, window).argmax(axis=0)
    gpu = predict_window(gpu_model, card, window).argmax(axis=0)
    assert (cpu == gpu).mean() > 0.98
    assert np.isfinite(gpu).all()
