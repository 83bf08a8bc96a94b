"""Training options: defaults, TOML options files, elastic deformation, bf16 on the CPU."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train import SCHEMA, TINY, make_scene

from eoseg.classes import IGNORE_ID
from eoseg.errors import InputNotFoundError, InvalidParameterError
from eoseg.inference import card_lattice
from eoseg.models import UNet, count_flops_per_pixel, load_model
from eoseg.models.accel import resolve_accelerator
from eoseg.tile_prediction import predict_window
from eoseg.train import TrainConfig, train_model
from eoseg.train.augment import augment, dihedral, elastic_deform
from eoseg.train.config import configure, load_train_config
from eoseg.train.network import resolve_network


def test_defaults_follow_the_design() -> None:
    """On a GPU a 32-wide, 4-deep U-Net (about 370 GFLOP per megapixel), on a CPU a
    16/3 one (about 71 GFLOP per megapixel); sampling sizes and epochs are derived from the
    labels (`eoseg.train.plan`)."""
    config = TrainConfig()
    assert config.base_width is config.depth is config.epochs is None
    assert config.chip_size is config.block_size is config.min_labelled is None
    assert config.train_chips is config.val_chips is None and config.keep_best
    gpu, cpu = resolve_network(config, "cuda"), resolve_network(config, "cpu")
    assert (gpu.base_width, gpu.depth) == (32, 4)
    model = UNet(4, 6, gpu.base_width, gpu.depth)
    assert count_flops_per_pixel(model, 4, 64) / 1e3 == pytest.approx(370, rel=0.02)
    small = UNet(4, 6, cpu.base_width, cpu.depth)
    assert count_flops_per_pixel(small, 4, 64) / 1e3 == pytest.approx(71, rel=0.03)
    assert config.norm_stats == "cube"
    assert config.precision == "auto" and config.elastic == 0.0


def test_every_option_an_error_names_is_reachable_from_the_cli() -> None:
    """Each TrainConfig field has its own ``eoseg train`` option or is set with --set;
    a validation error names that option."""
    from typer.testing import CliRunner

    from eoseg.cli import app
    from eoseg.train.config import CLI_FLAGS, flag

    text = CliRunner().invoke(app, ["train", "--help"], terminal_width=200).stdout
    for name in CLI_FLAGS:
        assert flag(name) in text, name
    assert "--set" in text
    assert set(CLI_FLAGS) <= {f.name for f in dataclasses.fields(TrainConfig)}
    with pytest.raises(InvalidParameterError, match="--min-labelled"):
        TrainConfig(min_labelled=1.5)
    with pytest.raises(InvalidParameterError, match="--val-fraction"):
        TrainConfig(val_fraction=1.0)
    with pytest.raises(InvalidParameterError, match="--set gce_q="):
        TrainConfig(gce_q=2.0)


def test_set_options_parse_as_toml_values() -> None:
    from eoseg.train.config import parse_settings

    settings = parse_settings(["gce_q=0.5", "finetune_norm=train", "class_weights=[1, 2.5]",
                               'bands = ["B04", "B08"]', "keep_best=false"])  # fmt: skip
    config = configure(None, **settings)
    assert config.gce_q == 0.5 and config.finetune_norm == "train" and not config.keep_best
    assert config.class_weights == (1, 2.5) and config.bands == ("B04", "B08")
    with pytest.raises(InvalidParameterError, match="NAME=VALUE"):
        parse_settings(["gce_q"])
    with pytest.raises(InvalidParameterError, match="unknown training options"):
        configure(None, **parse_settings(["chipsize=64"]))


def test_options_file_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "train.toml"
    path.write_text('[train]\nepochs = 20\nbands = ["B04", "B08"]\nnoisy_loss = "gce"\n')
    config = load_train_config(path)
    assert (config.epochs, config.bands, config.noisy_loss) == (20, ("B04", "B08"), "gce")
    assert configure(config, epochs=3, depth=None).epochs == 3
    assert configure(config, depth=5).depth == 5
    assert configure(configure(config, depth=5), depth=None).depth == 5  # None keeps it
    path.write_text("lr = 0.01\nelastic = 2.5\n")  # a plain file without a table works too
    assert (load_train_config(path).lr, load_train_config(path).elastic) == (0.01, 2.5)
    path.write_text("epoch = 3\n")
    with pytest.raises(InvalidParameterError, match=r"unknown training options \['epoch'\]"):
        load_train_config(path)
    path.write_text("epochs = [")
    with pytest.raises(InvalidParameterError, match="not valid TOML"):
        load_train_config(path)
    with pytest.raises(InputNotFoundError):
        load_train_config(tmp_path / "missing.toml")
    with pytest.raises(InvalidParameterError, match="precision"):
        configure(None, precision="fp16")
    with pytest.raises(InvalidParameterError, match="elastic"):
        configure(None, elastic=-1.0)


def test_elastic_deformation_moves_image_and_labels_together() -> None:
    """The image is a one-hot picture of the labels: after warping, its argmax must be
    the warped labels wherever the labels are kept (same field, nearest vs bilinear)."""
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    y = torch.from_numpy(np.kron(rng.integers(0, 3, (4, 8, 8)), np.ones((8, 8)))).long()
    x = torch.nn.functional.one_hot(y, 3).permute(0, 3, 1, 2).float()
    wx, wy = elastic_deform(x, y, 3.0, gen)
    assert wx.shape == x.shape and wy.shape == y.shape and wy.dtype == y.dtype
    assert set(wy.unique().tolist()) <= {0, 1, 2, IGNORE_ID}
    moved = (wy != y) & (wy != IGNORE_ID)
    assert 0.02 < moved.float().mean() < 0.4  # it deforms, but does not scramble
    kept = wy != IGNORE_ID
    agree = (wx.argmax(dim=1) == wy)[kept].float().mean()
    assert agree > 0.97
    same_x, same_y = elastic_deform(x, y, 1e-6, torch.Generator().manual_seed(0))
    assert torch.equal(same_y, y) and torch.allclose(same_x, x, atol=1e-4)


def test_augment_is_reproducible_with_elastic() -> None:
    x = torch.rand(2, 3, 32, 32)
    y = torch.randint(0, 3, (2, 32, 32))
    a = augment(x, y, 0.05, torch.Generator().manual_seed(5), elastic=2.0)
    b = augment(x, y, 0.05, torch.Generator().manual_seed(5), elastic=2.0)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_bf16_channels_last_training_and_prediction_on_cpu(tmp_path: Path) -> None:
    """The mixed-precision path (bf16 autocast, channels-last) runs end to end without a
    GPU: the model learns, and its bf16 predictions agree with fp32 on almost all pixels."""
    accel = resolve_accelerator("cpu", "bf16")
    assert accel.bf16 and accel.channels_last and accel.describe() == "cpu bf16 channels-last"
    assert not resolve_accelerator("cpu").bf16
    cube, _, clean = make_scene()
    config = dataclasses.replace(
        TINY, precision="bf16", epochs=6, finetune_epochs=0, train_chips=32, base_width=8
    )
    card = train_model(cube, clean, tmp_path / "m", schema=SCHEMA, config=config)
    assert card.metrics["val_miou"] > 0.5
    model, card = load_model(tmp_path / "m")
    window = cube["data"].isel(time=0).values[:, :96, :96]
    lattice = card_lattice(card)
    fp32 = predict_window(model, card, window, lattice=lattice).argmax(axis=0)
    bf16 = predict_window(model, card, window, lattice=lattice, accel=accel).argmax(axis=0)
    assert (fp32 == bf16).mean() > 0.98


def test_cuda_on_a_machine_without_one_is_refused() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(InvalidParameterError, match="no GPU"):
        resolve_accelerator("cuda")
    with pytest.raises(InvalidParameterError, match="not a torch device"):
        resolve_accelerator("gpu0")


def test_noisy_chips_take_their_own_pixel_loss() -> None:
    from torch.nn import functional as F  # noqa: N812

    from eoseg.train.losses import SegmentationLoss, generalized_cross_entropy

    torch.manual_seed(0)
    logits = torch.randn(4, 3, 8, 8)
    target = torch.randint(0, 3, (4, 8, 8))
    target[0, :2] = IGNORE_ID
    loss = SegmentationLoss(kind="ce", noisy_kind="gce", q=0.7)
    ce = F.cross_entropy(logits, target, ignore_index=IGNORE_ID)
    no = torch.zeros(4, dtype=torch.bool)
    assert torch.allclose(loss(logits, target, no), ce)  # no noisy chip: plain CE
    assert torch.allclose(loss(logits, target, ~no), generalized_cross_entropy(logits, target))
    # A mixed batch averages each kind over all labelled pixels.
    flags = torch.tensor([True, False, False, True])
    mixed = loss(logits, target, flags)
    assert generalized_cross_entropy(logits, target) < mixed < ce


def test_finetune_chips_flag_rehearsed_and_replayed_chips() -> None:
    from eoseg.sampling import ChipSet
    from eoseg.train.finetune import finetune_chips

    def chips(n: int, label: int, first: int) -> ChipSet:
        y = np.full((n, 4, 4), label, dtype=np.uint8)
        origins = np.stack([np.arange(first, first + n), np.zeros(n, int)], 1)
        return ChipSet(np.zeros((n, 1, 4, 4), np.float32), y, origins, ("b",))

    clean, noisy = chips(8, 0, 0), chips(6, 1, 100)  # class 1 only in the noisy chips
    out, flags = finetune_chips(clean, noisy, 2, rehearse=True, share=0.5, seed=1)
    assert len(out) == len(flags) == 14  # 8 clean + 6 rehearsed, half replaced
    assert np.array_equal(flags, out.origins[:, 0] >= 100)


def test_dihedral_turns_each_chip_on_its_own_and_labels_follow() -> None:
    """Eight copies of one asymmetric chip come out in several orientations, each
    label map moved exactly as its image."""
    base = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)
    x, y = base.repeat(8, 1, 1, 1), base[:, 0].long().repeat(8, 1, 1)
    xo, yo = dihedral(x, y, torch.Generator().manual_seed(1))
    assert torch.equal(xo[:, 0].long(), yo)
    assert len({tuple(c.flatten().tolist()) for c in xo}) > 2
