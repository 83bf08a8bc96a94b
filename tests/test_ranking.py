"""The acceptance ranking of training with noisy labels, on a synthetic case (slow, ~4 min).

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
"""The demo's 15.4 x 10.2 km: data, ingest and the maps of the held-out tiles take ~20 s."""
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
    refit=False,
    members=1,
)
"""Every size explicit (defaults may change); training dominates the test's time. No frozen
encoder epochs, as in the defaults: fine-tuning keeps the batch-norm statistics of
pretraining and replays noisy chips instead (`eoseg.train.config`). No refit and one
network: derived from the labels, they gave clean-only (seed 1, 64 px chips: its clean box
counted as 237 sparse regions) a refit and three networks, six times the others' budget."""
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
    (noisy-only / clean-only / pretrain + fine-tune; p+f ahead of each):

    ======  ====  ============================  ================================
    chips   seed  held-out mIoU                 p+f ahead by
    ======  ====  ============================  ================================
    64 px   0     0.868 / 0.703 / 0.941         +0.073 / +0.238 (the test)
    64 px   1     0.849 / 0.562 / 0.909         +0.060 / +0.347
    32 px   0     0.864 / 0.551 / 0.905         +0.042 / +0.354
    32 px   1     0.876 / 0.581 / 0.843         -0.034 / +0.262
    32 px   2     0.794 / 0.718 / 0.869         +0.075 / +0.151
    48 px   1     0.887 / 0.554 / 0.882         -0.005 / +0.328
    ======  ====  ============================  ================================

    Chips of 32 px (a quarter of the pixels) would be much cheaper, but lose seed 1, which 64 px
    chips keep: the test stays at 64 px. Where the clean box lacks a class (water, seeds 0
    and 1), fine-tuning can fall back to noisy-only's level. Before fine-tuning kept the
    batch-norm statistics, replayed noisy chips and trained at the pretraining rate, seed 0
    gave 0.785 for pretrain + fine-tune: fine-tuning underfit the small clean box (roads
    IoU 0.05 after pretraining, 0.46 after fine-tuning).
    """
    scores = compare_trainings(tmp_path, SPEC, CONFIG, whole_map=False)
    table = _table(scores)
    print(table)
    best = scores["pretrain+finetune"].miou
    assert best >= scores["clean-only"].miou + MARGIN, f"not ahead of clean-only:\n{table}"
    assert best >= scores["noisy-only"].miou + MARGIN, f"not ahead of noisy-only:\n{table}"
