"""Tests of eoseg.metrics: confusion matrix (blockwise) and accuracy scores."""

from __future__ import annotations

import json
import math

import dask.array
import numpy as np
import pytest
import xarray as xr
from rich.console import Console

from eoseg.classes import ClassSchema, LandClass
from eoseg.errors import GeoreferenceError, InvalidParameterError, NoOverlapError
from eoseg.metrics import (
    AccuracyReport,
    ArrayLike,
    confusion_by_region,
    confusion_matrix,
    evaluate,
    format_report,
    report_from_confusion,
)


def _schema(n: int) -> ClassSchema:
    return ClassSchema(tuple(LandClass(i, f"c{i}", "#000000") for i in range(n)))


# Hand-computed case (pairs truth->pred): 0->0, 0->0, 0->1, 1->1, 1->2, 2->2; the
# last two pixels are skipped (255 in truth, 255 in prediction).
TRUTH = np.array([[0, 0, 0, 1], [1, 2, 255, 2]], dtype=np.uint8)
PRED = np.array([[0, 0, 1, 1], [2, 2, 0, 255]], dtype=np.uint8)
CM = np.array([[2, 1, 0], [0, 1, 1], [0, 0, 1]])


def _reference_cm(pred: np.ndarray, truth: np.ndarray, n: int) -> np.ndarray:
    cm = np.zeros((n, n), dtype=np.int64)
    valid = (pred != 255) & (truth != 255)
    np.add.at(cm, (truth[valid].astype(int), pred[valid].astype(int)), 1)
    return cm


def test_confusion_matrix_hand_computed() -> None:
    np.testing.assert_array_equal(confusion_matrix(PRED, TRUTH, 3), CM)


def test_evaluate_hand_computed() -> None:
    r = evaluate(PRED, TRUTH, _schema(3))
    assert r.overall_accuracy == pytest.approx(4 / 6)
    np.testing.assert_allclose(r.precision, [1.0, 0.5, 0.5])
    np.testing.assert_allclose(r.recall, [2 / 3, 0.5, 1.0])
    np.testing.assert_allclose(r.f1, [0.8, 0.5, 2 / 3])
    np.testing.assert_allclose(r.iou, [2 / 3, 1 / 3, 0.5])
    assert r.miou == pytest.approx(0.5)
    assert r.macro_f1 == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    np.testing.assert_array_equal(r.matrix, CM)
    assert r.support == (3, 2, 1)
    assert r.n_pixels == 6
    assert r.class_names == ("c0", "c1", "c2")


def test_class_absent_from_both_is_nan_and_excluded() -> None:
    r = evaluate(PRED, TRUTH, _schema(4))
    assert all(math.isnan(v) for v in (r.precision[3], r.recall[3], r.f1[3], r.iou[3]))
    assert r.miou == pytest.approx(0.5)  # same as with 3 classes
    d = r.to_dict()
    assert d["classes"][3] == {
        "id": 3,
        "name": "c3",
        "precision": None,
        "recall": None,
        "f1": None,
        "iou": None,
        "support": 0,
    }
    json.dumps(d, allow_nan=False)  # JSON-ready: no NaN left
    assert d["confusion_matrix"][0] == [2, 1, 0, 0]
    assert d["miou"] == pytest.approx(0.5)


def test_class_predicted_but_absent_from_truth_counts_in_miou() -> None:
    truth = np.array([0, 0, 1, 1], dtype=np.uint8)
    pred = np.array([0, 2, 1, 1], dtype=np.uint8)
    r = evaluate(pred, truth, _schema(3))
    assert math.isnan(r.recall[2])
    assert r.precision[2] == 0.0
    assert r.iou[2] == 0.0
    assert r.miou == pytest.approx((0.5 + 1.0 + 0.0) / 3)


@pytest.fixture(scope="module")
def random_pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(42)
    truth = rng.integers(0, 5, size=(100, 90), dtype=np.uint8)
    pred = np.where(rng.random(truth.shape) < 0.7, truth, rng.integers(0, 5, truth.shape))
    pred = pred.astype(np.uint8)
    truth[rng.random(truth.shape) < 0.05] = 255
    pred[rng.random(pred.shape) < 0.05] = 255
    return pred, truth


def _wrap(kind: str, a: np.ndarray, chunks: int | tuple[int, int]) -> ArrayLike:
    if kind == "numpy":
        return a
    if kind == "dask":
        return dask.array.from_array(a, chunks=chunks)
    da = xr.DataArray(
        a, dims=("y", "x"), coords={"y": np.arange(a.shape[0]), "x": np.arange(a.shape[1])}
    )
    return da.chunk({"y": chunks, "x": chunks}) if kind == "xarray-dask" else da


@pytest.mark.parametrize(
    ("pred_kind", "truth_kind", "chunks"),
    [
        ("numpy", "numpy", 32),
        ("dask", "dask", 32),
        ("dask", "numpy", 17),
        ("xarray-dask", "xarray-dask", 25),
        ("xarray", "xarray-dask", 40),
    ],
    ids=["numpy", "dask", "dask-vs-numpy", "xarray-dask", "xarray-mixed"],
)
def test_blockwise_equals_whole(
    random_pair: tuple[np.ndarray, np.ndarray], pred_kind: str, truth_kind: str, chunks: int
) -> None:
    pred, truth = random_pair
    got = confusion_matrix(_wrap(pred_kind, pred, chunks), _wrap(truth_kind, truth, chunks), 5)
    np.testing.assert_array_equal(got, _reference_cm(pred, truth, 5))


def test_differently_chunked_inputs(random_pair: tuple[np.ndarray, np.ndarray]) -> None:
    pred, truth = random_pair
    got = confusion_matrix(
        dask.array.from_array(pred, chunks=(30, 45)), dask.array.from_array(truth, chunks=16), 5
    )
    np.testing.assert_array_equal(got, _reference_cm(pred, truth, 5))


def test_shape_mismatch_raises() -> None:
    with pytest.raises(InvalidParameterError, match="shape"):
        confusion_matrix(np.zeros((4, 4), np.uint8), np.zeros((4, 5), np.uint8), 2)


def test_grid_mismatch_raises() -> None:
    a = xr.DataArray(np.zeros((2, 2), np.uint8), dims=("y", "x"), coords={"y": [0, 1], "x": [0, 1]})
    b = a.assign_coords(x=[5, 6])
    with pytest.raises(
        GeoreferenceError, match=r"another grid \(no CRS, 1 pixels, 2 x 2 px from \(4\.50"
    ):
        confusion_matrix(a, b, 2)


@pytest.mark.parametrize("bad", [3, 254], ids=["just-above", "near-ignore"])
def test_out_of_range_id_raises(bad: int) -> None:
    pred = np.array([0, 1, bad], dtype=np.uint8)
    truth = np.array([0, 1, 1], dtype=np.uint8)
    with pytest.raises(InvalidParameterError, match=rf"class ids \[{bad}\] are outside 0..2"):
        confusion_matrix(pred, truth, 3)


def test_no_common_valid_pixel_raises() -> None:
    pred = np.array([0, 255], dtype=np.uint8)
    truth = np.array([255, 1], dtype=np.uint8)
    with pytest.raises(NoOverlapError, match="share no valid pixel"):
        evaluate(pred, truth, _schema(2))


def test_format_report_renders_scores() -> None:
    r = evaluate(PRED, TRUTH, _schema(4))
    table = format_report(r)
    assert table.row_count == 4
    console = Console(record=True, width=120)
    console.print(table)
    text = console.export_text()
    assert "mIoU 0.500" in text
    assert "0.667" in text  # c0 recall / IoU, c2 F1
    assert "–" in text  # NaN of the absent class


def test_report_is_frozen() -> None:
    r = evaluate(PRED, TRUTH, _schema(3))
    assert isinstance(r, AccuracyReport)
    with pytest.raises(AttributeError):
        r.miou = 1.0  # type: ignore[misc]
    assert r == evaluate(PRED, TRUTH, _schema(3))


# --- mIoU variants, quantity and allocation disagreement, per-region matrices ------------


def test_disagreement_hand_computed() -> None:
    # CM rows truth [3, 2, 1], columns prediction [2, 2, 2] over 6 pixels:
    # Q = (|2-3| + |2-2| + |2-1|) / 2 / 6 = 1/6; D = 1 - 4/6 = 2/6; A = D - Q = 1/6.
    r = evaluate(PRED, TRUTH, _schema(3))
    assert r.quantity_disagreement == pytest.approx(1 / 6)
    assert r.allocation_disagreement == pytest.approx(1 / 6)
    d = r.to_dict()
    assert d["quantity_disagreement"] == pytest.approx(1 / 6)
    assert d["allocation_disagreement"] == pytest.approx(1 / 6)


def test_swaps_are_allocation_only() -> None:
    # One pixel of each class swapped: proportions right (Q = 0), places wrong (A = 2/8).
    r = report_from_confusion(np.array([[3, 1], [1, 3]]), ("a", "b"))
    assert r.quantity_disagreement == 0.0
    assert r.allocation_disagreement == pytest.approx(0.25)
    # All of one class mapped as the other: pure quantity (Q = D = 2/8, A = 0).
    r = report_from_confusion(np.array([[6, 0], [2, 0]]), ("a", "b"))
    assert r.quantity_disagreement == pytest.approx(0.25)
    assert r.allocation_disagreement == pytest.approx(0.0)


def test_miou_over_reference_and_all_classes() -> None:
    # IoU (0.5, 1.0, 0.0, undefined): class 2 is predicted but not in the truth, class 3
    # in neither.
    truth = np.array([0, 0, 1, 1], dtype=np.uint8)
    pred = np.array([0, 2, 1, 1], dtype=np.uint8)
    r = evaluate(pred, truth, _schema(4))
    assert r.miou == pytest.approx(0.5)  # classes in truth or prediction
    assert r.miou_reference == pytest.approx(0.75)  # classes 0 and 1
    assert r.miou_all == pytest.approx(1.5 / 4)  # undefined IoU counts 0
    d = r.to_dict()
    assert d["miou_reference_classes"] == pytest.approx(0.75)
    assert d["miou_all_classes"] == pytest.approx(0.375)
    text = Console(record=True, width=200)
    text.print(format_report(r))
    assert "reference classes 0.750, all classes 0.375" in text.export_text()


@pytest.mark.parametrize("chunks", [16, 37, 100], ids=["16", "37", "one-block"])
def test_confusion_by_region(random_pair: tuple[np.ndarray, np.ndarray], chunks: int) -> None:
    pred, truth = random_pair
    regions = np.full(pred.shape, -1, dtype=np.int32)
    regions[:40, :50] = 0
    regions[60:, 10:] = 2  # region 1 holds no pixel
    got = confusion_by_region(
        dask.array.from_array(pred, chunks=chunks),
        dask.array.from_array(truth, chunks=chunks),
        dask.array.from_array(regions, chunks=23),
        5,
        3,
    )
    assert got.shape == (3, 5, 5)
    for k in range(3):
        inside = regions == k
        expected = _reference_cm(pred[inside], truth[inside], 5)
        np.testing.assert_array_equal(got[k], expected)
    assert got[1].sum() == 0
