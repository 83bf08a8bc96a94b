"""Dates of a class map: naming them and choosing one (``--date``).

A per-date model (`eoseg.model_input`) maps every date of a ``--by-date`` cube into a
``(time, y, x)`` class map; a median model makes one ``(y, x)`` map. The products of a
class map (COG, quicklook, polygons, class areas, accuracy) are made of ``(y, x)`` maps:
`select_date` picks one date, by its ISO day (``2024-06-12``), a prefix naming one date
(``2024-06`` for a monthly map) or its index (``0``, ``-1`` for the last); consumers that
make a product per date iterate over `date_labels`.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import xarray as xr

from eoseg.errors import InvalidParameterError

DateChoice = str | int | None
"""A date of a class map: ISO day or a prefix naming one, index, or None (no choice)."""

DATE_FIELD = "{date}"
"""Placeholder an output path may hold, replaced by each date's ISO day."""


def date_labels(ds: xr.Dataset | xr.DataArray) -> tuple[str, ...]:
    """The ISO day (``YYYY-MM-DD``, ``NaT`` if unknown) of each date; ``()`` without dates."""
    if "time" not in ds.dims:
        return ()
    days = np.asarray(ds["time"].values).astype("datetime64[D]")
    return tuple(str(d) for d in np.datetime_as_string(days, unit="D"))


def date_index(labels: tuple[str, ...], date: str | int) -> int:
    """Index of ``date`` among ``labels``: an index (an int, or text of at most three
    digits, negative from the end), else the one ISO day starting with ``date``.

    Raises:
        InvalidParameterError: No date, or more than one, matches.
    """
    n = len(labels)
    if isinstance(date, str) and re.fullmatch(r"-?\d{1,3}", date.strip()):
        date = int(date)  # up to 3 digits: an index; 4 (a year) and more: an ISO prefix
    if isinstance(date, int):
        if not -n <= date < n:
            raise InvalidParameterError(
                f"--date {date} is out of range: the class map has {n} dates "
                f"({', '.join(labels)}); give an index 0..{n - 1} (or -1 for the last)"
            )
        return date % n
    hits = [i for i, d in enumerate(labels) if d.startswith(date.strip())]
    if len(hits) != 1:
        found = "no date" if not hits else f"{len(hits)} dates"
        raise InvalidParameterError(
            f"--date {date} matches {found} of the class map ({', '.join(labels)}): give "
            "one of these ISO days, a prefix naming one (e.g. 2024-06), or an index"
        )
    return hits[0]


def select_date(ds: xr.Dataset, date: DateChoice, *, purpose: str = "") -> xr.Dataset:
    """The ``(y, x)`` class map of one date of ``ds``.

    A map without dates is returned as it is (``date`` must then be None); a map with one
    date needs no choice.

    Args:
        ds: A class map (`eoseg.predict.open_classmap`).
        date: ISO day, a prefix naming one date, an index, or None.
        purpose: What the date is for, added to the error that asks for one (e.g.
            ``"or put {date} in the --cog path to export each"``).

    Raises:
        InvalidParameterError: ``date`` is None for a map of several dates, matches no
            date, or is given for a map without dates.
    """
    labels = date_labels(ds)
    if not labels:
        if date is not None:
            raise InvalidParameterError(
                f"--date {date} was given but the class map has no dates (its model reads "
                "the median of the cube's dates, one map): drop --date"
            )
        return ds
    if date is None:
        if len(labels) > 1:
            raise InvalidParameterError(
                f"the class map has {len(labels)} dates ({', '.join(labels)}) and this needs "
                f"one: pass --date with an ISO day (e.g. --date {labels[0]}), a prefix naming "
                f"one (e.g. {labels[0][:7]}) or an index 0..{len(labels) - 1}"
                + (f", {purpose}" if purpose else "")
            )
        date = 0
    return ds.isel(time=date_index(labels, date))


def check_one_date(raster: object, what: str) -> None:
    """Refuse a class raster with a ``time`` dimension where one ``(y, x)`` map is needed.

    Raises:
        InvalidParameterError: ``raster`` is a DataArray with a ``time`` dimension.
    """
    if isinstance(raster, xr.DataArray) and "time" in raster.dims:
        raise InvalidParameterError(
            f"{what} takes one (y, x) class map; found dims {raster.dims} with dates "
            f"{', '.join(date_labels(raster))}: choose one with "
            "eoseg.dates.select_date (--date on the command line), or iterate over the dates"
        )


def selected_date(ds: xr.Dataset | xr.DataArray) -> str | None:
    """The ISO day of a map `select_date` chose from a multi-date map, else None."""
    if "time" not in ds.coords or ds["time"].ndim != 0:
        return None
    return date_labels(ds.expand_dims("time"))[0]


def dated_path(path: Path | str, label: str) -> Path | str:
    """``path`` (a local path or URL) with `DATE_FIELD` replaced by ``label``."""
    dated = str(path).replace(DATE_FIELD, label)
    return dated if isinstance(path, str) else Path(dated)
