"""Tiled-inference throughput: a whole cube through `eoseg.predict.predict` on a cluster.

Builds the synthetic demo landscape, ingests it, saves an untrained U-Net of the given size
(weights do not change the work) and times ``predict`` end to end: reading windows from
Zarr, blended overlapping chips (stride = chip / 2, so every pixel is seen by four chips),
writing class and confidence tiles, publishing. The first run includes each worker's model
load; later runs (``--repeat``) reuse the workers.

Usage: python benchmarks/predict.py [--scheduler cuda] [--small] [--base-width 32]
           [--depth 4] [--chip-size 256] [--tile-size 1024] [--repeat 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from eoseg.classes import DEMO_CLASSES
from eoseg.cluster import GPU_THREADS, connect
from eoseg.cube import ingest, open_cube
from eoseg.grid import iter_tiles
from eoseg.models import ModelCard, load_model, save_model
from eoseg.models.accel import resolve_accelerator
from eoseg.models.unet import UNet, count_flops_per_pixel, count_parameters
from eoseg.predict import predict, predict_window, read_window
from eoseg.synthetic import DemoSpec, make_demo_data


def _model(cube_path: Path, out: Path, args: argparse.Namespace) -> ModelCard:
    cube = open_cube(cube_path)
    bands = tuple(str(b) for b in cube["band"].values)
    sample = cube["data"].isel(time=0)[:, ::16, ::16].values.reshape(len(bands), -1)
    torch.manual_seed(0)
    model = UNet(len(bands), len(DEMO_CLASSES), args.base_width, args.depth)
    card = ModelCard(
        name="bench-unet",
        bands=bands,
        mean=tuple(float(v) for v in np.nanmean(sample, axis=1)),
        std=tuple(float(v) for v in np.nanstd(sample, axis=1) + 1e-6),
        classes=DEMO_CLASSES,
        chip_size=args.chip_size,
        architecture=model.architecture,
        parameters=count_parameters(model),
        flops_per_pixel=count_flops_per_pixel(model, len(bands), args.chip_size),
    )
    return save_model(model, card, out)


def _time_window(cube_path: Path, model_dir: Path, tile_size: int) -> float:
    """Megapixels per second of `predict_window` alone on one tile's window, in this process."""
    cube = open_cube(cube_path)
    model, card = load_model(model_dir)
    accel = resolve_accelerator()
    model = accel.prepare(model)
    tile = next(iter_tiles(cube.odc.geobox, tile_size))
    window = read_window(cube["data"].isel(time=0), cube.odc.geobox, tile, card.chip_size)
    predict_window(model, card, window, accel=accel)  # warm-up
    if accel.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    runs = 3
    for _ in range(runs):
        predict_window(model, card, window, accel=accel)
    return runs * tile.height * tile.width / 1e6 / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/eoseg-bench-predict"))
    parser.add_argument("--scheduler", default=None, help="'cuda', an address, or local CPU")
    parser.add_argument("--small", action="store_true", help="a 5 km x 5 km landscape")
    parser.add_argument("--size-km", type=float, default=None, help="a square landscape")
    parser.add_argument("--gpu-threads", type=int, default=GPU_THREADS, help="with cuda")
    parser.add_argument("--base-width", type=int, default=32)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--chip-size", type=int, default=256)
    parser.add_argument("--tile-size", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--reuse", action="store_true", help="keep the workdir's cube")
    args = parser.parse_args()
    spec = DemoSpec(seed=0)
    if args.small or args.size_km:
        side = 1000.0 * (args.size_km or 5.12)
        spec = replace(spec, width_m=side, height_m=side)
    root = args.workdir
    start = time.perf_counter()
    cube_path = root / "cube.zarr"
    if not (args.reuse and cube_path.exists()):
        data = make_demo_data(root / "data", spec)
        ingest([data.catalog], cube_path, tile_size=args.tile_size, overwrite=True)
    prepared = time.perf_counter() - start
    card = _model(cube_path, root / "model", args)
    rows = []
    window_mpx_s = _time_window(cube_path, root / "model", args.tile_size)
    dask_dir = root / "dask"
    with connect(args.scheduler, local_directory=dask_dir, gpu_threads=args.gpu_threads) as client:
        workers = len(client.scheduler_info()["workers"])
        for i in range(args.repeat):
            result = predict(cube_path, root / "model", root / "classmap.zarr", client=client,
                             overwrite=True, run_id=f"bench-{i}")  # fmt: skip
            rows.append((result.megapixels, result.seconds, result.tiles))
    flops = card.flops_per_pixel or 0.0
    out = sys.stdout
    out.write(
        f"cube {rows[0][0]:.2f} Mpx in {rows[0][2]} tiles of {args.tile_size} px "
        f"(data + ingest {prepared:.0f} s); model U-Net {args.base_width}/{args.depth}, "
        f"chip {args.chip_size}, {flops / 1e3:.0f} GFLOP/Mpx per pass (x4 with overlap); "
        f"{workers} worker(s) on {args.scheduler or 'a local CPU cluster'}; "
        f"torch {torch.__version__}\n"
        f"predict_window alone, one tile in this process on {resolve_accelerator().describe()}: "
        f"{window_mpx_s:.2f} Mpx/s\n"
    )
    for i, (mpx, seconds, _) in enumerate(rows):
        tflops = 4 * flops * mpx * 1e6 / seconds / 1e12
        label = "first (loads models)" if i == 0 else f"run {i + 1}"
        out.write(
            f"{label:22s} {seconds:7.2f} s  {mpx / seconds:8.3f} Mpx/s  "
            f"{tflops:7.3f} TFLOP/s effective\n"
        )


if __name__ == "__main__":
    main()
