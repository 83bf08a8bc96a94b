"""Accuracy of a class map against truth: confusion matrix and per-class scores.

The confusion matrix is summed from per-block bincounts (one Dask task per chunk), so
neither raster is ever loaded whole. Rows are truth, columns prediction
(``matrix[t, p]`` counts pixels of true class ``t`` predicted as ``p``), as in
scikit-learn.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import dask
import dask.array
import numpy as np
import xarray as xr
from odc.geo.geobox import GeoBox
from rich.table import Table

from eoseg.classes import IGNORE_ID, ClassSchema
from eoseg.dates import check_one_date
from eoseg.errors import InvalidParameterError, NoOverlapError
from eoseg.grid import check_same_grid

log = logging.getLogger(__name__)

ArrayLike = np.ndarray | dask.array.Array | xr.DataArray

_BLOCK = 2048
"""Block edge (pixels) used to split numpy inputs, bounding temporary memory."""


@dataclass(frozen=True, slots=True)
class AccuracyReport:
    """Accuracy scores of a class map.

    Per-class scores are NaN where undefined: precision (user's accuracy) when the class
    is never predicted, recall (producer's accuracy) when it is absent from the truth, F1
    and IoU when it is absent from both. ``miou`` and ``macro_f1`` average over the classes
    present in the truth *or* the prediction (those whose IoU is defined): a class absent
    from both says nothing about the map, while a class that is predicted but absent from
    the truth is an error and counts with IoU 0. ``miou_reference`` averages over the
    classes present in the truth only, ``miou_all`` over every class of the schema (an
    undefined IoU counting 0).

    Quantity and allocation disagreement (Pontius and Millones 2011) split the
    disagreement ``1 - overall_accuracy`` into the part due to wrong class proportions
    and the part due to wrong places, on the matrix as proportions ``p``:
    ``Q = sum_j |p[:, j].sum() - p[j, :].sum()| / 2`` and ``A = (1 - OA) - Q``.

    Attributes:
        class_names: Class names in id order.
        confusion: Pixel counts, ``confusion[truth][pred]``.
        overall_accuracy: Correct pixels / valid pixels.
        precision: Per class, TP / (TP + FP).
        recall: Per class, TP / (TP + FN).
        f1: Per class, 2 TP / (2 TP + FP + FN).
        iou: Per class, TP / (TP + FP + FN).
        miou: Mean IoU over classes present in truth or prediction.
        macro_f1: Mean F1 over the same classes.
        miou_reference: Mean IoU over the classes present in the truth (reference).
        miou_all: Mean IoU over all classes, an undefined IoU counting 0.
        quantity_disagreement: Pontius and Millones' Q, a proportion of the pixels.
        allocation_disagreement: Pontius and Millones' A, a proportion of the pixels.
    """

    class_names: tuple[str, ...]
    confusion: tuple[tuple[int, ...], ...]
    overall_accuracy: float
    precision: tuple[float, ...]
    recall: tuple[float, ...]
    f1: tuple[float, ...]
    iou: tuple[float, ...]
    miou: float
    macro_f1: float
    miou_reference: float
    miou_all: float
    quantity_disagreement: float
    allocation_disagreement: float

    @property
    def matrix(self) -> np.ndarray:
        """The confusion matrix as an ``int64`` array (rows truth, columns prediction)."""
        return np.array(self.confusion, dtype=np.int64)

    @property
    def support(self) -> tuple[int, ...]:
        """Truth pixels of each class."""
        return tuple(int(sum(row)) for row in self.confusion)

    @property
    def n_pixels(self) -> int:
        """Pixels valid in both truth and prediction."""
        return int(sum(self.support))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; NaN scores become ``None``."""
        support = self.support
        return {
            "n_pixels": self.n_pixels,
            "overall_accuracy": nan_to_none(self.overall_accuracy),
            "miou": nan_to_none(self.miou),
            "macro_f1": nan_to_none(self.macro_f1),
            "miou_reference_classes": nan_to_none(self.miou_reference),
            "miou_all_classes": nan_to_none(self.miou_all),
            "quantity_disagreement": self.quantity_disagreement,
            "allocation_disagreement": self.allocation_disagreement,
            "class_names": list(self.class_names),
            "confusion_matrix": [list(row) for row in self.confusion],
            "classes": [
                {
                    "id": i,
                    "name": name,
                    "precision": nan_to_none(self.precision[i]),
                    "recall": nan_to_none(self.recall[i]),
                    "f1": nan_to_none(self.f1[i]),
                    "iou": nan_to_none(self.iou[i]),
                    "support": support[i],
                }
                for i, name in enumerate(self.class_names)
            ],
        }


def confusion_matrix(
    pred: ArrayLike, truth: ArrayLike, num_classes: int, ignore: int = IGNORE_ID
) -> np.ndarray:
    """Confusion matrix of two class rasters, computed block by block.

    Args:
        pred: Predicted class ids (numpy, Dask, or a DataArray backed by either).
        truth: True class ids, same shape (and grid, for DataArrays) as ``pred``.
        num_classes: Number of classes; ids must be ``< num_classes`` or ``ignore``.
        ignore: Id skipped in either raster (nodata in maps, ignore in labels).

    Returns:
        ``int64`` array ``(num_classes, num_classes)``, rows truth, columns prediction.

    Raises:
        InvalidParameterError: Shapes or grids differ, or an id is out of range.
    """
    if num_classes < 1 or num_classes > IGNORE_ID:
        raise InvalidParameterError(f"num_classes must be 1..{IGNORE_ID}; found {num_classes}")
    _check_same_grid(pred, truth)
    p = _as_dask(pred)
    t = _as_dask(truth).rechunk(p.chunks)
    parts = [
        dask.delayed(_block_confusion)(pb, tb, num_classes, ignore)
        for pb, tb in zip(p.to_delayed().ravel(), t.to_delayed().ravel(), strict=True)
    ]
    total = np.zeros((num_classes, num_classes), dtype=np.int64)
    for part in dask.compute(*parts):
        total += part
    return total


def confusion_by_region(
    pred: ArrayLike,
    truth: ArrayLike,
    regions: ArrayLike,
    num_classes: int,
    num_regions: int,
    ignore: int = IGNORE_ID,
) -> np.ndarray:
    """One confusion matrix per region, computed block by block like `confusion_matrix`.

    Args:
        pred: Predicted class ids.
        truth: True class ids on the same grid.
        regions: Region index of each pixel (``0..num_regions - 1``; any other value,
            e.g. -1, is outside every region), on the same grid.
        num_classes: Number of classes.
        num_regions: Number of regions.
        ignore: Id skipped in ``pred`` and ``truth``.

    Returns:
        ``int64`` array ``(num_regions, num_classes, num_classes)``.
    """
    if num_classes < 1 or num_classes > IGNORE_ID:
        raise InvalidParameterError(f"num_classes must be 1..{IGNORE_ID}; found {num_classes}")
    _check_same_grid(pred, truth)
    _check_same_grid(pred, regions)
    p = _as_dask(pred)
    t = _as_dask(truth).rechunk(p.chunks)
    r = _as_dask(regions).rechunk(p.chunks)
    blocks = zip(
        p.to_delayed().ravel(), t.to_delayed().ravel(), r.to_delayed().ravel(), strict=True
    )
    parts = [
        dask.delayed(_block_region_confusion)(pb, tb, rb, num_classes, num_regions, ignore)
        for pb, tb, rb in blocks
    ]
    total = np.zeros((num_regions, num_classes, num_classes), dtype=np.int64)
    for part in dask.compute(*parts):
        total += part
    return total


def evaluate(pred: ArrayLike, truth: ArrayLike, schema: ClassSchema) -> AccuracyReport:
    """Score a class map against truth (255 in either is skipped).

    Args:
        pred: Predicted class ids.
        truth: True class ids on the same grid.
        schema: The classes of both rasters.

    Returns:
        The accuracy report.

    Raises:
        NoOverlapError: No pixel is valid in both rasters.
        InvalidParameterError: Shapes differ or ids fall outside the schema.
    """
    check_one_date(pred, "evaluate")
    return report_from_confusion(confusion_matrix(pred, truth, len(schema)), schema.names)


def report_from_confusion(cm: np.ndarray, class_names: tuple[str, ...]) -> AccuracyReport:
    """Scores of a confusion matrix (rows truth, columns prediction).

    Raises:
        NoOverlapError: The matrix is empty (no pixel valid in both rasters).
    """
    n = int(cm.sum())
    if n == 0:
        raise NoOverlapError(
            "prediction and truth share no valid pixel (every pixel is 255 in one of them): "
            "check that both cover the same area on the same grid"
        )
    tp = np.diag(cm).astype(np.float64)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    iou = safe_ratio(tp, tp + fp + fn)
    f1 = safe_ratio(2 * tp, 2 * tp + fp + fn)
    present = ~np.isnan(iou)  # in truth or prediction
    in_truth = cm.sum(axis=1) > 0
    # Pontius and Millones (2011) on proportions: rows truth, columns prediction.
    quantity = float(np.abs(cm.sum(axis=0) - cm.sum(axis=1)).sum() / (2 * n))
    disagreement = 1.0 - float(tp.sum() / n)
    return AccuracyReport(
        class_names=tuple(class_names),
        confusion=tuple(tuple(int(v) for v in row) for row in cm),
        overall_accuracy=float(tp.sum() / n),
        precision=as_floats(safe_ratio(tp, tp + fp)),
        recall=as_floats(safe_ratio(tp, tp + fn)),
        f1=as_floats(f1),
        iou=as_floats(iou),
        miou=float(iou[present].mean()),
        macro_f1=float(f1[present].mean()),
        miou_reference=float(iou[in_truth].mean()) if in_truth.any() else math.nan,
        miou_all=float(np.nan_to_num(iou, nan=0.0).mean()),
        quantity_disagreement=quantity,
        allocation_disagreement=max(disagreement - quantity, 0.0),
    )


COLUMNS = (
    "class",
    "user's accuracy (precision)",
    "producer's accuracy (recall)",
    "F1",
    "IoU",
    "support",
)
"""Column titles of the per-class table (console and report)."""


def format_report(report: AccuracyReport, title: str = "Accuracy") -> Table:
    """A rich table of per-class scores, with overall accuracy and mIoU in the caption."""
    table = Table(title=title, caption=_summary(report))
    for col in COLUMNS:
        table.add_column(col, justify="left" if col == "class" else "right")
    for i, name in enumerate(report.class_names):
        table.add_row(
            name,
            _fmt(report.precision[i]),
            _fmt(report.recall[i]),
            _fmt(report.f1[i]),
            _fmt(report.iou[i]),
            f"{report.support[i]:,}",
        )
    return table


def _block_confusion(p: np.ndarray, t: np.ndarray, n: int, ignore: int) -> np.ndarray:
    """Confusion matrix of one block."""
    p = np.asarray(p).ravel()
    t = np.asarray(t).ravel()
    valid = (p != ignore) & (t != ignore)
    p = p[valid].astype(np.int64)
    t = t[valid].astype(np.int64)
    _check_ids(p, t, n, ignore)
    return np.bincount(t * n + p, minlength=n * n).reshape(n, n)


def _check_ids(p: np.ndarray, t: np.ndarray, n: int, ignore: int) -> None:
    """Every id of valid pixels is a class id ``0..n-1``."""
    if p.size and (min(p.min(), t.min()) < 0 or max(p.max(), t.max()) >= n):
        bad = sorted({int(v) for v in np.concatenate([p, t]) if v < 0 or v >= n})
        raise InvalidParameterError(
            f"class ids {bad[:10]} are outside 0..{n - 1} (and not the ignore id {ignore}): "
            "pass the schema both rasters were made with"
        )


def _block_region_confusion(
    p: np.ndarray, t: np.ndarray, r: np.ndarray, n: int, n_regions: int, ignore: int
) -> np.ndarray:
    """Confusion matrices of one block, one per region, from a single bincount."""
    r = np.asarray(r).ravel().astype(np.int64)
    inside = (r >= 0) & (r < n_regions)
    p = np.asarray(p).ravel()[inside]
    t = np.asarray(t).ravel()[inside]
    r = r[inside]
    valid = (p != ignore) & (t != ignore)
    _check_ids(p[valid], t[valid], n, ignore)
    flat = (r[valid] * n + t[valid].astype(np.int64)) * n + p[valid].astype(np.int64)
    return np.bincount(flat, minlength=n_regions * n * n).reshape(n_regions, n, n)


def _as_dask(x: ArrayLike) -> dask.array.Array:
    data = x.data if isinstance(x, xr.DataArray) else x
    if isinstance(data, dask.array.Array):
        return data
    return dask.array.from_array(np.asarray(data), chunks=_BLOCK)


def _check_same_grid(pred: ArrayLike, truth: ArrayLike) -> None:
    if pred.shape != truth.shape:
        raise InvalidParameterError(
            f"prediction has shape {pred.shape} but truth {truth.shape}: "
            "put both on the same grid (resample the truth onto the map's grid)"
        )
    if isinstance(pred, xr.DataArray) and isinstance(truth, xr.DataArray):
        import odc.geo.xr  # noqa: F401  (registers the .odc accessor)

        grids = pred.odc.geobox, truth.odc.geobox
        if isinstance(grids[0], GeoBox) and isinstance(grids[1], GeoBox):
            check_same_grid(
                grids[0],
                grids[1],
                what="the truth",
                on="the class map",
                fix="resample the truth onto the map's grid (eoseg evaluate --truth does so "
                "for a GeoTIFF or vector file)",
            )


def safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` elementwise, NaN where ``den`` is 0 (a score with no support)."""
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def as_floats(a: np.ndarray) -> tuple[float, ...]:
    """A numpy vector as a tuple of Python floats (for frozen, JSON-ready values)."""
    return tuple(float(v) for v in a)


def nan_to_none(v: float) -> float | None:
    """JSON has no NaN: an undefined score is ``None``."""
    return None if math.isnan(v) else float(v)


def _fmt(v: float) -> str:
    return "–" if math.isnan(v) else f"{v:.3f}"


def _summary(report: AccuracyReport) -> str:
    return (
        f"overall accuracy {_fmt(report.overall_accuracy)} · mIoU {_fmt(report.miou)} "
        f"(reference classes {_fmt(report.miou_reference)}, all classes "
        f"{_fmt(report.miou_all)}) · macro F1 {_fmt(report.macro_f1)} · quantity "
        f"disagreement {_fmt(report.quantity_disagreement)} · allocation disagreement "
        f"{_fmt(report.allocation_disagreement)} · {report.n_pixels:,} pixels"
    )
