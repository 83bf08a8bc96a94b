"""Tests of eoseg.train.plan and eoseg.train.survey: sizes, split and counts from the labels."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import xarray as xr
from scipy import ndimage

from eoseg.classes import IGNORE_ID, generic_schema
from eoseg.errors import InvalidParameterError, NoOverlapError
from eoseg.sampling import sample_chips
from eoseg.train import TrainConfig
from eoseg.train.network import resolve_network
from eoseg.train.normalise import cube_band_stats
from eoseg.train.plan import EPOCH_RANGE, plan_sampling
from eoseg.train.run import sample_training_chips
from eoseg.train.survey import survey_labels

BANDS = ["B02", "B03", "B04", "B08"]


def _coords(h: int, w: int) -> dict[str, np.ndarray]:
    return {"y": 5_300_000 - np.arange(h) * 10.0 - 5, "x": 600_000 + np.arange(w) * 10.0 + 5}


def labels_of(arr: np.ndarray) -> xr.DataArray:
    return xr.DataArray(arr.astype(np.uint8), dims=("y", "x"), coords=_coords(*arr.shape))


def cube_for(labels: np.ndarray, seed: int = 0) -> xr.Dataset:
    """A one-date, four-band cube whose reflectance tells the classes apart."""
    rng = np.random.default_rng(seed)
    h, w = labels.shape
    level = np.where(labels == IGNORE_ID, 0, labels).astype(np.float32)
    data = 0.05 + 0.1 * level[None, None] + rng.normal(0, 0.01, (1, 4, h, w)).astype(np.float32)
    return xr.Dataset(
        {
            "data": (("time", "band", "y", "x"), data),
            "valid": (("time", "y", "x"), np.ones((1, h, w), np.uint8)),
        },
        coords={"band": BANDS, "time": [0], **_coords(h, w)},
    )


def dense(size: int, seed: int = 0) -> np.ndarray:
    """Every pixel labelled: blobs of three classes."""
    field = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=(size, size)), 8)
    return np.digitize(field, np.quantile(field, [0.33, 0.66])).astype(np.uint8)


def squares(size: int, n: int, seed: int = 0, classes: int = 4) -> np.ndarray:
    """``n`` squares of 3-8 px, at least 40 px apart, on an unlabelled scene."""
    rng = np.random.default_rng(seed)
    out = np.full((size, size), IGNORE_ID, np.uint8)
    centres: list[np.ndarray] = []
    while len(centres) < n:
        c = rng.integers(20, size - 20, 2)
        if all(np.abs(c - d).max() > 40 for d in centres):
            side = int(rng.integers(3, 9))
            out[c[0] : c[0] + side, c[1] : c[1] + side] = len(centres) % classes
            centres.append(c)
    return out


def test_dense_labels_keep_the_former_defaults() -> None:
    """Labels over a 1024 px scene: 256 px chips, blocks of two chips, 25 % labelled,
    128 training and 32 validation chips, as before the sizes were derived."""
    plan = plan_sampling({"pretrain": labels_of(dense(1024))}, TrainConfig())
    stage = plan.stage("pretrain")
    assert (plan.chip_size, plan.block_size) == (256, 512)
    assert (stage.min_labelled, stage.train_chips, stage.val_chips) == (0.25, 128, 32)
    assert len(plan.split.val_blocks) == 1 and plan.holdout is None
    record = plan.to_dict()
    assert record["derived"] == ["chip_size", "block_size", "min_labelled", "train_chips",
                                 "val_chips", "epochs", "refit"]  # fmt: skip
    # dense labels: validation holds out little of them, so no refit after it
    assert plan.refit_chips == 0 and stage.dense
    # 128 chips are 16 steps of 8: about 300 steps are 19 epochs.
    assert record["stages"]["pretrain"]["epochs"] == stage.epochs == 19
    assert any(line.startswith("chip_size 256") for line in record["why"])


def test_sparse_squares_get_small_chips_and_labelled_validation() -> None:
    lab = squares(400, 12)
    plan = plan_sampling({"pretrain": labels_of(lab)}, TrainConfig())
    stage = plan.stage("pretrain")
    assert plan.chip_size == 32 and plan.block_size in (32, 64)
    assert 1 / 32**2 <= stage.min_labelled < 0.02
    assert stage.val_regions >= 1 and stage.train_regions + stage.val_regions == 12
    assert 32 <= stage.train_chips <= 48 and stage.val_chips >= 8
    for block in plan.split.val_blocks:  # every validation block holds labels
        r0, r1, c0, c1 = plan.split.bounds(block)
        assert (lab[r0:r1, c0:c1] != IGNORE_ID).any()
    chips = sample_chips(cube_for(lab), labels_of(lab), chip_size=plan.chip_size, count=20,
                         seed=0, split=plan.split, part="val",
                         min_labelled=stage.min_labelled)  # fmt: skip
    assert len(chips) == 20


def test_larger_polygons_get_larger_chips() -> None:
    lab = np.full((600, 600), IGNORE_ID, np.uint8)
    for i, (r, c) in enumerate([(50, 50), (50, 350), (300, 80), (330, 400), (480, 250)]):
        lab[r : r + 45, c : c + 45] = i % 3
    plan = plan_sampling({"pretrain": labels_of(lab)}, TrainConfig())
    assert plan.chip_size == 128  # a 45 px square fills 12 % of 128 px, 3 % of 256 px


def test_finetune_labels_in_a_small_box_get_validation() -> None:
    """Noisy labels everywhere, clean ones on a 200 px box: the split draws validation
    blocks among the box's blocks too, so the fine-tuned model has a figure."""
    noisy = dense(768, seed=1)
    clean = np.full_like(noisy, IGNORE_ID)
    clean[300:500, 300:500] = dense(768)[300:500, 300:500]
    plan = plan_sampling(
        {"pretrain": labels_of(noisy), "finetune": labels_of(clean)}, TrainConfig()
    )
    assert plan.stage("finetune").val_regions >= 1 and plan.stage("finetune").val_note is None
    boxes = [plan.split.bounds(b) for b in plan.split.val_blocks]
    assert any(r0 < 500 and r1 > 300 and c0 < 500 and c1 > 300 for r0, r1, c0, c1 in boxes)


def test_labels_in_one_block_hold_out_whole_regions() -> None:
    """Three polygons close together and a 256 px chip on a 400 px scene: one block, so
    whole regions are held out; no training chip sees their labels."""
    lab = np.full((400, 400), IGNORE_ID, np.uint8)
    lab[100:108, 100:108], lab[100:106, 130:136], lab[140:147, 110:117] = 0, 1, 0
    config = TrainConfig(chip_size=256)
    plan = plan_sampling({"pretrain": labels_of(lab)}, config)
    assert plan.holdout is not None and plan.to_dict()["split"] == "regions"
    held = np.zeros(lab.shape, bool)
    r0, r1, c0, c1 = plan.holdout.bounds
    held[r0:r1, c0:c1] = plan.holdout.mask
    assert 0 < held.sum() < (lab != IGNORE_ID).sum() and (lab[held] != IGNORE_ID).all()
    sets, _ = sample_training_chips(cube_for(lab), {"pretrain": labels_of(lab)}, plan, config,
                                    generic_schema(2))  # fmt: skip
    train, val = sets["pretrain"]
    assert len(train) and len(val)
    for chips, want_held in ((train, False), (val, True)):
        for (r, c), y in zip(chips.origins, chips.y, strict=True):
            labelled = y != IGNORE_ID
            assert (held[r : r + 256, c : c + 256][labelled] == want_held).all()


@pytest.mark.parametrize(
    ("options", "flag"),
    [({"chip_size": 512}, "--chip-size"), ({"chip_size": 64, "block_size": 32}, "--block-size")],
    ids=["chip-over-scene", "block-under-chip"],
)
def test_explicit_sizes_that_cannot_fit_name_their_flag(options, flag) -> None:
    with pytest.raises(InvalidParameterError, match=flag):
        plan_sampling({"pretrain": labels_of(squares(400, 6))}, TrainConfig(**options))


def test_explicit_min_labelled_out_of_reach_names_its_flag() -> None:
    lab = squares(200, 4)
    config = TrainConfig(min_labelled=0.5, depth=3)
    plan = plan_sampling({"pretrain": labels_of(lab)}, config)
    assert plan.stage("pretrain").min_labelled == 0.5
    with pytest.raises(InvalidParameterError, match="--min-labelled"):
        sample_training_chips(cube_for(lab), {"pretrain": labels_of(lab)}, plan, config,
                              generic_schema(4))  # fmt: skip


def test_labels_without_a_labelled_pixel_are_refused() -> None:
    empty = np.full((100, 100), IGNORE_ID, np.uint8)
    with pytest.raises(NoOverlapError, match="no labelled pixel"):
        plan_sampling({"pretrain": labels_of(empty)}, TrainConfig())


def test_validation_can_be_turned_off() -> None:
    plan = plan_sampling({"pretrain": labels_of(squares(400, 8))}, TrainConfig(val_fraction=0))
    assert not plan.split.val_blocks and plan.stage("pretrain").val_chips == 0
    assert "--val-fraction" in (plan.stage("pretrain").val_note or "")


@pytest.mark.parametrize("block", [32, 64, 96], ids=str)
def test_survey_counts_blocks_and_regions(block) -> None:
    lab = np.full((230, 170), IGNORE_ID, np.uint8)
    lab[5:9, 5:9] = 1
    lab[100:140, 150:170] = 2
    lab[200:230, 20:22] = 0
    lab[40:44, 60:64] = 1
    survey = survey_labels(labels_of(lab), [32, 64], seed=0)
    assert survey.labelled == int((lab != IGNORE_ID).sum()) and survey.regions == 4
    assert sorted(survey.region_area) == [16, 16, 60, 800]
    rows, cols = max(1, 230 // block), max(1, 170 // block)
    want = {
        (min(r // block, rows - 1), min(c // block, cols - 1))
        for r, c in np.argwhere(lab != IGNORE_ID)
    }
    assert survey.blocks(block) == want
    corner = np.flatnonzero((survey.region_pixel < 10).all(axis=1))  # the 4 px square at 5, 5
    assert survey.shares[32][corner] == pytest.approx(16 / 32**2)


def test_derived_values_follow_explicit_block_size() -> None:
    base = TrainConfig()
    plan = plan_sampling(
        {"pretrain": labels_of(dense(512))}, dataclasses.replace(base, block_size=80)
    )
    assert plan.block_size == 80 and plan.chip_size == 64  # the largest chip a block holds


def test_four_polygons_on_a_large_scene_train_with_an_explicit_chip() -> None:
    """The issue's case: a 2000 px scene with four class polygons and --chip-size 64 used
    to find no chip 25 % labelled; the derived labelled share lets every polygon give
    chips, and validation holds one of them."""
    lab = np.full((2000, 2000), IGNORE_ID, np.uint8)
    for k, (r, c) in enumerate([(300, 400), (900, 1500), (1500, 300), (1700, 1700)]):
        lab[r : r + 12, c : c + 15] = k
    config = TrainConfig(chip_size=64)
    plan = plan_sampling({"pretrain": labels_of(lab)}, config)
    stage = plan.stage("pretrain")
    assert stage.min_labelled <= 0.5 * 180 / 64**2 and stage.val_regions == 1
    sets, _ = sample_training_chips(cube_for(lab), {"pretrain": labels_of(lab)}, plan, config,
                                    generic_schema(4))  # fmt: skip
    train, val = sets["pretrain"]
    assert len(train) == stage.train_chips == 32 and len(val) == stage.val_chips == 8
    assert len(np.unique(train.y[train.y != IGNORE_ID])) == 3  # the three training polygons


def test_few_small_polygons_train_more_epochs_and_given_epochs_stay() -> None:
    """32 chips of a few squares are 4 steps an epoch: the derived epochs reach the
    most (60), where 10 epochs would stop after 40 steps; given epochs are kept."""
    lab = labels_of(squares(400, 8))
    derived = plan_sampling({"pretrain": lab}, TrainConfig()).stage("pretrain")
    assert derived.train_chips == 32 and derived.epochs == EPOCH_RANGE[1] == 60
    given = plan_sampling({"pretrain": lab}, TrainConfig(epochs=7))
    assert given.stage("pretrain").epochs == 7 and "epochs" not in given.derived
    assert any(line == "epochs 7: given" for line in given.why)


def test_cpu_defaults_give_a_small_network_and_chips_of_at_most_64_px() -> None:
    """On the CPU the defaults are a 16/3 U-Net and 64 px chips; on CUDA 32/4 and
    256 px; explicit sizes win over either."""
    cpu = resolve_network(TrainConfig(), "cpu")
    gpu = resolve_network(TrainConfig(), "cuda")
    assert (cpu.base_width, cpu.depth, gpu.base_width, gpu.depth) == (16, 3, 32, 4)
    given = resolve_network(TrainConfig(base_width=8, depth=2), "cuda")
    assert (given.base_width, given.depth) == (8, 2)
    plan = plan_sampling({"pretrain": labels_of(dense(1024))}, cpu, max_chip=64)
    assert (plan.chip_size, plan.block_size) == (64, 128)
    with pytest.raises(InvalidParameterError, match="--chip-size"):
        resolve_network(TrainConfig(chip_size=40), "cuda")  # 40 is not a multiple of 16


def test_normalisation_statistics_come_from_the_whole_cube() -> None:
    """Labels on the left half only: the cube's statistics still see the right half
    (mean of 0.1 and 0.5 bands is 0.3); a large cube is read through windows and
    lands near the same figures; a band without a valid pixel gives None."""
    lab = np.full((100, 100), IGNORE_ID, np.uint8)
    lab[40:60, 10:30] = 0
    cube = cube_for(lab)
    cube["data"][:] = np.where(np.arange(100) < 50, 0.1, 0.5)[None, None, None, :]
    mean, std = cube_band_stats(cube, tuple(BANDS), "median")
    assert np.allclose(mean, 0.3) and np.allclose(std, 0.2, atol=1e-6)
    big = cube_for(np.zeros((600, 600), np.uint8))
    big["data"][:] = np.where(np.arange(600) < 300, 0.1, 0.5)[None, None, None, :]
    big_mean, big_std = cube_band_stats(big, ("B04", "B02"), "median", seed=3)
    assert len(big_mean) == 2 and abs(big_mean[0] - 0.3) < 0.1 and big_std[1] > 0.1
    cube["data"].loc[{"band": "B08"}] = np.nan
    assert cube_band_stats(cube, tuple(BANDS), "median") is None


def test_no_validation_samples_training_chips_only() -> None:
    """--val-fraction 0 with derived sizes: training chips are drawn, no validation
    chip is asked of a block (this used to fail with "no 'val' block ... can hold")."""
    lab = squares(100, 3)
    config = TrainConfig(val_fraction=0)
    plan = plan_sampling({"pretrain": labels_of(lab)}, config)
    sets, _ = sample_training_chips(cube_for(lab), {"pretrain": labels_of(lab)}, plan, config,
                                    generic_schema(4))  # fmt: skip
    train, val = sets["pretrain"]
    assert len(train) == plan.stage("pretrain").train_chips and len(val) == 0
    assert plan.stage("pretrain").val_note == "validation disabled (--val-fraction 0)"


@pytest.mark.parametrize(
    ("depth", "chip", "expected"), [(3, 32, 2), (3, 64, 3), (4, 256, 4), (4, 64, 3), (3, 16, 1)]
)
def test_derived_depth_keeps_an_8px_bottleneck(depth: int, chip: int, expected: int) -> None:
    from eoseg.train.network import fit_depth_to_chip

    config, why = fit_depth_to_chip(TrainConfig(depth=depth), chip)
    assert config.depth == expected
    assert chip >> expected >= 8 or expected == 1
    assert (why is None) == (expected == depth)
