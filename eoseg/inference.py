"""How a predict run applies its model: the settings that change pixels, and the workers.

`PredictOptions` is what a user asks for (``eoseg predict --chip-size --overlap
--precision --probabilities --contexts``, each defaulting to the model card's choice);
`resolve_settings` checks it against the model and the grid and makes the
`PredictSettings` that every tile records and the class map's signature holds, so a
resumed run never mixes tiles made with other settings.

On the workers the model is loaded once per process (`ModelPlugin`, `get_model`), with
torch's thread count set so that the tasks running on a machine use every core
(`eoseg.cluster.torch_threads`), a batch size that fits the memory a task may use
(`batch_size_for`), and each tile reports the peak memory of its process (`tile_report`).
"""

from __future__ import annotations

import logging
import os
import resource
import socket
import sys
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import torch
from distributed import WorkerPlugin, get_worker

from eoseg.blend import Lattice, check_lattice, default_lattice, fit_lattice
from eoseg.cluster import available_cores, torch_threads
from eoseg.contexts import SINGLE, Fusion, resolve_fusion
from eoseg.errors import InvalidParameterError
from eoseg.models.accel import PRECISIONS, Accelerator, Precision, resolve_accelerator
from eoseg.models.card import CARD_FILE, WEIGHTS_FILE, ModelCard, parse_card, read_model_file
from eoseg.models.weights import load_model, verify_model

log = logging.getLogger(__name__)

ACTIVATION_BYTES = 64
"""Peak inference memory of a U-Net per pixel and per unit of base width (bytes; about 40
measured for widths 8-32, depths 2-4, with a margin)."""
CPU_BATCH = 2
"""Most chips per forward pass on the CPU: larger batches are slower there (the caches),
and each chip of 256 px costs ~130 MB of activations at base width 32. U-Net 32/4 on
256 px chips, 2 AVX2 cores (session 9), Mpx/s at batch 1 / 2 / 4 / 8: 0.27 / 0.29 / 0.23
/ 0.24 with 2 torch threads, 0.19 / 0.20 / 0.17 / 0.15 with 1."""
MEMORY_SHARE = 0.25
"""Share of the free memory (per concurrent task) one batch of chips may take."""

_MODELS: dict[tuple[str, str], tuple[torch.nn.Module, ModelCard, Accelerator]] = {}
_MODELS_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class PredictOptions:
    """What a predict run is asked for; None takes the model card's default.

    Attributes:
        chip_size: Side of the chips the network predicts (``--chip-size``), a multiple of
            its stride ``2**depth``; larger than the training chip where the network is
            fully convolutional.
        overlap: Pixels neighbouring chips share and blend (``--overlap``), ``0..chip/2``;
            ``chip/2`` is the four-fold blend.
        precision: ``"auto"``, ``"bf16"`` or ``"fp32"`` (`eoseg.models.accel`).
        probabilities: Also write each class's probability (uint8, x 255).
        contexts: Contexts to fuse (``--contexts``, `eoseg.contexts`); None: the card's.
    """

    chip_size: int | None = None
    overlap: int | None = None
    precision: Precision = "auto"
    probabilities: bool = False
    contexts: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class PredictSettings:
    """The checked settings of a run: what its pixels depend on besides model and cube."""

    lattice: Lattice
    precision: Precision
    probabilities: bool
    fusion: Fusion = SINGLE

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (tile provenance, store attributes and signature)."""
        return {
            **self.lattice.to_dict(),
            "precision": self.precision,
            "probabilities": self.probabilities,
            "contexts": self.fusion.to_dict(),
        }


def card_lattice(card: ModelCard) -> Lattice:
    """The card's default prediction lattice; a card without one (older eoseg, or made by
    hand) gets `eoseg.blend.default_lattice` of its training chip."""
    saved = card.inference
    if saved.get("chip_size") and saved.get("overlap") is not None:
        return Lattice(int(saved["chip_size"]), int(saved["overlap"]))
    arch = card.architecture
    context = "aspp" if arch.get("name") == "unet-aspp" else "none"
    return default_lattice(card.chip_size, _depth(card), context)


def resolve_settings(
    card: ModelCard, grid_shape: tuple[int, int], options: PredictOptions
) -> PredictSettings:
    """Check ``options`` against the model and fill in the card's defaults.

    An overlap left out is the card's, at most half the chip. A chip that covers the grid
    whole is shrunk to the grid (`eoseg.blend.fit_lattice`).

    Raises:
        InvalidParameterError: Naming ``--chip-size``, ``--overlap`` or ``--precision``.
    """
    if options.precision not in PRECISIONS:
        raise InvalidParameterError(
            f"--precision must be one of {', '.join(PRECISIONS)}; found "
            f"{options.precision!r}: choose one (auto: bf16 where the device computes it)"
        )
    base = card_lattice(card)
    chip = base.chip if options.chip_size is None else options.chip_size
    overlap = min(base.overlap, chip // 2) if options.overlap is None else options.overlap
    lattice = check_lattice(chip, overlap, _depth(card))
    lattice = fit_lattice(lattice, *grid_shape, _depth(card))
    fusion = resolve_fusion(card, options.contexts)
    return PredictSettings(lattice, options.precision, options.probabilities, fusion)


def _depth(card: ModelCard) -> int:
    return int(card.architecture.get("depth", 4))


class ModelPlugin(WorkerPlugin):
    """Loads the model once on every worker and sets torch's thread count.

    The plugin carries the model folder's two files (read once on the client), so a
    worker on another machine or in another pod, which cannot read the client's folder,
    loads the same verified model; the scheduler keeps the plugin for workers that join
    later (a replacement for a lost one). Tasks carry only the folder's name, the key of
    the worker's model cache.

    Args:
        model_dir: The model folder (read here, on the client).
        precision: The run's ``--precision``.
        host_tasks: Tiles that run at once on each host (its workers' Dask threads), by
            host address; the cores of a host are shared among them.
    """

    name = "eoseg-model"

    def __init__(
        self, model_dir: str, precision: str = "auto", host_tasks: dict[str, int] | None = None
    ) -> None:
        self.model_dir = model_dir
        self.precision = precision
        self.host_tasks = host_tasks or {}
        folder = Path(model_dir)
        self.card = read_model_file(folder / CARD_FILE)
        self.weights = read_model_file(folder / WEIGHTS_FILE)

    def setup(self, worker: Any) -> None:
        # Nannies pin OMP_NUM_THREADS=1; torch needs its thread count set explicitly.
        host = worker.address.rsplit(":", 1)[0].split("://")[-1]
        tasks = self.host_tasks.get(host, worker.state.nthreads)
        torch.set_num_threads(torch_threads(available_cores(), tasks))
        get_runner(self.model_dir, self.precision, files=(self.card, self.weights))


def get_model(model_dir: str, precision: str = "auto") -> tuple[torch.nn.Module, ModelCard]:
    """The model of ``model_dir``, loaded at most once per process and precision."""
    model, card, _ = get_runner(model_dir, precision)
    return model, card


def get_runner(
    model_dir: str, precision: str = "auto", files: tuple[bytes, bytes] | None = None
) -> tuple[torch.nn.Module, ModelCard, Accelerator]:
    """The model, its card and the accelerator it is prepared for (cached per process).

    Args:
        model_dir: The model folder; the cache's key with ``precision``.
        precision: ``--precision``.
        files: The folder's card and weights as bytes (`ModelPlugin`), read instead of
            the folder when the model is not cached yet.
    """
    key = (model_dir, precision)
    with _MODELS_LOCK:
        if key not in _MODELS:
            # On a dask-cuda worker CUDA_VISIBLE_DEVICES names its one GPU, so "cuda" is it.
            accel = resolve_accelerator(precision=precision, inference=True)
            if files is None:
                model, card = load_model(Path(model_dir), device=str(accel.device))
            else:
                doc = parse_card(files[0], model_dir)[0]
                model, card = verify_model(files[1], doc, model_dir)
                model.to(str(accel.device)).eval()
            _MODELS[key] = (accel.prepare(model), card, accel)
            log.info("model %s on %s", card.version, accel.describe())
        return _MODELS[key]


def batch_size_for(chip: int, card: ModelCard, accel: Accelerator, tasks: int = 1) -> int:
    """Chips per forward pass: what `MEMORY_SHARE` of the free memory (device memory on a
    GPU), shared by ``tasks`` concurrent tiles, holds; 1..32 on a GPU, 1..`CPU_BATCH` on
    the CPU. On a GPU the tiles sharing it are those of its own worker (one worker per
    GPU), not every task of the host."""
    if accel.device.type == "cuda":
        tasks = _worker_threads()
    per_chip = chip * chip * ACTIVATION_BYTES * int(card.architecture.get("base_width", 32))
    if accel.device.type == "cuda":
        free, cap = torch.cuda.mem_get_info(accel.device)[0], 32
    else:
        free, cap = psutil.virtual_memory().available, CPU_BATCH
    return int(max(1, min(cap, MEMORY_SHARE * free / max(tasks, 1) // per_chip)))


def _worker_threads() -> int:
    """Dask threads of the worker running this task (1 outside a worker)."""
    try:
        return int(get_worker().state.nthreads)
    except ValueError:
        return 1


def peak_memory_mib() -> float:
    """Peak resident memory of this process so far, in MiB (``getrusage``)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes vs KiB


def tile_report(pixels: int, accel: Accelerator, batch_size: int) -> dict[str, Any]:
    """What a tile says about where and how it ran (`eoseg.predict.PredictResult`)."""
    return {
        "pixels": pixels,
        "worker": f"{socket.gethostname()}:{os.getpid()}",
        "peak_memory_mib": round(peak_memory_mib(), 1),
        "device": str(accel.device),
        "precision": "bf16" if accel.bf16 else "fp32",
        "batch_size": batch_size,
        "threads": torch.get_num_threads(),
    }


def by_worker(reports: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The tile reports of each worker, one per worker: its highest peak memory."""
    workers: dict[str, dict[str, Any]] = {}
    for report in reports:
        seen = workers.get(report["worker"])
        if seen is None or report["peak_memory_mib"] > seen["peak_memory_mib"]:
            workers[report["worker"]] = report
    return workers


@dataclass(frozen=True, slots=True)
class PredictResult:
    """What a predict run wrote, how, and how fast.

    Attributes:
        tiles_written: Tiles this run predicted (a resumed run skips those written).
        settings: `PredictSettings.to_dict` of the run.
        workers: Per worker (``host:pid``): how its tiles ran (`by_worker`).
    """

    path: Path | str
    model: str
    tiles: int
    megapixels: float
    seconds: float
    dates: tuple[str, ...] = ()
    tiles_written: int = 0
    computed_megapixels: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (what ``eoseg predict --json`` prints). ``mpx_per_s`` counts
        the pixels this run predicted (every date); ``precision`` is what the workers
        used, ``precision_option`` what was asked for (``auto``)."""
        reports = list(self.workers.values())
        settings = {k: v for k, v in self.settings.items() if k != "precision"}
        return {
            "classmap": str(self.path),
            "model": self.model,
            "tiles": self.tiles,
            "tiles_written": self.tiles_written,
            "megapixels": self.megapixels,
            "seconds": round(self.seconds, 2),
            "mpx_per_s": round(self.computed_megapixels / max(self.seconds, 1e-9), 4),
            **settings,
            "precision": _joined(r["precision"] for r in reports),
            "precision_option": self.settings.get("precision", ""),
            "device": _joined(r["device"] for r in reports),
            "batch_size": _joined(str(r["batch_size"]) for r in reports),
            "threads_per_worker": _joined(str(r["threads"]) for r in reports),
            "peak_memory_mib": {w: r["peak_memory_mib"] for w, r in self.workers.items()},
            **({"dates": list(self.dates)} if self.dates else {}),
        }


def _joined(values: Iterable[str]) -> str:
    return ",".join(sorted(set(values)))
