"""The acceptance ranking of training with noisy labels, on a synthetic case (slow, ~1.5 min).

Noisy OpenStreetMap-like labels everywhere, exact labels on a clean box of 2 % of the
area: on the held-out box, pretraining on the noisy labels and fine-tuning on the clean
ones must beat both training on the noisy labels only and on the clean labels only, with
the same number of epochs for all three.
"""

from __future__ import annotations

import pytest

from eoseg.synthetic import DemoSpec
from eoseg.synthetic_ranking import TrainingScore, compare_trainings
from eoseg.train import TrainConfig

SPEC = DemoSpec(seed=0, clean_fraction=0.02)
"""The demo's 15.4 x 10.2 km: data, ingest and prediction take ~15 s; training dominates."""
CONFIG = TrainConfig(
    epochs=8,
    finetune_epochs=4,
    freeze_encoder_epochs=0,
    chip_size=64,
    base_width=16,
    depth=3,
    train_chips=384,
    val_chips=32,
    batch_size=16,
    seed=0,
    num_threads=2,
    device="cpu",
)
"""Every size explicit (defaults may change); ~25 s per model on 2 CPU cores. No frozen
encoder epochs, as in the defaults: fine-tuning keeps the batch-norm statistics of
pretraining and replays noisy chips instead (`eoseg.train.config`)."""
MARGIN = 0.02
"""Least held-out mIoU by which pretrain + fine-tune must beat each other training."""


def _table(scores: dict[str, TrainingScore]) -> str:
    return "\n".join(
        f"{s.name:18s} held-out mIoU {s.miou:.4f}  outside clean box {s.outside_clean_miou:.4f}"
        f"  IoU {' '.join(f'{v:.2f}' for v in s.iou)}  train {s.seconds:.0f} s"
        for s in scores.values()
    )


@pytest.mark.slow
def test_pretrain_finetune_beats_noisy_only_and_clean_only(tmp_path) -> None:
    """Pretrain + fine-tune beats noisy-only and clean-only by `MARGIN` each.

    The margin is above the run-to-run spread of one setting (about 0.01). Held-out mIoU
    at this budget (noisy-only / clean-only / pretrain + fine-tune), seed 0: 0.864 / 0.653
    / 0.917. Before fine-tuning kept the batch-norm statistics, replayed noisy chips and
    trained at the pretraining rate it was 0.785: fine-tuning underfit the small clean box
    (roads IoU 0.05 after pretraining, 0.46 after fine-tuning). Other seeds are in the
    closing note of issue 4; where the clean box lacks a class, fine-tuning can fall back
    to noisy-only's level.
    """
    scores = compare_trainings(tmp_path, SPEC, CONFIG)
    table = _table(scores)
    print(table)
    best = scores["pretrain+finetune"].miou
    assert best >= scores["clean-only"].miou + MARGIN, f"not ahead of clean-only:\n{table}"
    assert best >= scores["noisy-only"].miou + MARGIN, f"not ahead of noisy-only:\n{table}"
