"""The acquisition date of a scene delivered as plain raster files.

A STAC item carries its ``datetime`` and a Landsat product id its acquisition date; a
plain GeoTIFF has neither, so its date is read, in this order, from:

1. an acquisition tag of the file's metadata (`ACQUISITION_KEYS`, any case, the
   dataset's tags then the first band's): GDAL and the writers of EO products put the
   sensing time there (``ACQUISITION_TIME``, Landsat ``DATE_ACQUIRED``, Sentinel-2
   ``SENSING_TIME``/``PRODUCT_START_TIME``);
2. a date in the file name: ``YYYYMMDD``, ``YYYY-MM-DD`` or ``YYYY_MM_DD``, also inside a
   longer id (``S2A_MSIL1C_20150711T100008_...``); the first one counts, since product
   ids put the sensing date before the processing date.

``TIFFTAG_DATETIME`` is never taken as the date: TIFF 6.0 defines it as the time the
image was created, and GIS writers (ArcGIS, processing chains, GDAL when asked to copy
metadata) set it to the time the file was written. Taken as the acquisition date it would
put every scene of a batch on the day it was processed and silently merge or misorder
the time steps of a ``--by-date`` cube; an undated scene is a clear error instead.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime

ACQUISITION_KEYS = (
    "ACQUISITION_TIME",
    "ACQUISITIONDATETIME",
    "ACQUISITION_DATETIME",
    "ACQUISITION_DATE",
    "ACQUISITION_START_TIME",
    "DATE_ACQUIRED",
    "SENSING_TIME",
    "SENSING_DATE",
    "SENSING_START",
    "PRODUCT_START_TIME",
    "DATATAKE_1_DATATAKE_SENSING_START",
)
"""Metadata keys holding a scene's acquisition (sensing) time, most specific first."""

CREATION_KEY = "TIFFTAG_DATETIME"
"""The TIFF creation-time tag: reported, never used as the acquisition date."""

# A timestamp's leading date, with ``-``, ``/``, ``:`` (TIFF) or no separator, and an
# optional time of day.
_STAMP = re.compile(r"\s*(\d{4})[-/:]?(\d{2})[-/:]?(\d{2})(?:[T ](\d{2}):?(\d{2})(?::?(\d{2}))?)?")
# A date inside a name: not part of a longer number; one separator kind (or none).
_NAME_DATE = re.compile(
    r"(?<!\d)((?:19|20)\d{2})([-_]?)(0[1-9]|1[0-2])\2(0[1-9]|[12]\d|3[01])(?!\d)"
)


@dataclass(frozen=True, slots=True)
class SceneDate:
    """An acquisition time and where it was read.

    Attributes:
        value: ISO date or date and time (``2015-07-11`` or ``2015-07-11T10:00:08``).
        source: Where it came from, for the ingest report: ``tag ACQUISITION_TIME``,
            ``file name s2_20150711.tif``, ``STAC datetime``...
    """

    value: str
    source: str


def parse_timestamp(text: str) -> str | None:
    """The ISO date (and time, if given) a metadata value starts with; None if none.

    Accepts ISO 8601 (``2015-07-11T10:00:08.5Z``), TIFF (``2015:07:11 10:00:08``) and
    compact (``20150711``) forms; the time zone is dropped (acquisition times are UTC).
    """
    match = _STAMP.match(text)
    if match is None:
        return None
    y, m, d, hh, mm, ss = match.groups()
    try:
        day = date(int(y), int(m), int(d))
        if hh is None:
            return day.isoformat()
        return datetime(day.year, day.month, day.day, int(hh), int(mm), int(ss or 0)).isoformat()
    except ValueError:  # month 13, 31 February, hour 25: not a date
        return None


def date_from_tags(tags: Mapping[str, str]) -> SceneDate | None:
    """The acquisition date of the first `ACQUISITION_KEYS` tag that holds one."""
    upper = {k.upper(): v for k, v in tags.items()}
    for key in ACQUISITION_KEYS:
        value = parse_timestamp(upper[key]) if key in upper else None
        if value is not None:
            return SceneDate(value, f"tag {key}")
    return None


def date_from_name(name: str) -> str | None:
    """The first valid ISO date written in a file name or id, if any."""
    for match in _NAME_DATE.finditer(name):
        y, _, m, d = match.groups()
        try:
            return date(int(y), int(m), int(d)).isoformat()
        except ValueError:  # 20150231: digits shaped like a date, but none
            continue
    return None


def file_date(tags: Mapping[str, str], name: str) -> SceneDate | None:
    """A file's acquisition date: an acquisition tag, else a date in its name."""
    found = date_from_tags(tags)
    if found is not None:
        return found
    day = date_from_name(name)
    return SceneDate(day, f"file name {name}") if day else None
