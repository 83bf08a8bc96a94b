"""Noisy-only vs clean-only vs pretrain-on-noisy + fine-tune-on-clean, on held-out truth.

The synthetic landscape has OpenStreetMap-like noisy labels everywhere (features shifted by
``DemoSpec.label_shift_m``, ``DemoSpec.omission_rate`` of them dropped) and clean labels over
a small box (``--clean-fraction`` of the area). Three models get the same training budget and
are scored on a disjoint held-out box (and on all truth outside the clean box): the
pretrain + fine-tune model should beat both others (`eoseg.synthetic_ranking`).

Usage: python benchmarks/noisy_labels.py [--workdir DIR] [--seed 0] [--small]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from eoseg.classes import DEMO_CLASSES
from eoseg.synthetic import DemoSpec
from eoseg.synthetic_ranking import compare_trainings
from flows.demo import DEMO_TRAINING


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/eoseg-bench-noisy"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--small", action="store_true", help="a 5 km x 5 km landscape")
    parser.add_argument(
        "--clean-fraction",
        type=float,
        default=DemoSpec().clean_fraction,
        help="share of the area with clean labels",
    )
    parser.add_argument("--finetune-epochs", type=int, default=DEMO_TRAINING.finetune_epochs)
    parser.add_argument("--noisy-loss", choices=["ce", "gce", "bootstrap"], default="ce")
    args = parser.parse_args()
    spec = DemoSpec(seed=args.seed, clean_fraction=args.clean_fraction)
    if args.small:
        spec = replace(spec, width_m=5120.0, height_m=5120.0)
    config = replace(
        DEMO_TRAINING,
        seed=args.seed,
        finetune_epochs=args.finetune_epochs,
        noisy_loss=args.noisy_loss,
    )
    scores = compare_trainings(args.workdir, spec, config)
    sys.stdout.write(
        f"landscape {spec.width_m / 1000:.1f} x {spec.height_m / 1000:.1f} km, "
        f"label shift {spec.label_shift_m} m, omission {spec.omission_rate:.0%}, "
        f"clean box {spec.clean_fraction:.0%} of the area\n"
    )
    sys.stdout.write(
        f"{'training':20s} {'mIoU':>7s} {'OA':>7s}  per-class IoU "
        f"({', '.join(DEMO_CLASSES.names)})  mIoU outside clean box  train s\n"
    )
    for s in scores.values():
        per = " ".join(f"{v:.2f}" for v in s.iou)
        sys.stdout.write(
            f"{s.name:20s} {s.miou:7.4f} {s.overall_accuracy:7.4f}  {per}  "
            f"{s.outside_clean_miou:.4f}  {s.seconds:.0f}\n"
        )
    best = max(scores.values(), key=lambda s: s.miou).name
    sys.stdout.write(f"best: {best}\n")


if __name__ == "__main__":
    main()
