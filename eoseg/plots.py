"""Figures of an accuracy report, as PNG bytes: confusion heatmap, per-class bars, quicklook.

Drawn with matplotlib's Agg backend (no display needed). The quicklook reads the map and
the truth decimated to at most ``max_side`` pixels a side, tile by tile through Dask, so
a country-sized map is never loaded whole.
"""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")  # before pyplot: reports are drawn without a display

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from eoseg.classes import IGNORE_ID, ClassSchema
from eoseg.metrics import AccuracyReport

_DPI = 100


def confusion_heatmap(report: AccuracyReport) -> bytes:
    """The confusion matrix as a heatmap, each row normalised (shares of the truth class),
    with the pixel counts written in the cells."""
    cm = report.matrix
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    n = len(report.class_names)
    side = max(4.0, 0.7 * n + 2.5)
    fig, ax = plt.subplots(figsize=(side, side * 0.85))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), report.class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), report.class_names)
    ax.set_xlabel("map (prediction)")
    ax.set_ylabel("reference (truth)")
    for t in range(n):
        for p in range(n):
            colour = "white" if share[t, p] > 0.5 else "black"
            ax.text(p, t, f"{cm[t, p]:,}", ha="center", va="center", fontsize=8, color=colour)
    fig.colorbar(image, ax=ax, label="share of the reference class")
    ax.set_title("Confusion matrix")
    return _png(fig)


def class_scores_chart(report: AccuracyReport) -> bytes:
    """Grouped bars of user's accuracy, producer's accuracy and F1 per class."""
    n = len(report.class_names)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * n + 2), 4))
    series = (
        ("user's accuracy", report.precision),
        ("producer's accuracy", report.recall),
        ("F1", report.f1),
    )
    width = 0.27
    x = np.arange(n)
    for k, (label, values) in enumerate(series):
        heights = [0.0 if math.isnan(v) else v for v in values]
        ax.bar(x + (k - 1) * width, heights, width, label=label)
    ax.set_xticks(x, report.class_names, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("score")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Per-class accuracy")
    return _png(fig)


def quicklook_pair(
    prediction: xr.DataArray, truth: xr.DataArray, schema: ClassSchema, max_side: int = 400
) -> bytes:
    """The map beside the truth in the schema's colours (nodata/ignore in white)."""
    step = max(1, math.ceil(max(prediction.shape[-2:]) / max_side))
    images = [np.asarray(a[..., ::step, ::step].values) for a in (prediction, truth)]
    colours = [c.color for c in schema] + ["#ffffff"]
    cmap = ListedColormap(colours)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.8))
    for ax, image, title in zip(axes, images, ("class map", "truth"), strict=True):
        index = np.where(image == IGNORE_ID, len(schema), np.minimum(image, len(schema)))
        ax.imshow(index, cmap=cmap, vmin=-0.5, vmax=len(schema) + 0.5, interpolation="nearest")
        ax.set_title(title)
        ax.set_axis_off()
    handles = [plt.Rectangle((0, 0), 1, 1, color=c.color) for c in schema]
    fig.legend(handles, schema.names, loc="lower center", ncol=min(len(schema), 6), fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))  # room for the legend below the panels
    return _png(fig, layout=False)


def _png(fig: Figure, *, layout: bool = True) -> bytes:
    buffer = io.BytesIO()
    if layout:
        fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=_DPI)
    plt.close(fig)
    return buffer.getvalue()
