"""Multi-context prediction: every pixel seen through windows of several extents, fused.

A *context* ``c`` is the extent of input around an output pixel as a multiple of the
model card's chip size: context 1 is the chip itself, context 4 a window of
``4 * chip_size`` px. One rule, for training and prediction alike: a context-``c``
window is averaged over ``c x c`` pixel blocks (the NaN-aware mean of the physical
values, `pool`) down to the chip size, so the network always reads ``chip_size`` px and,
at context ``c``, a view ``c`` times wider and ``c`` times coarser; its probabilities are
upsampled back to the grid (bilinear). Feeding the wider window at native resolution
would not widen what a fully convolutional U-Net sees around a pixel: its receptive
field, not the window, bounds that.

Prediction (`context_probabilities`) gives each context its own global chip lattice:
the lattice of `eoseg.tile_prediction.predict_window` on the grid coarsened ``c`` times (pooling
blocks start at multiples of ``c`` pixels from the grid origin, chips at multiples of half
a chip of coarse pixels). A pixel therefore gets the same probabilities at every context
whichever tile computes it. A tile reads one window whose halo covers the widest context
(half a coarse chip rounded to the lattice, plus one coarse pixel for the upsampling),
mirrored at the grid edges, and the probabilities ``p_c`` of the contexts are fused as a
weighted mean of their logarithms: ``p ∝ exp(Σ_c w_c log p_c)``, ``w_c >= 0``, ``Σ w_c = 1``.

The weights are the model card's (``contexts``, fitted on validation chips by
`eoseg.train.contexts.fit_fusion`); `resolve_fusion` decides what a predict run uses.
Cost per output pixel: ``Σ_c 1 / c²`` times that of one context (1.31x for 1, 2, 4).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch.nn import functional

from eoseg.blend import Lattice, read_mirrored
from eoseg.errors import InvalidParameterError
from eoseg.grid import Tile
from eoseg.model_input import input_stack
from eoseg.models.card import ModelCard

log = logging.getLogger(__name__)

MAX_CONTEXT = 16
"""Widest context accepted (a window of 16 chips a side)."""
MAX_CONTEXTS = 5
"""Most contexts one model trains on or one run fuses."""
PROB_FLOOR = 1e-6
"""Probabilities are floored here before their logarithm (a class no context excludes
outright keeps a finite log-probability)."""
VIEW = "pooled"
"""How a wide window is shown to the network (the one rule; see the module docstring)."""

PredictFn = Callable[..., np.ndarray]
"""`eoseg.tile_prediction.predict_window` ``(model, card, window, lattice=...)``: blended class
probabilities of a window's interior."""


@dataclass(frozen=True, slots=True)
class Fusion:
    """The contexts a prediction fuses and their weights.

    Attributes:
        contexts: Context multiples, ascending.
        weights: Weight of each context's log-probabilities (non-negative, sum 1).
        source: Where the weights come from (for the class map's record).
    """

    contexts: tuple[int, ...] = (1,)
    weights: tuple[float, ...] = (1.0,)
    source: str = "single context"

    @property
    def single(self) -> bool:
        """Whether this is plain single-context prediction."""
        return self.contexts == (1,)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (class map attributes, run signature)."""
        return {
            "contexts": list(self.contexts),
            "weights": [round(w, 6) for w in self.weights],
            "source": self.source,
            "view": VIEW,
        }


SINGLE = Fusion()
"""Single-context prediction (cards without fusion weights)."""


def check_contexts(values: Sequence[Any], flag: str = "--contexts") -> tuple[int, ...]:
    """``values`` as sorted, distinct context multiples.

    Raises:
        InvalidParameterError: If a value is not a whole number in ``1..MAX_CONTEXT``,
            or there are none or more than `MAX_CONTEXTS`.
    """
    ok = [
        v
        for v in values
        if isinstance(v, int | np.integer) and not isinstance(v, bool) and 1 <= v <= MAX_CONTEXT
    ]
    out = tuple(sorted({int(v) for v in ok}))
    if len(ok) != len(values) or not 1 <= len(out) <= MAX_CONTEXTS:
        raise InvalidParameterError(
            f"{flag} must list 1 to {MAX_CONTEXTS} whole numbers from 1 to {MAX_CONTEXT} "
            f"(multiples of the chip size); found {list(values)!r}: give e.g. {flag} 1,2,4"
        )
    return out


def parse_contexts(text: str | None, flag: str = "--contexts") -> tuple[int, ...] | None:
    """Contexts from a comma-separated list (``"1,2,4"``); None stays None.

    Raises:
        InvalidParameterError: If an entry is not a whole number, or see `check_contexts`.
    """
    if text is None:
        return None
    values: list[Any] = []
    for item in text.split(","):
        item = item.strip()
        values.append(int(item) if item.isdigit() else item)
    return check_contexts(values, flag)


def card_weights(card: ModelCard) -> dict[int, float]:
    """The fusion weights the card records (context -> weight); empty when none."""
    weights = card.contexts.get("weights") or {}
    return {int(c): float(w) for c, w in weights.items()}


def resolve_fusion(card: ModelCard, contexts: Sequence[int] | None = None) -> Fusion:
    """What a predict run fuses: the card's choice, or the contexts asked for.

    Without ``contexts`` the card decides: its fitted weights (contexts of weight zero
    left out), else a single context. With ``contexts``, one context is used alone, and
    several take the card's weights of those contexts, renormalised to sum one; where
    the card has no weight for one of them (not trained or not fitted), or only weights
    of 0, they take equal weights, with a warning.

    Raises:
        InvalidParameterError: On invalid contexts (see `check_contexts`).
    """
    fitted = card_weights(card)
    if contexts is None:
        chosen = {c: w for c, w in sorted(fitted.items()) if w > 0}
        if not chosen or set(chosen) == {1}:
            return SINGLE
        total = sum(chosen.values())
        return Fusion(
            tuple(chosen), tuple(w / total for w in chosen.values()), "model card (fitted)"
        )
    asked = check_contexts(list(contexts))
    if asked == (1,):
        return SINGLE
    if len(asked) == 1:
        return Fusion(asked, (1.0,), "one context asked")
    if all(c in fitted for c in asked) and sum(fitted[c] for c in asked) > 0:
        total = sum(fitted[c] for c in asked)
        weights = tuple(fitted[c] / total for c in asked)
        return Fusion(asked, weights, "model card (fitted), renormalised over --contexts")
    missing = [c for c in asked if c not in fitted]
    why = f"no fitted weight for contexts {missing}" if missing else "fitted weights of 0"
    log.warning(
        "model %s has %s (trained on contexts %s): fusing contexts %s with equal weights",
        card.name, why, card.contexts.get("contexts", [1]), list(asked),
    )  # fmt: skip
    return Fusion(asked, (1.0 / len(asked),) * len(asked), "equal (no fitted weights)")


def pool(images: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor x factor`` pixel blocks of the last two axes, ignoring NaN.

    Args:
        images: ``(..., H, W)`` float array, NaN = nodata; ``H`` and ``W`` multiples of
            ``factor``.
        factor: Block side (1 returns ``images`` unchanged).

    Returns:
        float32 ``(..., H / factor, W / factor)``; NaN where a block has no value.
    """
    if factor == 1:
        return images
    *lead, h, w = images.shape
    blocks = np.asarray(images, dtype=np.float32).reshape(
        *lead, h // factor, factor, w // factor, factor
    )
    ok = ~np.isnan(blocks)
    total = np.where(ok, blocks, 0.0).sum(axis=(-3, -1))
    count = ok.sum(axis=(-3, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (total / count).astype(np.float32)


def upsample(probs: np.ndarray, factor: int) -> np.ndarray:
    """``(class, h, w)`` probabilities at ``factor`` times the resolution (bilinear,
    pixel centres aligned as pooling aligns them)."""
    if factor == 1:
        return probs
    t = torch.from_numpy(np.ascontiguousarray(probs, dtype=np.float32))[None]
    up = functional.interpolate(t, scale_factor=factor, mode="bilinear", align_corners=False)
    return up[0].numpy()


def context_lattice(chip: int) -> Lattice:
    """The lattice of every context's coarse grid: chips of the training size every half
    chip (the four-fold blend); `context_span` lays the windows out on it."""
    return Lattice(chip, chip // 2)


def context_span(start: int, stop: int, context: int, chip: int) -> tuple[int, int, int]:
    """One axis of a context's window around the pixels ``[start, stop)``.

    Returns:
        ``(native0, native1, coarse0)``: the grid pixels to read (a multiple of
        ``context`` and of the lattice), and the first coarse pixel whose probabilities
        `eoseg.tile_prediction.predict_window` returns for the pooled window (its interior
        starts half a chip in).
    """
    margin = 1 if context > 1 else 0  # one coarse pixel each side for the upsampling
    lattice = context_lattice(chip)
    lo, hi = lattice.span(start // context - margin, -(-stop // context) + margin)
    return context * lo, context * hi, lo + lattice.overlap


def context_probabilities(
    model: torch.nn.Module,
    card: ModelCard,
    cube: xr.Dataset,
    tile: Tile,
    steps: slice,
    fusion: Fusion,
    predict_fn: PredictFn,
) -> tuple[np.ndarray, np.ndarray]:
    """Fused class probabilities of one tile at the contexts of ``fusion``.

    Args:
        model: The network (eval mode).
        card: Its card.
        cube: The cube (``data`` and ``valid``).
        tile: The tile to predict.
        steps: The cube time steps of the model input (`eoseg.model_input.time_slices`).
        fusion: Contexts and weights.
        predict_fn: Blended probabilities of a window's interior
            (`eoseg.tile_prediction.predict_window`), run on each context's pooled window.

    Returns:
        ``(probs, valid)``: float32 ``(class, tile.height, tile.width)`` fused
        probabilities, and bool ``(tile.height, tile.width)``, true where the input has
        a value.
    """
    chip, h, w = card.chip_size, tile.height, tile.width
    spans = {
        c: (
            context_span(tile.y0, tile.y0 + h, c, chip),
            context_span(tile.x0, tile.x0 + w, c, chip),
        )
        for c in fusion.contexts
    }
    rows = (min(s[0][0] for s in spans.values()), max(s[0][1] for s in spans.values()))
    cols = (min(s[1][0] for s in spans.values()), max(s[1][1] for s in spans.values()))
    data = cube["data"].isel(time=steps).sel(band=list(card.bands))
    valid = cube["valid"].isel(time=steps)
    images, ok = input_stack(
        read_mirrored(data, rows, cols), read_mirrored(valid, rows, cols), card.time
    )
    image = images[0]
    ty, tx = tile.y0 - rows[0], tile.x0 - cols[0]
    fused = np.zeros((len(card.classes), h, w), np.float32)
    for c, weight in zip(fusion.contexts, fusion.weights, strict=True):
        (ny0, ny1, ry), (nx0, nx1, rx) = spans[c]
        view = pool(image[:, ny0 - rows[0] : ny1 - rows[0], nx0 - cols[0] : nx1 - cols[0]], c)
        probs = upsample(predict_fn(model, card, view, lattice=context_lattice(chip)), c)
        oy, ox = tile.y0 - c * ry, tile.x0 - c * rx
        fused += weight * np.log(np.maximum(probs[:, oy : oy + h, ox : ox + w], PROB_FLOOR))
    return softmax(fused), ok[0, ty : ty + h, tx : tx + w]


def softmax(logp: np.ndarray) -> np.ndarray:
    """Normalise log-probabilities over the class axis (0) into probabilities."""
    e = np.exp(logp - logp.max(axis=0, keepdims=True))
    return (e / e.sum(axis=0, keepdims=True)).astype(np.float32)


def fusion_record(
    contexts: Sequence[int], weights: Mapping[int, float], **figures: Any
) -> dict[str, Any]:
    """The card's ``contexts`` entry: trained contexts, fitted weights, figures."""
    return {
        "contexts": list(contexts),
        "view": VIEW,
        "weights": {str(c): round(float(weights[c]), 6) for c in contexts},
        **figures,
    }
