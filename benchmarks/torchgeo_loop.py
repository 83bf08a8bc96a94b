"""The inference loop TorchGeo's documentation shows, timed on one GeoTIFF scene.

Runs inside the benchmark's own virtual environment (`benchmarks.predict_torchgeo`
creates it), never in eoseg's: it imports TorchGeo, torch and numpy only, and eoseg's U-Net
from its source file (``--unet-source``), so the network is the same class with the same
weights (a state dict saved by the benchmark, loaded with ``weights_only=True``).

The loop is the one of TorchGeo's tutorials (``torchgeo.ipynb``, "Gridded sampling" and
"Data Loaders"): a `RasterDataset` over the scene, a `GridGeoSampler` with
``stride = size`` (no overlap), a `DataLoader` with ``collate_fn=stack_samples``, the
model in fp32, and each chip's argmax written into the output array at the chip's place
(from the sample's ``bounds``). Normalisation with the model card's mean and std is done
on the batch, as the tutorials' batch transforms do.

Prints one JSON document: seconds of the loop (dataset, sampler, loader, model,
stitching), megapixels, chips, threads, versions. With ``--out`` the class map is saved
as ``.npy`` (the benchmark compares it with eoseg's).

This file is not part of eoseg and is not imported by it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import sys
import time
import types
from pathlib import Path
from typing import Any

_KEEP: list[Any] = []


def _torchvision_without_ops() -> None:
    """Let ``import torchvision`` work where its compiled ops cannot load.

    PyPI's torchvision wheels are built against CUDA torch; with a CPU build of torch
    (what eoseg installs) their ``_C`` extension does not load, and torchvision 0.28
    then fails at import, registering fake kernels for ``torchvision::nms`` and ``qnms``
    unconditionally. Declaring those two schemas first lets the import finish; nothing
    here calls them (TorchGeo's raster datasets and samplers use no torchvision op).
    """
    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.submodule_search_locations is None:
        return
    so = next(Path(spec.submodule_search_locations[0]).glob("_C*.so"), None)
    try:
        if so is not None:
            torch.ops.load_library(str(so))
            return
    except OSError:
        pass
    lib = torch.library.Library("torchvision", "DEF")
    for op in ("nms", "qnms"):
        lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _KEEP.append(lib)  # a Library's definitions live as long as the object


def _unet_class(source: Path) -> Any:
    """eoseg's ``UNet`` from its source file, without importing the eoseg package (its
    dependencies are not installed here); ``eoseg.errors`` is plain Python."""
    package = types.ModuleType("eoseg")
    package.__path__ = [str(source.parents[1])]
    sys.modules.setdefault("eoseg", package)
    spec = importlib.util.spec_from_file_location("eoseg_unet_source", source)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load eoseg's U-Net from {source}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.UNet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scene", type=Path, required=True, help="the scene GeoTIFF")
    parser.add_argument("--weights", type=Path, required=True, help="torch state dict")
    parser.add_argument("--unet-source", type=Path, required=True, help="eoseg/models/unet.py")
    parser.add_argument("--model", type=json.loads, required=True, help="JSON: arch, mean, std")
    parser.add_argument("--chip", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader num_workers")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="save the class map (.npy)")
    args = parser.parse_args()

    _torchvision_without_ops()
    import numpy as np
    import rasterio
    import torch
    import torchgeo
    from torch.utils.data import DataLoader
    from torchgeo.datasets import RasterDataset, stack_samples
    from torchgeo.samplers import GridGeoSampler

    if args.threads:
        torch.set_num_threads(args.threads)
    spec = args.model
    model = _unet_class(args.unet_source)(**spec["arch"])
    model.load_state_dict(torch.load(args.weights, weights_only=True))
    model.eval()
    mean = torch.tensor(spec["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(spec["std"]).view(1, -1, 1, 1)
    with rasterio.open(args.scene) as src:
        height, width = src.height, src.width
        left, top, res = src.bounds.left, src.bounds.top, src.res[0]
    with torch.inference_mode():  # warm-up: oneDNN builds its kernels on the first call
        model(torch.zeros(args.batch_size, len(spec["mean"]), args.chip, args.chip))

    start = time.perf_counter()
    dataset = RasterDataset(paths=str(args.scene))
    sampler = GridGeoSampler(dataset, size=args.chip, stride=args.chip)
    loader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        sampler=sampler,
        collate_fn=stack_samples,
        num_workers=args.workers,
    )
    classes = np.zeros((height, width), dtype="uint8")
    chips = 0
    with torch.inference_mode():
        for batch in loader:
            pred = model((batch["image"] - mean) / std).argmax(dim=1).numpy()
            for (xs, ys, _), p in zip(batch["bounds"], pred, strict=True):
                row, col = round((top - ys.stop) / res), round((xs.start - left) / res)
                classes[row : row + args.chip, col : col + args.chip] = p
            chips += len(pred)
    seconds = time.perf_counter() - start
    if args.out is not None:
        np.save(args.out, classes)
    doc = {
        "seconds": seconds,
        "megapixels": height * width / 1e6,
        "chips": chips,
        "batch_size": args.batch_size,
        "loader_workers": args.workers,
        "threads": torch.get_num_threads(),
        "torchgeo": torchgeo.__version__,
        "torch": torch.__version__,
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(json.dumps(doc))


if __name__ == "__main__":
    main()
