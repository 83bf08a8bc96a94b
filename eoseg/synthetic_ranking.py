"""Noisy-only vs clean-only vs pretrain + fine-tune, on the synthetic demo landscape.

`compare_trainings` runs the real pipeline once per training: `make_demo_data` → `ingest`
→ `rasterize_labels` (noisy, clean, held-out truth) → `train_model` → `predict` →
`evaluate_classmap` on the held-out box. The three trainings get the same number of
epochs, so the comparison is about labels, not budget. Used by
``benchmarks/noisy_labels.py`` and ``tests/test_ranking.py``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import xarray as xr

from eoseg.classes import DEMO_CLASSES, IGNORE_ID
from eoseg.cube import ingest, open_cube
from eoseg.errors import InvalidParameterError
from eoseg.grid import iter_tiles
from eoseg.labels import open_labels, rasterize_labels
from eoseg.metrics import evaluate
from eoseg.predict import open_classmap, predict
from eoseg.publish import evaluate_classmap
from eoseg.synthetic import DemoSpec, make_demo_data
from eoseg.train import TrainConfig, train_model

TRAININGS = ("noisy-only", "clean-only", "pretrain+finetune")
"""Names of the compared trainings, in the order they run."""


@dataclass(frozen=True, slots=True)
class TrainingScore:
    """Scores of one training.

    Attributes:
        name: One of `TRAININGS`.
        miou: mIoU on the held-out box (the benchmark's figure).
        overall_accuracy: Overall accuracy on the held-out box.
        iou: Per-class IoU on the held-out box (NaN where a class is absent from both).
        outside_clean_miou: mIoU on the whole truth outside the clean box's bounds: ten
            times the pixels of the held-out box, so less sensitive to its few
            built-up and road pixels.
        seconds: Training time.
    """

    name: str
    miou: float
    overall_accuracy: float
    iou: tuple[float, ...]
    outside_clean_miou: float
    seconds: float


def compare_trainings(
    workdir: Path,
    spec: DemoSpec,
    config: TrainConfig,
    *,
    tile_size: int = 512,
    whole_map: bool = True,
) -> dict[str, TrainingScore]:
    """Train and score noisy-only, clean-only and pretrain + fine-tune models.

    Args:
        workdir: Folder for the data, cube, labels, models and class maps.
        spec: The landscape; ``clean_fraction`` sets the clean box.
        config: Options of the pretrain + fine-tune model, with ``epochs`` given; the
            other two train for ``epochs + finetune_epochs`` epochs on one set of labels
            (clean-only with cross-entropy).
        tile_size: Tile size of the cube.
        whole_map: Map the whole cube and score ``outside_clean_miou``; False maps only
            the tiles holding held-out truth (the held-out scores are the same: every
            tile reads its own halo; 2 of the 12 tiles of 512 px of the default demo)
            and leaves ``outside_clean_miou`` NaN.

    Returns:
        The scores by training name, in `TRAININGS` order.
    """
    root = Path(workdir)
    data = make_demo_data(root / "data", spec)
    cube_path = root / "cube.zarr"
    ingest([data.catalog], cube_path, tile_size=tile_size, overwrite=True)
    sources = {
        "noisy": data.noisy_labels,
        "clean": data.clean_labels,
        "holdout": data.holdout_truth,
        "truth": data.truth,
    }
    stores = {kind: root / f"labels-{kind}.zarr" for kind in sources}
    for kind, source in sources.items():
        rasterize_labels(source, cube_path, stores[kind], overwrite=True)
    outside = _outside_clean_box(stores["truth"], stores["clean"]) if whole_map else None
    tiles = None if whole_map else _tiles_holding(stores["holdout"], tile_size)
    # In memory (~60 MB): chip sampling then reads numpy, not a Dask graph per chip.
    cube = open_cube(cube_path).load()
    if config.epochs is None:
        raise InvalidParameterError(
            "compare_trainings needs explicit epochs (the same budget for every training): "
            "set TrainConfig.epochs"
        )
    total = config.epochs + config.finetune_epochs
    one_stage = replace(config, epochs=total, finetune_epochs=0)
    runs = {
        "noisy-only": (stores["noisy"], None, one_stage),
        "clean-only": (stores["clean"], None, replace(one_stage, noisy_loss="ce")),
        "pretrain+finetune": (stores["noisy"], stores["clean"], config),
    }
    scores = {}
    for name, (labels, finetune, cfg) in runs.items():
        start = time.perf_counter()
        model = root / f"model-{name}"
        train_model(
            cube,
            open_labels(labels).load(),
            model,
            schema=DEMO_CLASSES,
            config=cfg,
            finetune_labels=open_labels(finetune).load() if finetune else None,
            resume=False,
        )
        seconds = time.perf_counter() - start
        classmap = root / f"classmap-{name}.zarr"
        predict(cube_path, model, classmap, overwrite=True, tiles=tiles)
        wide = math.nan
        if outside is None:  # a partial map: `evaluate_classmap`'s scoring, on what it holds
            mapped = xr.open_zarr(classmap, decode_coords="all")["class"]
            held_out = evaluate(mapped, open_labels(stores["holdout"]), DEMO_CLASSES)
        else:
            held_out = evaluate_classmap(classmap, stores["holdout"], workdir=root)
            wide = evaluate(open_classmap(classmap)["class"], outside, DEMO_CLASSES).miou
        scores[name] = TrainingScore(
            name, held_out.miou, held_out.overall_accuracy, held_out.iou, wide, seconds
        )
    return scores


def _tiles_holding(labels: Path, tile_size: int) -> list[str]:
    """Names of the tiles (of side ``tile_size``) of the labels' grid holding a labelled
    pixel."""
    store = open_labels(labels)
    labelled = store.values != IGNORE_ID
    tiles = iter_tiles(store.odc.geobox, tile_size)
    return [t.name for t in tiles if labelled[t.ys, t.xs].any()]


def _outside_clean_box(truth: Path, clean: Path) -> xr.DataArray:
    """The truth with the bounding rows and columns of the clean labels set to 255."""
    reference = open_labels(truth).load()
    rows, cols = np.nonzero(open_labels(clean).values != IGNORE_ID)
    masked = reference.values.copy()
    masked[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] = IGNORE_ID
    return reference.copy(data=masked)
