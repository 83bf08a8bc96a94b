"""Tests of eoseg.dates: naming the dates of a class map and choosing one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from eoseg.dates import (
    check_one_date,
    date_index,
    date_labels,
    dated_path,
    select_date,
    selected_date,
)
from eoseg.errors import InvalidParameterError

DAYS = ("2024-05-10", "2024-06-12", "2024-06-30")


@pytest.fixture
def monthly() -> xr.Dataset:
    cls = np.arange(3 * 4, dtype=np.uint8).reshape(3, 2, 2)
    times = np.array(DAYS, dtype="datetime64[ns]")
    return xr.Dataset({"class": (("time", "y", "x"), cls)}, coords={"time": times})


@pytest.mark.parametrize(
    ("choice", "index"),
    [("2024-05-10", 0), ("2024-05", 0), ("2024-06-3", 2), (1, 1), ("1", 1), (-1, 2), ("-3", 0)],
    ids=["day", "month", "prefix", "int", "text-index", "last", "text-negative"],
)
def test_a_date_is_chosen_by_day_prefix_or_index(
    monthly: xr.Dataset, choice: str | int, index: int
) -> None:
    assert date_labels(monthly) == DAYS
    assert date_index(DAYS, choice) == index
    one = select_date(monthly, choice)
    assert one["class"].dims == ("y", "x")
    np.testing.assert_array_equal(one["class"].values, monthly["class"].values[index])
    assert selected_date(one) == DAYS[index] and selected_date(monthly) is None


@pytest.mark.parametrize(
    ("choice", "message"),
    [("2024-06", "matches 2 dates"), ("2023", "matches no date"), (3, "out of range")],
    ids=["ambiguous", "none", "range"],
)
def test_a_date_that_names_no_single_date_is_refused(
    monthly: xr.Dataset, choice: str | int, message: str
) -> None:
    with pytest.raises(InvalidParameterError, match=message) as err:
        select_date(monthly, choice)
    assert "2024-05-10, 2024-06-12, 2024-06-30" in str(err.value)


def test_one_map_is_needed_but_the_map_has_dates(monthly: xr.Dataset) -> None:
    with pytest.raises(InvalidParameterError, match=r"3 dates .*--date 2024-05-10.*or else"):
        select_date(monthly, None, purpose="or else")
    with pytest.raises(InvalidParameterError, match="--date"):
        check_one_date(monthly["class"], "vectorize")
    single = monthly.isel(time=[1])
    assert selected_date(select_date(single, None)) == DAYS[1]  # one date: no choice needed


def test_a_map_without_dates_takes_no_date(monthly: xr.Dataset) -> None:
    flat = monthly.isel(time=0, drop=True)
    assert date_labels(flat) == () and select_date(flat, None) is flat
    check_one_date(flat["class"], "vectorize")
    with pytest.raises(InvalidParameterError, match="drop --date"):
        select_date(flat, "2024-05-10")
    assert dated_path(Path("out/map_{date}.tif"), DAYS[0]) == Path("out/map_2024-05-10.tif")
