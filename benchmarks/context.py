"""Single- vs multi-context segmentation: mIoU and per-class IoU on held-out truth.

Two models with the same options train on the same labels: ``single`` on context 1 only
(one chip of input per output pixel, as eoseg did before contexts) and ``multi`` on
``--contexts`` (default 1, 2, 4). Each maps the same cube: ``multi`` with the fusion its
card chose, and ``multi@1`` the same model at context 1 alone. Every map is scored on
the same truth with `eoseg evaluate`'s scoring (`eoseg.publish.evaluate_classmap`).

Where:

- ``synthetic`` (default): the context landscape (`eoseg.synthetic_context`), where park
  and grassland share their spectra and only the surroundings tell them apart; the models
  train on one scene and map an independent scene drawn with the next seed.
- ``demo``: the demo landscape (`eoseg.synthetic`): noisy labels, held-out box truth.
- ``--real DIR``: a prepared real-sample workspace (``cube.zarr``, ``labels.zarr``,
  ``heldout.tif`` or ``heldout.gpkg``, ``classes.json``, optional ``codes.json``, as
  /work/exp/rd3/<sample>), trained with the derived defaults unless ``--epochs``.

Usage: python -m benchmarks.context [synthetic|demo] [--small] [--real DIR]
       [--workdir DIR] [--contexts 1,2,4] [--epochs N] [--seed N] [--json]

`compare_contexts` and `compare_synthetic` are what tests/test_contexts.py calls.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from eoseg.classes import DEMO_CLASSES, ClassSchema, load_schema
from eoseg.contexts import parse_contexts
from eoseg.cube import ingest, open_cube
from eoseg.labels import open_labels, rasterize_labels
from eoseg.predict import PredictOptions, predict
from eoseg.publish import evaluate_classmap
from eoseg.synthetic import DemoSpec, make_demo_data
from eoseg.synthetic_context import CONTEXT_CLASSES, ContextSpec, make_context_scene
from eoseg.train import TrainConfig, train_model

CONFIG = TrainConfig(
    chip_size=32, base_width=16, depth=2, epochs=40, train_chips=96, val_chips=32,
    block_size=64, refit=False, num_threads=1,
)  # fmt: skip
"""A small U-Net (16/2; base width 8 stalled for dozens of epochs) on 32 px chips, for
the default landscape (`eoseg.synthetic_context.ContextSpec`: parks 2-3 chips wide)."""
IN_MEMORY_BYTES = 2**30
"""Largest cube `compare_contexts` loads into memory before training."""
SMALL = ContextSpec(size=256, districts=3, district_size=(90, 110), park_size=(40, 56), ring=8)
"""The landscape of ``--small`` and of the test: the default one at half the scale..."""
SMALL_CONFIG = replace(CONFIG, chip_size=16, block_size=32, epochs=60)
"""... with chips of half the size (parks stay 2.5-3.5 chips wide), for 60 epochs: at 40
the multi-context model learnt parks on some seeds only (gain +0.06 to +0.21 mIoU over
seeds 0-2, against +0.19 for seed 2 at 60)."""


@dataclass(frozen=True, slots=True)
class Score:
    """One map's scores.

    Attributes:
        name: ``single``, ``multi`` or ``multi@1`` (see the module docstring).
        miou: mIoU on the truth.
        overall_accuracy: Overall accuracy on the truth.
        iou: Per-class IoU (NaN where a class is absent from map and truth).
        train_seconds: Training seconds of the model (0 for ``multi@1``: ``multi``'s).
        predict_seconds: Prediction seconds.
    """

    name: str
    miou: float
    overall_accuracy: float
    iou: tuple[float, ...]
    train_seconds: float
    predict_seconds: float


@dataclass(frozen=True, slots=True)
class Comparison:
    """Scores of every map, the class names, and the multi-context card's ``contexts``."""

    scores: dict[str, Score]
    classes: tuple[str, ...]
    fusion: dict[str, Any]

    @property
    def gain(self) -> float:
        """mIoU of the fused multi-context map minus that of the single-context model."""
        return self.scores["multi"].miou - self.scores["single"].miou


def compare_contexts(
    cube: Path,
    labels: Path,
    truth: Path,
    workdir: Path,
    *,
    schema: ClassSchema,
    config: TrainConfig = CONFIG,
    contexts: tuple[int, ...] = (1, 2, 4),
    code_map: Path | None = None,
    map_cube: Path | None = None,
    at_context_one: bool = True,
) -> Comparison:
    """Train a single- and a multi-context model on ``labels`` and score their maps.

    Args:
        cube: Cube to train on.
        labels: Labels store to train on.
        truth: Truth to score the maps on (store, class-id GeoTIFF or vector).
        workdir: Folder for models and maps.
        schema: Classes of the labels.
        config: Training options of both models (``contexts`` replaced).
        contexts: Contexts of the multi-context model.
        code_map: Translation of the truth's codes (as ``eoseg evaluate --code-map``).
        map_cube: Cube to map (default ``cube``).
        at_context_one: Also map with the multi-context model at context 1 alone
            (``multi@1``).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    # In memory when small: chip sampling (wider contexts: one window per chip and
    # context) then reads numpy, not a Dask graph per chip; the chips are the same.
    data, targets = open_cube(cube), open_labels(labels)
    if data.nbytes <= IN_MEMORY_BYTES:
        data, targets = data.load(), targets.load()
    scores: dict[str, Score] = {}
    fusion: dict[str, Any] = {}
    for name, ctx in (("single", (1,)), ("multi", contexts)):
        model = workdir / f"model-{name}"
        start = time.perf_counter()
        card = train_model(
            data, targets, model, schema=schema,
            config=replace(config, contexts=ctx), resume=False,
        )  # fmt: skip
        trained = time.perf_counter() - start
        fusion = card.contexts or fusion
        maps = [(name, None)] + ([("multi@1", (1,))] if name == "multi" and at_context_one else [])
        for label, asked in maps:
            classmap = workdir / f"classmap-{label}.zarr"
            start = time.perf_counter()
            predict(
                map_cube or cube, model, classmap, overwrite=True,
                options=PredictOptions(contexts=asked),
            )  # fmt: skip
            seconds = time.perf_counter() - start
            report = evaluate_classmap(classmap, truth, code_map=code_map, workdir=workdir)
            scores[label] = Score(
                label, report.miou, report.overall_accuracy, report.iou,
                round(trained if label == name else 0.0, 1), round(seconds, 1),
            )  # fmt: skip
    return Comparison(scores, schema.names, fusion)


def compare_synthetic(
    root: Path,
    spec: ContextSpec = SMALL,
    config: TrainConfig = SMALL_CONFIG,
    contexts: tuple[int, ...] = (1, 2, 4),
    *,
    at_context_one: bool = True,
) -> Comparison:
    """`compare_contexts` on the context landscape: trained on a scene of ``spec.seed``,
    scored on the map of a scene of the next seed."""
    stores = []
    for part, seed in (("train", spec.seed), ("test", spec.seed + 1)):
        scene = make_context_scene(root / part, replace(spec, seed=seed))
        cube, labels = root / part / "cube.zarr", root / part / "labels.zarr"
        ingest([scene.scene], cube, tile_size=128, overwrite=True)
        rasterize_labels(scene.truth, cube, labels, classes=CONTEXT_CLASSES, overwrite=True)
        stores.append((cube, labels, scene.truth))
    # The test scene's truth as rasterized on its cube: evaluate then reads it as is.
    (cube, labels, _), (test_cube, truth, _) = stores
    return compare_contexts(
        cube, labels, truth, root / "runs", schema=CONTEXT_CLASSES, config=config,
        contexts=contexts, map_cube=test_cube, at_context_one=at_context_one,
    )  # fmt: skip


def compare_demo(
    root: Path, spec: DemoSpec, config: TrainConfig, contexts: tuple[int, ...]
) -> Comparison:
    """`compare_contexts` on the demo landscape: noisy labels, held-out box truth."""
    data = make_demo_data(root / "data", spec)
    cube, labels = root / "cube.zarr", root / "labels.zarr"
    ingest([data.catalog], cube, tile_size=256, overwrite=True)
    rasterize_labels(data.noisy_labels, cube, labels, overwrite=True)
    return compare_contexts(
        cube, labels, data.holdout_truth, root / "runs", schema=DEMO_CLASSES,
        config=config, contexts=contexts,
    )  # fmt: skip


def compare_real(
    sample: Path, root: Path, config: TrainConfig, contexts: tuple[int, ...]
) -> Comparison:
    """`compare_contexts` on a prepared real-sample workspace (read only)."""
    truth = next(p for p in (sample / "heldout.tif", sample / "heldout.gpkg") if p.exists())
    codes = sample / "codes.json"
    return compare_contexts(
        sample / "cube.zarr", sample / "labels.zarr", truth, root / sample.name,
        schema=load_schema(sample / "classes.json"), config=config, contexts=contexts,
        code_map=codes if codes.exists() else None,
    )  # fmt: skip


def format_table(result: Comparison) -> str:
    """The scores as text: one line per map, then the fusion weights."""
    head = f"{'map':8s} {'mIoU':>6s} {'OA':>6s}  IoU " + " ".join(
        f"{n[:9]:>9s}" for n in result.classes
    )
    lines = [head + "  train s  predict s"]
    for s in result.scores.values():
        per = " ".join(f"{'-' if math.isnan(v) else f'{v:.3f}':>9s}" for v in s.iou)
        lines.append(
            f"{s.name:8s} {s.miou:6.3f} {s.overall_accuracy:6.3f}      {per}"
            f"  {s.train_seconds:7.1f}  {s.predict_seconds:9.1f}"
        )
    lines.append(f"gain (multi - single): {result.gain:+.3f} mIoU")
    weights, val = result.fusion.get("weights"), result.fusion.get("val_miou")
    lines.append(f"fusion weights {weights}; validation mIoU {val}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("where", nargs="?", choices=["synthetic", "demo"], default="synthetic")
    parser.add_argument("--real", type=Path, help="a prepared real-sample workspace")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/eoseg-bench-context"))
    parser.add_argument("--small", action="store_true", help="small scenes (about a minute)")
    parser.add_argument("--contexts", default="1,2,4")
    parser.add_argument("--epochs", type=int, help="pretraining epochs (default: the config's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="one JSON document")
    args = parser.parse_args()
    contexts = parse_contexts(args.contexts) or (1, 2, 4)
    config = replace(CONFIG, seed=args.seed, epochs=args.epochs or CONFIG.epochs)
    if args.real:  # the real samples train with the derived defaults
        real = TrainConfig(num_threads=1, seed=args.seed, epochs=args.epochs)
        result = compare_real(args.real, args.workdir, real, contexts)
    elif args.where == "demo":
        side = 2560.0 if args.small else 5120.0
        spec = DemoSpec(seed=args.seed, width_m=side, height_m=side)
        result = compare_demo(args.workdir / "demo", spec, config, contexts)
    else:
        spec = replace(SMALL if args.small else ContextSpec(), seed=args.seed)
        base = SMALL_CONFIG if args.small else CONFIG
        config = replace(base, seed=args.seed, epochs=args.epochs or base.epochs)
        result = compare_synthetic(args.workdir / "synthetic", spec, config, contexts)
    if args.json:
        doc = {"scores": {k: asdict(v) for k, v in result.scores.items()},
               "classes": result.classes, "gain": result.gain, "fusion": result.fusion}  # fmt: skip
        sys.stdout.write(json.dumps(doc, indent=1, default=str) + "\n")
    else:
        sys.stdout.write(format_table(result) + "\n")


if __name__ == "__main__":
    main()
