"""Tests of eoseg.train: losses, metrics, and a tiny end-to-end training."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import xarray as xr
from scipy import ndimage

from eoseg.classes import ClassSchema, LandClass
from eoseg.errors import InvalidParameterError
from eoseg.models import load_model
from eoseg.train import (
    TrainConfig,
    soft_jaccard_loss,
    train_model,
)
from eoseg.train.checkpoint import checkpoint_dir, save_checkpoint
from eoseg.train.run import replay_noisy

SCHEMA = ClassSchema(
    (
        LandClass(0, "water", "#0000ff"),
        LandClass(1, "forest", "#00ff00"),
        LandClass(2, "urban", "#ff0000"),
    )
)
SIGNATURE = np.array(
    [[0.05, 0.06, 0.04, 0.02], [0.04, 0.08, 0.05, 0.35], [0.12, 0.14, 0.16, 0.25]], np.float32
)
FAST = TrainConfig(
    epochs=4,
    finetune_epochs=2,
    freeze_encoder_epochs=1,
    chip_size=64,
    train_chips=48,
    val_chips=16,
    base_width=16,
    depth=3,
    device="cpu",
)
TINY = TrainConfig(
    epochs=2,
    finetune_epochs=2,
    freeze_encoder_epochs=1,
    chip_size=64,
    train_chips=16,
    val_chips=8,
    base_width=4,
    depth=2,
    device="cpu",
    refit=True,  # the clean box is dense: the refit is asked for, to test it and its resume
)


def make_scene(size: int = 256, seed: int = 0) -> tuple[xr.Dataset, xr.DataArray, xr.DataArray]:
    """A 3-class scene with clean labels and noisy labels (10 % of blobs flipped, shifted)."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=(size, size)), 8)
    truth = (field > np.quantile(field, 0.55)).astype(np.uint8)
    yy, xx = np.mgrid[:size, :size]
    for _ in range(8):
        cy, cx = rng.integers(10, size - 10, 2)
        truth[(yy - cy) ** 2 + (xx - cx) ** 2 < 64] = 2
    data = SIGNATURE[truth].transpose(2, 0, 1)[None]
    data = data + rng.normal(0, 0.01, data.shape).astype(np.float32)
    data[:, :, :16, :16] = np.nan
    valid = np.isfinite(data).all(axis=1).astype(np.uint8)
    noisy = np.roll(truth, 2, axis=1)
    noisy[rng.random((size, size)) < 0.05] = 255
    coords = {"y": np.arange(size)[::-1] * 10.0 + 5, "x": np.arange(size) * 10.0 + 5}
    cube = xr.Dataset(
        {"data": (("time", "band", "y", "x"), data), "valid": (("time", "y", "x"), valid)},
        coords={"band": ["B02", "B03", "B04", "B08"], "time": [0], **coords},
    )
    return (
        cube,
        xr.DataArray(noisy, dims=("y", "x"), coords=coords),
        xr.DataArray(truth, dims=("y", "x"), coords=coords),
    )


@pytest.fixture(scope="module")
def scene() -> tuple[xr.Dataset, xr.DataArray, xr.DataArray]:
    return make_scene()


def test_soft_jaccard_loss() -> None:
    target = torch.tensor([[[0, 1], [2, 255]]])
    perfect = torch.nn.functional.one_hot(target.clamp(max=2), 3).permute(0, 3, 1, 2) * 50.0
    assert soft_jaccard_loss(perfect.float(), target).item() == pytest.approx(0.0, abs=1e-3)
    wrong = perfect.roll(1, dims=1)
    assert soft_jaccard_loss(wrong.float(), target).item() > 0.5


def test_config_validation() -> None:
    with pytest.raises(InvalidParameterError, match="not divisible by 2\\*\\*depth = 8"):
        TrainConfig(chip_size=60, depth=3)
    with pytest.raises(InvalidParameterError, match="--epochs must be a whole number >= 1"):
        TrainConfig(epochs=-1)
    with pytest.raises(InvalidParameterError, match="finetune_noisy_share"):
        TrainConfig(finetune_noisy_share=1.0)
    with pytest.raises(InvalidParameterError, match="finetune_norm"):
        TrainConfig(finetune_norm="adapt")  # type: ignore[arg-type]


def test_train_model_learns_and_is_deterministic(scene, tmp_path) -> None:
    cube, noisy, clean = scene
    events: list[tuple[str, int, int, dict]] = []
    fast = dataclasses.replace(FAST, refit=True)  # dense clean labels: asked, not derived
    card = train_model(
        cube, noisy, tmp_path / "a", schema=SCHEMA, config=fast, finetune_labels=clean,
        progress=lambda *e: events.append(e),
    )  # fmt: skip
    assert card.metrics["val_miou"] > 0.6 and card.metrics["val_stage"] == "finetune"
    assert card.sampling["chip_size"] == card.chip_size == 64
    assert 1 <= card.metrics["finetune"]["best_epoch"] <= 2
    assert len(card.metrics["pretrain"]["val_miou"]) == 4
    assert len(card.metrics["finetune"]["val_miou"]) == 2
    assert card.bands == ("B02", "B03", "B04", "B08")
    assert card.mean[3] > card.mean[0]  # NIR brighter: statistics from valid pixels
    assert card.parameters > 0 and card.flops_per_pixel > 0 and card.parent is None
    # fine-tuning is refit on all the clean labels for the epochs it ran
    assert {e[0] for e in events} == {"sample", "pretrain", "finetune", "refit"}
    assert card.sampling["refit_chips"] > 0
    assert len(card.metrics["refit"]["train_loss"]) == len(card.metrics["finetune"]["train_loss"])
    assert "figures were measured before the refit" in card.metrics["val_note"]
    assert events[-1][1] == events[-1][2]
    assert "val_miou" in events[-1][3]
    json.loads((tmp_path / "a" / "model.json").read_text(), parse_constant=pytest.fail)
    _, loaded = load_model(tmp_path / "a")
    assert loaded.version == card.version
    again = train_model(
        cube, noisy, tmp_path / "b", schema=SCHEMA, config=fast, finetune_labels=clean
    )
    assert again.version == card.version
    assert again.metrics == card.metrics
    assert torch.get_num_threads() >= 1 and not torch.are_deterministic_algorithms_enabled()


def test_train_refuses_labels_outside_schema(scene, tmp_path) -> None:
    cube, _, clean = scene
    two = ClassSchema(SCHEMA.classes[:2])
    with pytest.raises(InvalidParameterError, match=r"class ids \[2\]"):
        train_model(cube, clean, tmp_path / "m", schema=two, config=FAST)
    assert not (tmp_path / "m").exists()


class InterruptError(Exception):
    pass


def stop_after(stage: str, epoch: int):  # type: ignore[no-untyped-def]
    def progress(s: str, step: int, total: int, info: dict) -> None:
        if s == stage and "val_miou" in info and info["epoch"] == epoch:
            raise InterruptError

    return progress


@pytest.fixture(scope="module")
def tiny_reference(scene, tmp_path_factory):  # type: ignore[no-untyped-def]
    cube, noisy, clean = scene
    out = tmp_path_factory.mktemp("ref") / "m"
    return train_model(cube, noisy, out, schema=SCHEMA, config=TINY, finetune_labels=clean)


@pytest.mark.parametrize(
    ("stage", "epoch"), [("pretrain", 1), ("finetune", 1), ("refit", 1)], ids=str
)
def test_resume_equals_uninterrupted_run(scene, tiny_reference, tmp_path, stage, epoch) -> None:
    cube, noisy, clean = scene
    out = tmp_path / "m"
    kw = {"schema": SCHEMA, "config": TINY, "finetune_labels": clean}
    with pytest.raises(InterruptError):
        train_model(cube, noisy, out, progress=stop_after(stage, epoch), **kw)
    assert (checkpoint_dir(out) / "state.json").is_file() and not out.exists()
    events: list[tuple] = []
    card = train_model(cube, noisy, out, progress=lambda *e: events.append(e), **kw)
    assert card.version == tiny_reference.version
    assert card.metrics == tiny_reference.metrics
    assert not checkpoint_dir(out).exists()
    # the resumed run did not repeat the epochs before the interruption
    assert all(e[3]["epoch"] > epoch for e in events if e[0] == stage and "epoch" in e[3])
    if stage != "refit":  # (the refit may have had one epoch only)
        assert min(e[3]["epoch"] for e in events if e[0] == stage) == epoch + 1


def test_resume_ignores_checkpoint_of_other_config(scene, tiny_reference, tmp_path) -> None:
    cube, noisy, clean = scene
    out = tmp_path / "m"
    save_checkpoint(checkpoint_dir(out), {"fingerprint": "other", "stage": "finetune"})
    card = train_model(cube, noisy, out, schema=SCHEMA, config=TINY, finetune_labels=clean)
    assert card.version == tiny_reference.version
    assert not checkpoint_dir(out).exists()


def test_class_weights_noisy_loss_and_aspp_train(scene, tmp_path) -> None:
    cube, noisy, clean = scene
    config = dataclasses.replace(
        TINY, epochs=1, finetune_epochs=1, class_weights="balanced", noisy_loss="gce",
        context="aspp", train_chips=8, val_chips=4,
    )  # fmt: skip
    card = train_model(cube, noisy, tmp_path / "m", schema=SCHEMA, config=config,
                       finetune_labels=clean, resume=False)  # fmt: skip
    assert card.architecture["name"] == "unet-aspp"
    _, loaded = load_model(tmp_path / "m")
    assert loaded.version == card.version
    with pytest.raises(InvalidParameterError, match="3 classes"):
        train_model(cube, noisy, tmp_path / "w", schema=SCHEMA,
                    config=dataclasses.replace(config, class_weights=(1.0, 2.0)))  # fmt: skip


def test_config_validates_loss_options() -> None:
    with pytest.raises(InvalidParameterError, match="noisy_loss"):
        TrainConfig(noisy_loss="mae")  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match="gce_q"):
        TrainConfig(gce_q=0.0)
    with pytest.raises(InvalidParameterError, match="class_weights"):
        TrainConfig(class_weights=(1.0, -1.0))


def test_rehearse_missing_keeps_only_the_missing_classes() -> None:
    from eoseg.sampling import ChipSet
    from eoseg.train import rehearse_missing

    def chips(labels: list[list[int]]) -> ChipSet:
        y = np.array([[row] * 4 for row in labels], dtype=np.uint8)  # (N, 4, len(row))
        n = len(labels)
        return ChipSet(
            x=np.zeros((n, 1, *y.shape[1:]), np.float32),
            y=y,
            origins=np.zeros((n, 2), np.int64),
            bands=("B1",),
        )

    clean = chips([[0, 0, 1, 1]])
    noisy = chips([[0, 1, 1, 1], [2, 2, 0, 1], [255, 2, 1, 0]])
    out = rehearse_missing(clean, noisy, 3)
    assert len(out) == 3  # the clean chip plus the two noisy chips showing class 2
    np.testing.assert_array_equal(out.y[1][0], [2, 2, 255, 255])
    np.testing.assert_array_equal(out.y[2][0], [255, 2, 255, 255])
    assert rehearse_missing(noisy, clean, 3) is noisy  # nothing missing: unchanged


def _norm_buffers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if "running_" in k or "num_batches" in k}


@pytest.mark.parametrize("norm", ["frozen", "train"], ids=str)
def test_finetune_norm_keeps_or_adapts_batchnorm_statistics(scene, tmp_path, norm) -> None:
    """Pretraining is the same with or without a fine-tuning stage after it, so the
    batch-norm statistics of the pretrained model are those a frozen fine-tune must keep."""
    cube, noisy, clean = scene
    # (no refit: the pretrained model must be the pretraining stage's own weights)
    config = dataclasses.replace(TINY, freeze_encoder_epochs=0, finetune_norm=norm, refit=False)
    pre = train_model(cube, noisy, tmp_path / "pre", schema=SCHEMA,
                      config=dataclasses.replace(config, finetune_epochs=0))  # fmt: skip
    tuned = train_model(cube, noisy, tmp_path / "ft", schema=SCHEMA, config=config,
                        finetune_labels=clean)  # fmt: skip
    assert tuned.metrics["pretrain"] == pre.metrics["pretrain"]
    before, after = load_model(tmp_path / "pre")[0], load_model(tmp_path / "ft")[0]
    weights_moved = not torch.equal(before.head.weight, after.head.weight)
    stats = _norm_buffers(before), _norm_buffers(after)
    kept = all(torch.equal(stats[0][k], stats[1][k]) for k in stats[0])
    assert weights_moved and kept == (norm == "frozen")


def test_replay_noisy_swaps_a_share_of_chips() -> None:
    from eoseg.sampling import ChipSet

    def chips(value: int, n: int) -> ChipSet:
        return ChipSet(
            x=np.full((n, 1, 4, 4), value, np.float32),
            y=np.full((n, 4, 4), value, np.uint8),
            origins=np.arange(2 * n, dtype=np.int64).reshape(n, 2),
            bands=("B1",),
        )

    clean, noisy = chips(0, 8), chips(1, 20)
    out = replay_noisy(clean, noisy, 0.25, seed=3)
    assert len(out) == 8 and (out.y[:, 0, 0] == 1).sum() == 2
    assert np.array_equal(out.x[:, 0, 0, 0], out.y[:, 0, 0])  # chips keep their labels
    again = replay_noisy(clean, noisy, 0.25, seed=3)
    assert np.array_equal(again.origins, out.origins)
    assert replay_noisy(clean, noisy, 0.0, seed=3) is clean


def test_validation_miou_counts_only_classes_present_in_the_reference() -> None:
    """A model predicting class 0 on the left half of each chip and class 1 on the right,
    on chips labelled class 0 only: class 1 is absent from the reference, so it does not
    count (it would halve the figure); IoU of class 0 is 1/2."""
    from eoseg.models.card import ModelCard
    from eoseg.sampling import ChipSet
    from eoseg.train import evaluate

    class Halves(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = torch.zeros(x.shape[0], 3, *x.shape[2:])
            half = x.shape[-1] // 2
            logits[:, 0, :, :half] = 1.0
            logits[:, 1, :, half:] = 1.0
            return logits

    y = np.zeros((3, 8, 8), np.uint8)
    y[:, :2] = 255  # unlabelled rows do not count
    chips = ChipSet(np.zeros((3, 1, 8, 8), np.float32), y, np.zeros((3, 2), np.int64), ("b",))
    card = ModelCard("m", ("b",), (0.0,), (1.0,), SCHEMA, 8, {"name": "unet"})
    out = evaluate(Halves(), chips, card)
    assert out["val_miou"] == pytest.approx(0.5) and out["val_accuracy"] == pytest.approx(0.5)
    assert out["val_iou"] == {"water": pytest.approx(0.5), "forest": None, "urban": None}


def test_stage_keeps_its_best_epoch_and_may_stop_early(scene, tmp_path) -> None:
    cube, noisy, _ = scene
    config = dataclasses.replace(TINY, epochs=8, finetune_epochs=0, patience=1, lr=0.05)
    card = train_model(cube, noisy, tmp_path / "m", schema=SCHEMA, config=config)
    history = card.metrics["pretrain"]
    scores, best = history["val_miou"], history["best_epoch"]
    assert scores[best - 1] == max(scores) and best == max(
        i + 1 for i, v in enumerate(scores) if v == max(scores)
    )  # ties go to the later epoch
    assert len(scores) - best == 1 and len(scores) < 8  # stopped after an epoch without progress
    # the saved weights are the best epoch's: the final figure is that epoch's figure
    assert card.metrics["val_miou"] == pytest.approx(scores[best - 1], abs=1e-12)
    # keep_best off and no weight average: the saved weights are the last epoch's
    plain = dataclasses.replace(config, keep_best=False, patience=None, average_from=1.0)
    last = train_model(cube, noisy, tmp_path / "last", schema=SCHEMA, config=plain)
    assert last.metrics["pretrain"]["best_epoch"] is None
    assert "averaged_steps" not in last.metrics["pretrain"]
    assert last.metrics["val_miou"] == pytest.approx(last.metrics["pretrain"]["val_miou"][-1])
