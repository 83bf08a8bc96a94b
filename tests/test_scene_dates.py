"""Plain GeoTIFF scenes get their acquisition date from their tags or their name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from typer.testing import CliRunner

from eoseg.catalog import discover_scenes
from eoseg.cli import app
from eoseg.cube import ingest, open_cube
from eoseg.errors import InvalidParameterError
from eoseg.scene_dates import date_from_name, date_from_tags, parse_timestamp
from tests.conftest import write_geotiff

STAMPS = [
    ("iso", "2015-07-11T10:00:08", "2015-07-11T10:00:08"),
    ("iso-fraction-z", "2015-07-11T10:00:08.123456Z", "2015-07-11T10:00:08"),
    ("tiff", "2015:07:11 10:00:08", "2015-07-11T10:00:08"),
    ("day", "2015-07-11", "2015-07-11"),
    ("compact", "20150711", "2015-07-11"),
    ("no-month-13", "2015-13-01", None),
    ("not-a-date", "n/a", None),
]


@pytest.mark.parametrize(("text", "expected"), [s[1:] for s in STAMPS], ids=[s[0] for s in STAMPS])
def test_parse_timestamp(text: str, expected: str | None) -> None:
    assert parse_timestamp(text) == expected


NAMES = [
    ("compact", "s2_l1c_20150711.tif", "2015-07-11"),
    ("dashes", "scene_2024-06-12.tif", "2024-06-12"),
    ("underscores", "x_2024_06_12_B02.tif", "2024-06-12"),
    ("product-id", "S2A_MSIL1C_20150711T100008_N0204_R122_T33TUL_20160101T000000", "2015-07-11"),
    ("nine-digits", "tile_201507119.tif", None),
    ("no-31-february", "x_20150231.tif", None),
    ("mixed-separators", "x_2024-06_12.tif", None),
    ("none", "RGB.byte.tif", None),
]


@pytest.mark.parametrize(("name", "expected"), [n[1:] for n in NAMES], ids=[n[0] for n in NAMES])
def test_date_from_name(name: str, expected: str | None) -> None:
    assert date_from_name(name) == expected


def test_acquisition_keys_match_any_case_and_skip_unparsable_values() -> None:
    found = date_from_tags({"date_acquired": "unknown", "Sensing_Time": "2020-08-01T10:30:00Z"})
    assert found is not None and found.value == "2020-08-01T10:30:00"
    assert found.source == "tag SENSING_TIME"
    assert date_from_tags({"TIFFTAG_DATETIME": "2023:01:05 12:00:00"}) is None


def _scene(path: Path, day: int, dataset_tags: dict[str, str], band_tags: dict[str, str]) -> Path:
    """A 16x16 one-band 10 m scene whose values are ``day``, with metadata tags."""
    write_geotiff(path, np.full((16, 16), day, dtype="uint16"), nodata=0)
    with rasterio.open(path, "r+") as dst:
        dst.update_tags(**dataset_tags)
        dst.update_tags(1, **band_tags)
    return path


DATED = [
    # (file name, dataset tags, band tags, expected date, expected source)
    (
        "tag-beats-name",
        "x_20200101.tif",
        {"ACQUISITION_TIME": "2020-06-01T10:00:00", "TIFFTAG_DATETIME": "2023:01:05 12:00:00"},
        {},
        "2020-06-01T10:00:00",
        "tag ACQUISITION_TIME",
    ),
    (
        "band-tag",
        "plain.tif",
        {},
        {"DATE_ACQUIRED": "2020-07-01"},
        "2020-07-01",
        "tag DATE_ACQUIRED",
    ),
    (
        "name-beats-creation-time",
        "plain_2020-08-01.tif",
        {"TIFFTAG_DATETIME": "2023:01:05 12:00:00"},
        {},
        "2020-08-01",
        "file name plain_2020-08-01.tif",
    ),
    (
        "creation-time-only",
        "plain.tif",
        {"TIFFTAG_DATETIME": "2023:01:05 12:00:00"},
        {},
        None,
        "none: TIFFTAG_DATETIME 2023:01:05 12:00:00 is the file's creation time, not used",
    ),
]


@pytest.mark.parametrize(
    ("name", "tags", "band_tags", "date", "source"),
    [d[1:] for d in DATED],
    ids=[d[0] for d in DATED],
)
def test_scene_date_comes_from_tags_then_name(
    tmp_path: Path,
    name: str,
    tags: dict[str, str],
    band_tags: dict[str, str],
    date: str | None,
    source: str,
) -> None:
    (scene,) = discover_scenes([_scene(tmp_path / name, 1, tags, band_tags)])
    assert (scene.datetime, scene.datetime_source) == (date, source)


def _dated_scenes(folder: Path) -> list[Path]:
    """Three scenes of one frame: dated by a tag, by the name, and by both (tag wins)."""
    return [
        _scene(folder / "a.tif", 3, {"ACQUISITION_TIME": "2021-09-09T10:00:17"}, {}),
        _scene(folder / "b_20210711.tif", 1, {}, {}),
        _scene(folder / "c_20000101.tif", 2, {"SENSING_TIME": "2021-08-30T10:05:47Z"}, {}),
    ]


def test_by_date_cube_of_plain_geotiffs(tmp_path: Path) -> None:
    """The acceptance test: plain GeoTIFFs make one time step per date, in date order, and
    the report says where each date came from."""
    result = ingest(_dated_scenes(tmp_path), tmp_path / "c.zarr", tile_size=16, by_date=True)
    assert result.times == ("2021-07-11", "2021-08-30", "2021-09-09")
    assert result.skipped == ()
    cube = open_cube(result.path)
    days = np.datetime_as_string(cube["time"].values, unit="D")
    assert list(days) == list(result.times)
    # Each time step holds its own scene's values (1, 2, 3 in date order).
    assert [float(cube["data"].isel(time=t).mean()) for t in range(3)] == [1.0, 2.0, 3.0]
    assert result.to_dict()["scene_dates"] == [
        {"scene": "a", "date": "2021-09-09T10:00:17", "from": "tag ACQUISITION_TIME"},
        {"scene": "b_20210711", "date": "2021-07-11", "from": "file name b_20210711.tif"},
        {"scene": "c_20000101", "date": "2021-08-30T10:05:47", "from": "tag SENSING_TIME"},
    ]


def test_by_date_without_dates_says_why_and_how_to_fix(tmp_path: Path) -> None:
    undated = _scene(tmp_path / "plain.tif", 1, {"TIFFTAG_DATETIME": "2023:01:05 12:00:00"}, {})
    dated = _scene(tmp_path / "x_20210711.tif", 2, {}, {})
    with pytest.raises(InvalidParameterError) as err:
        ingest([undated, dated], tmp_path / "c.zarr", tile_size=16, by_date=True)
    message = str(err.value)
    assert "1 scene(s) have none (plain: none: TIFFTAG_DATETIME" in message
    assert "creation time" in message and "gdal_edit.py -mo ACQUISITION_TIME=" in message


# -- the real sample ----------------------------------------------------------------------

SLOVENIA = ("s2_l1c_20150711.tif", "s2_l1c_20150830.tif", "s2_l1c_20150909.tif")


@pytest.mark.realdata
@pytest.mark.slow
def test_real_dates_by_cli(real_data: Path, tmp_path: Path) -> None:
    """``eoseg ingest <3 files> --by-date`` on the eo-learn sample: three dated time steps."""
    folder = real_data / "eolearn_slovenia"
    out = tmp_path / "c.zarr"
    args = ["ingest", *(str(folder / n) for n in SLOVENIA), "--by-date", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{") :])
    assert report["times"] == ["2015-07-11", "2015-08-30", "2015-09-09"]
    assert [d["from"] for d in report["scene_dates"]] == ["tag ACQUISITION_TIME"] * 3
    assert report["skipped"] == []
    cube = open_cube(out)
    days = np.datetime_as_string(cube["time"].values, unit="D")
    assert list(days) == report["times"]
    for t, name in enumerate(SLOVENIA):  # each date holds its own file's values
        with rasterio.open(folder / name) as src:
            np.testing.assert_allclose(
                cube["data"].isel(time=t).mean(dim=("y", "x")).values,
                src.read().mean(axis=(1, 2)),
                rtol=0.02,
            )
