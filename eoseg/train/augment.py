"""Chip augmentation: the dihedral group, radiometric jitter, optional elastic deformation.

All randomness comes from one CPU generator, so an augmented epoch is reproducible and a
resumed run draws the same transforms as an uninterrupted one.
"""

from __future__ import annotations

import torch
from torch.nn import functional

from eoseg.classes import IGNORE_ID

ELASTIC_CONTROL = 4
"""Control points per chip side of the elastic displacement field (smooth at chip scale)."""


def augment(
    x: torch.Tensor,
    y: torch.Tensor,
    jitter: float,
    gen: torch.Generator,
    *,
    elastic: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per chip: a random rotation by 90° and flip, per-band gain ``1 ± jitter``; elastic warp.

    Args:
        x: ``(N, C, H, W)`` float chips.
        y: ``(N, H, W)`` integer labels (``IGNORE_ID`` = ignore).
        jitter: Half-range of the multiplicative per-band gain; 0 turns it off.
        gen: CPU generator of every random draw.
        elastic: Standard deviation in pixels of a smooth random displacement field
            (`elastic_deform`); 0 turns it off.

    Returns:
        The augmented ``(x, y)``; labels keep their dtype and values.
    """
    x, y = dihedral(x, y, gen)
    if jitter > 0:
        gain = 1.0 + (torch.rand(x.shape[0], x.shape[1], 1, 1, generator=gen) * 2 - 1) * jitter
        x = x * gain
    if elastic > 0:
        x, y = elastic_deform(x, y, elastic, gen)
    return x, y


def dihedral(
    x: torch.Tensor, y: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each chip turned by its own random multiple of 90° and flipped or not.

    One of the eight symmetries of the square per chip, not one per batch: a batch of a
    few chips of a few small polygons then shows the network more orientations per step.
    Labels move with their pixels, so the transform is label-safe.
    """
    turns = torch.randint(0, 4, (x.shape[0],), generator=gen).tolist()
    flips = torch.randint(0, 2, (x.shape[0],), generator=gen).tolist()
    xs, ys = [], []
    for i, (k, f) in enumerate(zip(turns, flips, strict=True)):
        xi, yi = torch.rot90(x[i], k, dims=(-2, -1)), torch.rot90(y[i], k, dims=(-2, -1))
        if f:
            xi, yi = torch.flip(xi, dims=(-1,)), torch.flip(yi, dims=(-1,))
        xs.append(xi)
        ys.append(yi)
    return torch.stack(xs), torch.stack(ys)


def elastic_deform(
    x: torch.Tensor, y: torch.Tensor, sigma_px: float, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp chips and labels with the same smooth random displacement field.

    Displacements are drawn at ``ELASTIC_CONTROL x ELASTIC_CONTROL`` control points
    (normal, standard deviation ``sigma_px`` pixels) and interpolated bicubically to
    every pixel, so shapes bend without tearing. Images are resampled bilinearly, labels
    by nearest neighbour (no invented class ids); pixels pulled from outside the chip
    become ``IGNORE_ID`` in the labels and are reflected in the image.
    """
    n, _, h, w = x.shape
    coarse = torch.randn(n, 2, ELASTIC_CONTROL, ELASTIC_CONTROL, generator=gen) * sigma_px
    shift = functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)
    # grid_sample's coordinates span [-1, 1] over the image: a pixel is 2/size of that.
    rows = torch.linspace(-1 + 1 / h, 1 - 1 / h, h)
    cols = torch.linspace(-1 + 1 / w, 1 - 1 / w, w)
    gy, gx = torch.meshgrid(rows, cols, indexing="ij")
    grid = torch.stack(
        (gx + shift[:, 0] * 2 / w, gy + shift[:, 1] * 2 / h), dim=-1
    )  # (N, H, W, 2) as (x, y)
    warped = functional.grid_sample(
        x.float(), grid, mode="bilinear", padding_mode="reflection", align_corners=False
    ).to(x.dtype)
    labels = functional.grid_sample(
        y[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False
    )[:, 0]
    inside = (grid.abs() <= 1).all(dim=-1)
    labels = torch.where(inside, labels, float(IGNORE_ID))
    return warped, labels.round().to(y.dtype)
