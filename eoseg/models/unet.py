"""A plain-torch U-Net for per-pixel land-cover classification.

The encoder halves the resolution ``depth`` times, so chip sides must be divisible by
``2**depth`` (128 px chips work for every depth up to 7). With ``context="aspp"`` an
atrous spatial pyramid pooling module (DeepLab v3) follows the bottleneck and widens its
receptive field at little cost (about +5 % FLOPs for the default 32/4 network).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812
from torch.utils.flop_counter import FlopCounterMode

from eoseg.errors import InvalidParameterError


class ConvBlock(nn.Sequential):
    """Two 3x3 convolution + batch norm + ReLU layers."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


Context = Literal["none", "aspp"]
DEFAULT_RATES = (1, 6, 12, 18)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: parallel dilated 3x3 convolutions plus image pooling.

    The branch outputs (``branch_channels`` each) are concatenated and projected back to
    ``channels`` by a 1x1 convolution, so the module keeps the shape of its input. The
    image-pooling branch has no batch norm (a 1x1 map would break it at batch size 1).

    Args:
        channels: Input and output channels.
        rates: Dilation rate of each 3x3 branch.
        branch_channels: Channels per branch; default ``max(1, channels // 4)``.
    """

    def __init__(
        self, channels: int, rates: Sequence[int] = DEFAULT_RATES, branch_channels: int = 0
    ) -> None:
        super().__init__()
        b = branch_channels or max(1, channels // 4)
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(channels, b, 3, padding=r, dilation=r, bias=False),
                nn.BatchNorm2d(b),
                nn.ReLU(inplace=True),
            )
            for r in rates
        )
        self.pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, b, 1), nn.ReLU(inplace=True)
        )
        self.project = nn.Sequential(
            nn.Conv2d(b * (len(rates) + 1), channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Context features of the same shape as ``x``."""
        feats = [branch(x) for branch in self.branches]
        feats.append(self.pool(x).expand(-1, -1, x.shape[-2], x.shape[-1]))
        return self.project(torch.cat(feats, dim=1))


class UNet(nn.Module):
    """U-Net with max-pool downsampling, transposed-conv upsampling and skip connections.

    Level ``i`` of the encoder has ``base_width * 2**i`` channels; the bottleneck has
    ``base_width * 2**depth``.

    Args:
        in_channels: Number of input bands.
        num_classes: Number of output classes (logit channels).
        base_width: Channels of the first level.
        depth: Number of downsampling steps. Input height and width must be divisible
            by ``2**depth``.
        context: ``"aspp"`` adds an `ASPP` module after the bottleneck.
        rates: Dilation rates of the ASPP branches (ignored without ASPP).

    Raises:
        InvalidParameterError: If a size argument is not positive or ``context`` is unknown.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        base_width: int = 32,
        depth: int = 4,
        *,
        context: Context = "none",
        rates: Sequence[int] = DEFAULT_RATES,
    ) -> None:
        super().__init__()
        if context not in ("none", "aspp"):
            raise InvalidParameterError(f"UNet context must be 'none' or 'aspp'; got {context!r}")
        if context == "aspp" and (not rates or min(rates) < 1):
            raise InvalidParameterError(f"ASPP rates must be >= 1; got {tuple(rates)}")
        for label, value in (
            ("in_channels", in_channels),
            ("num_classes", num_classes),
            ("base_width", base_width),
            ("depth", depth),
        ):
            if value < 1:
                raise InvalidParameterError(f"UNet {label} must be >= 1; got {value}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.base_width = base_width
        self.depth = depth
        self.context: Context = context
        self.rates = tuple(int(r) for r in rates) if context == "aspp" else ()
        widths = [base_width * 2**i for i in range(depth + 1)]
        self.encoder = nn.ModuleList()
        prev = in_channels
        for w in widths[:-1]:
            self.encoder.append(ConvBlock(prev, w))
            prev = w
        self.bottleneck = ConvBlock(widths[-2], widths[-1])
        self.aspp = ASPP(widths[-1], self.rates) if context == "aspp" else None
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for i in range(depth - 1, -1, -1):
            self.up.append(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2))
            self.decoder.append(ConvBlock(2 * widths[i], widths[i]))
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    @property
    def architecture(self) -> dict[str, Any]:
        """The card's ``architecture`` entry: ``"unet"`` or ``"unet-aspp"`` with sizes."""
        if self.aspp is None:
            return {"name": "unet", "base_width": self.base_width, "depth": self.depth}
        return {
            "name": "unet-aspp",
            "base_width": self.base_width,
            "depth": self.depth,
            "rates": list(self.rates),
        }

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Parameters of the encoder path (encoder blocks and bottleneck)."""
        return [*self.encoder.parameters(), *self.bottleneck.parameters()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(N, num_classes, H, W)`` for input ``(N, in_channels, H, W)``."""
        factor = 2**self.depth
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise InvalidParameterError(
                f"UNet of depth {self.depth} needs height and width divisible by {factor}; "
                f"got {tuple(x.shape[-2:])}: pad the chip or choose another chip size"
            )
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        if self.aspp is not None:
            x = self.aspp(x)
        for up, block, skip in zip(self.up, self.decoder, reversed(skips), strict=True):
            x = block(torch.cat([up(x), skip], dim=1))
        return self.head(x)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_flops_per_pixel(model: nn.Module, in_channels: int, size: int = 128) -> float:
    """Forward-pass FLOPs per output pixel, counted by torch's ``FlopCounterMode``.

    One multiply-add counts as two FLOPs. Only convolutions and matrix products are
    counted (batch norm, ReLU and pooling are a few percent on top).

    Args:
        model: The network; it is run once in eval mode on a zero tensor.
        in_channels: Input bands.
        size: Side of the square test input (must suit the model, e.g. a multiple of
            ``2**depth`` for `UNet`).

    Returns:
        Total FLOPs divided by ``size * size``.
    """
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        x = torch.zeros(1, in_channels, size, size, device=device)
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(x)
        total = counter.get_total_flops()
    finally:
        model.train(was_training)
    return float(total) / float(size * size)
