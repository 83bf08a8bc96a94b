"""Noisy-only vs clean-only vs pretrain-on-noisy + fine-tune-on-clean, on held-out truth.

The synthetic landscape has OpenStreetMap-like noisy labels everywhere (features shifted by
``--shift`` metres, ``--omission`` of them dropped) and clean labels over a small box
(``DemoSpec.clean_fraction`` of the area). Three models get the same training budget and are
scored on a disjoint held-out box: the pretrain + fine-tune model should beat both others.

Usage: python benchmarks/noisy_labels.py [--workdir DIR] [--seed 0] [--small]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from eoseg.classes import DEMO_CLASSES
from eoseg.cube import ingest, open_cube
from eoseg.labels import open_labels, rasterize_labels
from eoseg.predict import predict
from eoseg.publish import evaluate_classmap
from eoseg.synthetic import DemoSpec, make_demo_data
from eoseg.train import train_model
from flows.demo import DEMO_TRAINING


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/eoseg-bench-noisy"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--small", action="store_true", help="a 5 km x 5 km landscape")
    parser.add_argument(
        "--clean-fraction",
        type=float,
        default=DemoSpec.clean_fraction,
        help="share of the area with clean labels",
    )
    parser.add_argument("--finetune-epochs", type=int, default=DEMO_TRAINING.finetune_epochs)
    parser.add_argument("--noisy-loss", choices=["ce", "gce", "bootstrap"], default="ce")
    args = parser.parse_args()
    root = args.workdir
    spec = DemoSpec(seed=args.seed, clean_fraction=args.clean_fraction)
    if args.small:
        spec = replace(spec, width_m=5120.0, height_m=5120.0)
    data = make_demo_data(root / "data", spec)
    cube_path = root / "cube.zarr"
    ingest([data.catalog], cube_path, tile_size=512, overwrite=True)
    stores = {}
    for kind, source in (
        ("noisy", data.noisy_labels),
        ("clean", data.clean_labels),
        ("holdout", data.holdout_truth),
    ):
        stores[kind] = root / f"labels-{kind}.zarr"
        rasterize_labels(source, cube_path, stores[kind], overwrite=True)
    cube = open_cube(cube_path)
    base = replace(
        DEMO_TRAINING,
        seed=args.seed,
        finetune_epochs=args.finetune_epochs,
        noisy_loss=args.noisy_loss,
    )
    total = base.epochs + base.finetune_epochs
    runs = {
        # Same number of epochs for all three, so the comparison is about labels, not budget.
        "noisy-only": (stores["noisy"], None, replace(base, epochs=total, finetune_epochs=0)),
        "clean-only": (
            stores["clean"],
            None,
            replace(base, epochs=total, finetune_epochs=0, noisy_loss="ce"),
        ),
        "pretrain+finetune": (stores["noisy"], stores["clean"], base),
    }
    rows = []
    for name, (labels, finetune, config) in runs.items():
        start = time.perf_counter()
        out = root / f"model-{name}"
        train_model(
            cube,
            open_labels(labels),
            out,
            schema=DEMO_CLASSES,
            config=config,
            finetune_labels=open_labels(finetune) if finetune else None,
        )
        seconds = time.perf_counter() - start
        cmap = root / f"classmap-{name}.zarr"
        predict(cube_path, out, cmap, overwrite=True)
        report = evaluate_classmap(cmap, stores["holdout"], workdir=root)
        rows.append((name, report.miou, report.overall_accuracy, report.iou, seconds))
    sys.stdout.write(
        f"landscape {spec.width_m / 1000:.1f} x {spec.height_m / 1000:.1f} km, "
        f"label shift {spec.label_shift_m} m, omission {spec.omission_rate:.0%}, "
        f"clean box {spec.clean_fraction:.0%} of the area\n"
    )
    sys.stdout.write(
        f"{'training':20s} {'mIoU':>7s} {'OA':>7s}  per-class IoU "
        f"({', '.join(DEMO_CLASSES.names)})  train s\n"
    )
    for name, miou, oa, iou, seconds in rows:
        per = " ".join(f"{v:.2f}" for v in iou)
        sys.stdout.write(f"{name:20s} {miou:7.4f} {oa:7.4f}  {per}  {seconds:.0f}\n")
    best = max(rows, key=lambda r: r[1])[0]
    sys.stdout.write(f"best: {best}\n")


if __name__ == "__main__":
    main()
