"""Tests of eoseg.models: the U-Net, FLOP counting, model folders and normalisation."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from eoseg.classes import ClassSchema, LandClass
from eoseg.errors import BandMismatchError, InputNotFoundError, InvalidParameterError
from eoseg.models import (
    ModelCard,
    UNet,
    build_model,
    check_bands,
    count_flops_per_pixel,
    count_parameters,
    load_model,
    normalize,
    save_model,
)
from eoseg.train.losses import (
    SegmentationLoss,
    balanced_class_weights,
    bootstrap_loss,
    generalized_cross_entropy,
)

SCHEMA = ClassSchema(
    (
        LandClass(0, "water", "#0000ff"),
        LandClass(1, "forest", "#00ff00"),
        LandClass(2, "urban", "#ff0000"),
    )
)
BANDS = ("B02", "B03", "B04", "B08")


def make_card(base_width: int = 8, depth: int = 2) -> ModelCard:
    return ModelCard(
        name="test-unet",
        bands=BANDS,
        mean=(0.1, 0.1, 0.1, 0.2),
        std=(0.05, 0.05, 0.05, 0.1),
        classes=SCHEMA,
        chip_size=32,
        architecture={"name": "unet", "base_width": base_width, "depth": depth},
        metrics={"val_miou": 0.5},
    )


def hand_macs_per_pixel(c_in: int, n_classes: int, w: int, depth: int) -> float:
    """Multiply-adds per pixel of the U-Net, level by level (pixel share 4**-level)."""
    widths = [w * 2**i for i in range(depth + 1)]
    macs = 9 * c_in * widths[0] + 9 * widths[0] ** 2
    for i in range(1, depth + 1):
        macs += (9 * widths[i - 1] * widths[i] + 9 * widths[i] ** 2) / 4**i
    for i in range(depth):
        up = widths[i + 1] * widths[i]  # 2x2 stride-2 transposed conv, per output pixel
        dec = 9 * 2 * widths[i] * widths[i] + 9 * widths[i] ** 2
        macs += (up + dec) / 4**i
    return macs + widths[0] * n_classes


@pytest.mark.parametrize(("width", "depth", "size"), [(8, 2, 32), (16, 3, 64), (4, 4, 48)], ids=str)
def test_unet_output_shape(width: int, depth: int, size: int) -> None:
    model = UNet(4, 3, base_width=width, depth=depth)
    out = model(torch.zeros(2, 4, size, size))
    assert out.shape == (2, 3, size, size)


def test_unet_refuses_indivisible_size() -> None:
    with pytest.raises(InvalidParameterError, match="divisible by 8"):
        UNet(4, 3, base_width=4, depth=3)(torch.zeros(1, 4, 36, 36))
    with pytest.raises(InvalidParameterError, match="depth"):
        UNet(4, 3, depth=0)


def test_flops_per_pixel_matches_hand_estimate() -> None:
    model = UNet(4, 6, base_width=16, depth=3)
    flops = count_flops_per_pixel(model, 4, size=64)
    expected = 2 * hand_macs_per_pixel(4, 6, 16, 3)
    assert flops > 0
    assert flops == pytest.approx(expected, rel=0.05)
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())
    assert model.training  # mode restored


def test_unet_overfits_tiny_chip_set() -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 32, 32, generator=gen)
    x = torch.nn.functional.avg_pool2d(x, 5, stride=1, padding=2) * 3  # smooth blobs
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()  # 3 classes from the bands
    model = UNet(3, 3, base_width=8, depth=2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(80):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc > 0.95


def test_save_load_round_trip_is_bit_identical(tmp_path) -> None:
    torch.manual_seed(1)
    model = UNet(4, 3, base_width=8, depth=2)
    model.eval()
    card = save_model(model, make_card(), tmp_path / "m")
    assert len(card.version) == 12
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "model.json",
        "weights.safetensors",
    ]
    assert not list(tmp_path.glob(".*"))  # no temporary folder left behind
    loaded, loaded_card = load_model(tmp_path / "m")
    assert not loaded.training
    assert loaded_card == card
    x = torch.randn(2, 4, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    again = save_model(model, make_card(), tmp_path / "m2")
    assert again.version == card.version  # content-derived
    other = save_model(model, dataclasses.replace(make_card(), name="other"), tmp_path / "m3")
    assert other.version != card.version
    # overwrite in place keeps one complete folder
    save_model(model, make_card(), tmp_path / "m")
    assert json.loads((tmp_path / "m" / "model.json").read_text())["version"] == card.version


def test_load_model_missing_files(tmp_path) -> None:
    with pytest.raises(InputNotFoundError, match=r"no model card.*model\.json"):
        load_model(tmp_path / "nowhere")
    save_model(UNet(4, 3, base_width=4, depth=2), make_card(4, 2), tmp_path / "m")
    (tmp_path / "m" / "weights.safetensors").unlink()
    with pytest.raises(InputNotFoundError, match="no weights"):
        load_model(tmp_path / "m")


def test_check_bands() -> None:
    card = make_card()
    assert check_bands(card, ("B08", "B02", "B03", "B04", "B11")) == (1, 2, 3, 0)
    with pytest.raises(BandMismatchError, match=r"missing \('B08',\).*ingest the missing bands"):
        check_bands(card, ("B02", "B03", "B04"))


def test_normalize_numpy_and_torch() -> None:
    card = make_card()
    chip = np.full((4, 8, 8), 0.1, np.float32)
    chip[3] = 0.3
    chip[0, 0, 0] = np.nan
    out = normalize(chip, card)
    assert out.dtype == np.float32
    assert out[0, 0, 0] == 0.0
    np.testing.assert_allclose(out[3], 1.0, rtol=1e-5)
    t = normalize(torch.from_numpy(np.stack([chip, chip])), card)
    assert isinstance(t, torch.Tensor)
    np.testing.assert_allclose(t[1].numpy(), out, rtol=1e-6)
    with pytest.raises(BandMismatchError, match="4 bands"):
        normalize(np.zeros((3, 8, 8), np.float32), card)


def test_card_dict_round_trip() -> None:
    card = make_card()
    assert ModelCard.from_dict(json.loads(json.dumps(card.to_dict()))) == card


def test_default_unet_is_32_wide_4_deep_about_370_gflop_per_mpx() -> None:
    model = UNet(4, 6)
    assert (model.base_width, model.depth) == (32, 4)
    flops = count_flops_per_pixel(model, 4, size=64)
    assert flops * 1e6 / 1e9 == pytest.approx(369.3, rel=0.01)  # GFLOP per megapixel


def test_aspp_unet_shape_flops_and_round_trip(tmp_path) -> None:
    torch.manual_seed(2)
    model = UNet(4, 3, base_width=8, depth=2, context="aspp", rates=(1, 2, 3))
    assert model(torch.zeros(2, 4, 32, 32)).shape == (2, 3, 32, 32)
    w, b, size = 32, 8, 32  # bottleneck width, branch width, test side
    extra = (3 * 9 * w * b + 4 * b * w) / 4**2 + w * b / size**2  # branches, projection, pool
    expected = 2 * (hand_macs_per_pixel(4, 3, 8, 2) + extra)
    assert count_flops_per_pixel(model, 4, size=size) == pytest.approx(expected, rel=0.01)
    card = dataclasses.replace(make_card(), architecture=model.architecture)
    assert card.architecture == {
        "name": "unet-aspp",
        "base_width": 8,
        "depth": 2,
        "rates": [1, 2, 3],
    }
    assert isinstance(build_model(card), UNet)
    model.eval()
    saved = save_model(model, card, tmp_path / "m")
    loaded, loaded_card = load_model(tmp_path / "m")
    assert loaded_card == saved
    for (k, v), (k2, v2) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert k == k2 and torch.equal(v, v2)
    x = torch.randn(1, 4, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    with pytest.raises(InvalidParameterError, match="context"):
        UNet(4, 3, context="dilated")  # type: ignore[arg-type]


# logits (0, ln 3): p = (0.25, 0.75); the second pixel is ignored
LOGITS = torch.tensor([[0.0, float(np.log(3.0))], [5.0, -5.0]]).T.reshape(1, 2, 1, 2)
TARGET = torch.tensor([[[0, 255]]])


def test_generalized_cross_entropy_by_hand() -> None:
    assert generalized_cross_entropy(LOGITS, TARGET, q=1.0).item() == pytest.approx(0.75)
    assert generalized_cross_entropy(LOGITS, TARGET, q=0.5).item() == pytest.approx(1.0)
    ce = torch.nn.functional.cross_entropy(LOGITS, TARGET, ignore_index=255).item()
    assert ce == pytest.approx(np.log(4.0))
    assert generalized_cross_entropy(LOGITS, TARGET, q=1e-3).item() == pytest.approx(ce, rel=2e-3)
    none = torch.full_like(TARGET, 255)
    assert generalized_cross_entropy(LOGITS, none).item() == 0.0
    with pytest.raises(InvalidParameterError, match="q must be"):
        generalized_cross_entropy(LOGITS, TARGET, q=0.0)


def test_bootstrap_loss_by_hand() -> None:
    ent = -(0.25 * np.log(0.25) + 0.75 * np.log(0.75))
    soft = bootstrap_loss(LOGITS, TARGET, beta=0.9).item()
    assert soft == pytest.approx(0.9 * np.log(4.0) + 0.1 * ent, rel=1e-5)
    hard = bootstrap_loss(LOGITS, TARGET, beta=0.8, mode="hard").item()
    assert hard == pytest.approx(0.8 * np.log(4.0) - 0.2 * np.log(0.75), rel=1e-5)
    assert bootstrap_loss(LOGITS, TARGET, beta=1.0).item() == pytest.approx(np.log(4.0))


def test_class_weights_change_the_loss() -> None:
    logits = torch.zeros(1, 2, 1, 3)
    logits[0, 1] = float(np.log(3.0))  # p(class 1) = 0.75 everywhere
    target = torch.tensor([[[0, 1, 255]]])
    plain = SegmentationLoss()(logits, target).item()
    assert plain == pytest.approx((np.log(4.0) - np.log(0.75)) / 2)
    weighted = SegmentationLoss(weight=(3.0, 1.0))(logits, target).item()
    assert weighted == pytest.approx((3 * np.log(4.0) - np.log(0.75)) / 4)
    gce = SegmentationLoss(kind="gce", q=1.0, weight=(3.0, 1.0))(logits, target).item()
    assert gce == pytest.approx((3 * 0.75 + 0.25) / 4)
    labels = np.array([0, 0, 0, 1, 255, 255])
    assert balanced_class_weights(labels, 3) == pytest.approx((4 / 6, 2.0, 1.0))
