"""What `benchmarks/predict.py` measures on: a scene, its cube, a model, and a memory probe.

The scene is one GeoTIFF (4 Sentinel-2-like bands, float32 reflectance, 10 m pixels in
UTM, tiled and uncompressed so TorchGeo's reads are not slowed by decoding): a smooth
random landscape of the demo's six classes with their spectra plus noise. eoseg reads it
through its cube (`eoseg.cube.ingest`, the same values bit for bit), TorchGeo from the
GeoTIFF. The model is an untrained, seeded U-Net (weights do not change the work), saved
as an eoseg model folder and as a plain torch state dict for the TorchGeo loop.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin

from eoseg.classes import DEMO_CLASSES
from eoseg.cube import ingest, open_cube
from eoseg.models import ModelCard, save_model
from eoseg.models.unet import UNet, count_flops_per_pixel, count_parameters
from eoseg.synthetic_scenes import BANDS, SPECTRA, smooth_noise

SCENE_NAME = "scene_20240612.tif"  # the date in the name is the scene's date for ingest
CRS = "EPSG:32633"
ORIGIN = (500000.0, 5300000.0)
RES = 10.0


def write_scene(folder: Path, side: int, seed: int = 0) -> Path:
    """A ``side`` x ``side`` px scene GeoTIFF in ``folder`` (kept when already there)."""
    path = folder / SCENE_NAME
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    field = smooth_noise(rng, (side, side), sigma=12.0)
    edges = np.quantile(
        field[:: max(1, side // 256), :: max(1, side // 256)], [1 / 6 * i for i in range(1, 6)]
    )
    classes = np.digitize(field, edges).astype("uint8")
    del field
    partial = path.with_suffix(".partial.tif")
    with rasterio.open(
        partial,
        "w",
        driver="GTiff",
        width=side,
        height=side,
        count=len(BANDS),
        dtype="float32",
        crs=CRS,
        transform=from_origin(*ORIGIN, RES, RES),
        tiled=True,
        blockxsize=256,
        blockysize=256,
    ) as dst:
        for b in range(len(BANDS)):
            noise = rng.normal(0.0, 0.01, (side, side)).astype("float32")
            dst.write(SPECTRA[classes, b] + noise, b + 1)
        dst.descriptions = BANDS
    partial.rename(path)
    return path


def make_cube(scene: Path, out: Path, tile_size: int) -> Path:
    """The scene ingested into a cube of ``tile_size`` px tiles (kept when complete)."""
    if out.exists():
        try:
            cube = open_cube(out)
            if int(cube.attrs["tile_size"]) == tile_size:
                return out
        except Exception:
            pass
    ingest([scene], out, tile_size=tile_size, overwrite=True)
    return out


def make_model(
    cube_path: Path, out: Path, *, base_width: int, depth: int, chip: int
) -> tuple[Path, ModelCard, dict[str, Any]]:
    """An untrained, seeded U-Net saved as a model folder ``out`` (replaced) and as a
    torch state dict beside it (``<out>.state.pt``).

    Returns:
        ``(model_dir, card, spec)``: ``spec`` is what the TorchGeo loop needs to build the
        same network (``arch`` keyword arguments, ``mean``, ``std``, ``weights``).
    """
    cube = open_cube(cube_path)
    bands = tuple(str(b) for b in cube["band"].values)
    sample = cube["data"].isel(time=0)[:, ::16, ::16].values.reshape(len(bands), -1)
    torch.manual_seed(0)
    model = UNet(len(bands), len(DEMO_CLASSES), base_width, depth)
    card = ModelCard(
        name="bench-unet",
        bands=bands,
        mean=tuple(float(v) for v in np.nanmean(sample, axis=1)),
        std=tuple(float(v) for v in np.nanstd(sample, axis=1) + 1e-6),
        classes=DEMO_CLASSES,
        chip_size=chip,
        architecture=model.architecture,
        parameters=count_parameters(model),
        flops_per_pixel=count_flops_per_pixel(model, len(bands), chip),
    )
    _calibrate(model, cube["data"].isel(time=0).values, card)
    shutil.rmtree(out, ignore_errors=True)  # the benchmark's own folder, remade each run
    card = save_model(model, card, out)
    weights = out.with_name(f"{out.name}.state.pt")
    torch.save(model.state_dict(), weights)
    spec = {
        "arch": {
            "in_channels": len(bands),
            "num_classes": len(DEMO_CLASSES),
            "base_width": base_width,
            "depth": depth,
        },
        "mean": list(card.mean),
        "std": list(card.std),
        "weights": str(weights),
    }
    return out, card, spec


def _calibrate(model: UNet, image: np.ndarray, card: ModelCard, side: int = 128) -> None:
    """Batch-norm statistics from four chips of the scene (seeded weights stay as they
    are): an untrained network with the default statistics maps everything to one class,
    and the benchmark's class agreement would say nothing."""
    rows = np.linspace(0, image.shape[-2] - side, 2).astype(int)
    cols = np.linspace(0, image.shape[-1] - side, 2).astype(int)
    chips = np.stack([image[:, r : r + side, c : c + side] for r in rows for c in cols])
    mean = np.asarray(card.mean, dtype="float32")[:, None, None]
    std = np.asarray(card.std, dtype="float32")[:, None, None]
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the batches seen
    model.train()
    with torch.no_grad():
        model(torch.as_tensor((chips - mean) / std))
    model.eval()


class TreeMemory:
    """Peak resident memory of a process and all its descendants, sampled in a thread.

    The figure is the sum of the processes' RSS: pages shared between processes (the
    libraries each worker maps) count once per process, so it is an upper bound of
    what the tree takes from the machine. With ``tree=False`` only the process itself.
    """

    def __init__(self, pid: int | None = None, interval: float = 0.1, tree: bool = True) -> None:
        import psutil

        self._root = psutil.Process(pid)
        self._tree = tree
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.peak = 0

    def now(self) -> int:
        """Bytes resident in the tree now."""
        import psutil

        total = 0
        procs = [self._root]
        with contextlib.suppress(psutil.Error):
            procs += self._root.children(recursive=True) if self._tree else []
        for proc in procs:
            with contextlib.suppress(psutil.Error):  # it ended meanwhile
                total += proc.memory_info().rss
        return total

    def reset(self) -> None:
        """Start a new peak from now."""
        self.peak = self.now()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(self._interval)

    def __enter__(self) -> TreeMemory:
        self.reset()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())
