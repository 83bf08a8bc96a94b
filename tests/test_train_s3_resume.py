"""Training to object storage resumes after a kill (eoseg.train.stores + eoseg.storage):
the model trains in a local folder kept per URL, so a rerun finds the checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from eoseg.models.card import CARD_FILE
from eoseg.storage import resolve, staging_dir
from eoseg.train import TrainConfig, train_from_stores
from eoseg.train.checkpoint import load_checkpoint
from tests.s3 import S3

TINY = TrainConfig(
    epochs=2,
    finetune_epochs=0,
    chip_size=32,
    train_chips=8,
    val_chips=4,
    batch_size=4,
    base_width=8,
    depth=2,
    num_threads=1,
    device="cpu",
    precision="fp32",
    refit=False,
)


class InterruptError(Exception):
    pass


def _stop_after_first_epoch(stage: str, step: int, total: int, info: dict[str, Any]) -> None:
    if stage == "pretrain" and "val_miou" in info and info["epoch"] == 1:
        raise InterruptError


def test_training_to_s3_resumes_from_its_checkpoint(
    cube_path: Path, labels_path: Path, s3: S3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    reference = train_from_stores(cube_path, labels_path, tmp_path / "ref", config=TINY)
    url = s3.url("models/lc")
    target = resolve(url)
    with pytest.raises(InterruptError):
        train_from_stores(
            cube_path, labels_path, url, config=TINY, progress=_stop_after_first_epoch
        )
    # nothing published; the checkpoint of epoch 1 waits in the URL's staging folder
    assert not target.exists()
    saved = load_checkpoint(staging_dir(target) / "lc.ckpt")
    assert saved is not None and (saved["stage"], saved["epoch"]) == ("pretrain", 1)

    events: list[tuple[Any, ...]] = []
    card = train_from_stores(
        cube_path, labels_path, url, config=TINY, progress=lambda *e: events.append(e)
    )
    assert card.version == reference.version
    assert card.metrics == reference.metrics
    epochs = [e[3]["epoch"] for e in events if e[0] == "pretrain" and "epoch" in e[3]]
    assert epochs and min(epochs) == 2  # epoch 1 was not trained again
    published = json.loads(target.child(CARD_FILE).read_text())
    assert published["version"] == reference.version
    assert not staging_dir(target).exists()  # cleaned up once uploaded
