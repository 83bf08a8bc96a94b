"""Training: pretrain a U-Net on noisy labels, fine-tune it on a small clean set.

Modules: `config` (options and per-stage specs), `run` (a training run: stages,
checkpoints, the model folder), `chips` (the chips of each stage and context),
`contexts` (wider contexts: their chips and fusion weights), `loop` (one stage's epochs
and validation), `augment`, `losses`, `checkpoint`, `stores` (training from stores on
disk, behind the CLI and flows).
"""

from eoseg.train.config import TrainConfig
from eoseg.train.loop import evaluate
from eoseg.train.losses import soft_jaccard_loss
from eoseg.train.run import Progress, rehearse_missing, replay_noisy, train_model
from eoseg.train.stores import train_from_stores

__all__ = [
    "Progress",
    "TrainConfig",
    "evaluate",
    "rehearse_missing",
    "replay_noisy",
    "soft_jaccard_loss",
    "train_from_stores",
    "train_model",
]
