"""Band files form scenes by their names, given as a folder or one by one (issue 9, defect 2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from eoseg.catalog import scan_sources
from eoseg.composite import COVERED
from eoseg.cube import ingest, open_cube
from eoseg.errors import BandMismatchError
from eoseg.scene_files import group_band_files
from tests.conftest import write_geotiff

L8 = "LC08_L2SP_042034_20200101_20200113_02_T1"
L7 = "LE07_L1TP_167064_20070321_20170105_01_T1"  # Collection 1: BQA mask

GROUPS = [
    ("landsat-band-numbers", ["x_B2", "x_B10", "x_B3"], [("x", "generic", "B2 B3 B10")]),
    (
        "sentinel-2-tokens",
        ["T33_B02.jp2", "T33_B8A.jp2", "T33_B11.jp2", "T33_B01.jp2"],
        [("T33", "generic", "B01 B02 B8A B11")],
    ),
    ("resolution-suffix", ["T33_B04_10m.jp2", "T33_B05_20m.jp2"], [("T33", "generic", "B04 B05")]),
    (
        "sr-and-st-prefix",
        ["s_SR_B4", "s_ST_B10", "s_SR_B5"],
        [("s", "generic", "SR_B4 SR_B5 ST_B10")],
    ),
    ("polarisations", ["sar_vv", "sar_vh"], [("sar", "generic", "VH VV")]),
    ("two-stems", ["a_B2", "b_B2"], [("a_B2", "generic", "B2"), ("b_B2", "generic", "B2")]),
    (
        "two-folders",
        ["d1/x_B2", "d1/x_B3", "d2/x_B3", "d2/x_B2"],
        [("d1/x", "generic", "B2 B3"), ("d2/x", "generic", "B2 B3")],
    ),
    ("no-token", ["rgb", "x_B2"], [("rgb", "generic", "-"), ("x_B2", "generic", "B2")]),
    (
        "landsat-c2-l2",
        [f"{L8}_SR_B4.TIF", f"{L8}_QA_PIXEL.TIF", f"{L8}_SR_B2.TIF", f"{L8}_ST_B10.TIF"],
        [(L8, "landsat-oli-l2", "SR_B2 SR_B4")],
    ),
    (
        "landsat-c1-l1",
        [f"{L7}_B8.TIF", f"{L7}_B3.TIF", f"{L7}_BQA.TIF", f"{L7}_B6_VCID_1.TIF"],
        [(L7, "landsat-etm-l1", "B3 B6_VCID_1 B8")],
    ),
]


@pytest.mark.parametrize(("names", "expected"), [g[1:] for g in GROUPS], ids=[g[0] for g in GROUPS])
def test_files_group_by_their_names(
    tmp_path: Path, names: list[str], expected: list[tuple[str, str, str]]
) -> None:
    paths = [tmp_path / (n if "." in n else f"{n}.tif") for n in names]  # names only: no files
    groups = group_band_files(paths)
    got = [(g.id, g.profile.name, " ".join(b.name or "-" for b in g.bands)) for g in groups]
    assert got == expected


def test_landsat_names_give_mask_date_and_left_out_layers(tmp_path: Path) -> None:
    names = ["SR_B4", "QA_PIXEL", "SR_B2", "ST_B10", "QA_RADSAT", "SR_QA_AEROSOL"]
    (group,) = group_band_files([tmp_path / f"{L8}_{n}.TIF" for n in names])
    assert group.mask is not None and Path(group.mask[0]).stem.endswith("QA_PIXEL")
    assert group.mask[1].key == "qa_pixel"
    assert sorted(Path(p).stem[len(L8) + 1 :] for p in group.ignored) == [
        "QA_RADSAT",
        "SR_QA_AEROSOL",
        "ST_B10",
    ]
    assert group.datetime == "2020-01-01"
    (c1,) = group_band_files([tmp_path / f"{L7}_{n}.TIF" for n in ("B1", "BQA")])
    assert c1.mask is not None and c1.mask[1].key == "BQA"


# -- on files -----------------------------------------------------------------------------


def _write(path: Path, data: np.ndarray, res: float) -> Path:
    return write_geotiff(path, data, res=res, nodata=0)


def _band_files(folder: Path) -> list[Path]:
    """x_B2..x_B7: three 10 m bands and three 20 m bands with distinct values, nodata 0."""
    folder.mkdir()
    rng = np.random.default_rng(9)
    files = []
    for i, band in enumerate(("B2", "B3", "B4", "B5", "B6", "B7")):
        n, res = (64, 10.0) if i < 3 else (32, 20.0)
        dn = rng.integers(100 + 1000 * i, 900 + 1000 * i, (n, n)).astype("uint16")
        dn[:4, :4] = 0  # a nodata corner
        files.append(_write(folder / f"x_{band}.tif", dn, res))
    return files


def test_band_files_given_explicitly_equal_the_folder(tmp_path: Path) -> None:
    """The acceptance test: explicit band files give the multi-band cube a folder gives."""
    files = _band_files(tmp_path / "scene")
    folder = ingest([tmp_path / "scene"], tmp_path / "folder.zarr", tile_size=32)
    given = [files[i] for i in (3, 0, 5, 1, 4, 2)]  # any order
    explicit = ingest(given, tmp_path / "files.zarr", tile_size=32)
    bands = ("B2", "B3", "B4", "B5", "B6", "B7")
    assert folder.bands == explicit.bands == bands
    assert folder.scenes == explicit.scenes == ("x",)
    assert folder.skipped == explicit.skipped == ()
    a, b = open_cube(folder.path), open_cube(explicit.path)
    np.testing.assert_array_equal(a["data"].values, b["data"].values)
    np.testing.assert_array_equal(a["valid"].values, b["valid"].values)
    with rasterio.open(files[1]) as src:  # B3, on the 10 m grid: values pass unchanged
        np.testing.assert_array_equal(
            b["data"].sel(band="B3").isel(time=0).values[8:, 8:], src.read(1)[8:, 8:]
        )
    assert np.isnan(b["data"].isel(time=0).values[:, 0, 0]).all()  # nodata stays nodata


def test_lone_files_of_different_bands_are_refused(tmp_path: Path) -> None:
    """Two one-band files of different bands and stems are never composited as one band."""
    rng = np.random.default_rng(1)
    a = _write(tmp_path / "y_B2.tif", rng.integers(1, 999, (16, 16)).astype("uint16"), 10.0)
    b = _write(tmp_path / "z_B3.tif", rng.integers(1, 999, (16, 16)).astype("uint16"), 10.0)
    with pytest.raises(BandMismatchError, match=r"scene z_B3 has bands \('B3',\)"):
        ingest([a, b], tmp_path / "c.zarr", tile_size=16)


def test_one_band_in_two_files_is_a_clear_skip(tmp_path: Path) -> None:
    data = np.full((16, 16), 7, dtype="uint16")
    a = _write(tmp_path / "x_B04.tif", data, 10.0)
    b = _write(tmp_path / "x_B04.jp2", data, 10.0)  # GeoTIFF content behind a .jp2 name
    result = scan_sources([a, b])
    assert result.scenes == ()
    (skipped,) = result.skipped
    assert "has band B04 in 2 files" in skipped.reason and "keep one" in skipped.reason


def test_scene_hidden_by_earlier_scenes_is_reported_as_covered(tmp_path: Path) -> None:
    """With the first-valid composite a scene under another one is 'covered', not 'empty'."""
    first = _write(tmp_path / "first.tif", np.full((16, 16), 5, dtype="uint16"), 10.0)
    second = _write(tmp_path / "second.tif", np.full((16, 16), 9, dtype="uint16"), 10.0)
    result = ingest([first, second], tmp_path / "c.zarr", tile_size=16)
    assert result.scenes == ("first",)
    assert result.skipped == (("second", COVERED),)
    assert "covered by earlier scenes" in COVERED and "--composite median" in COVERED
    median = ingest([first, second], tmp_path / "m.zarr", tile_size=16, composite="median")
    assert median.skipped == () and set(median.scenes) == {"first", "second"}
    assert np.allclose(open_cube(median.path)["data"].values, 7.0)


# -- the real samples ---------------------------------------------------------------------


REAL = [
    (
        "sentinel2_l1c",
        ["s2_B05.jp2", "s2_B8A.jp2", "s2_B11.jp2", "s2_B01.jp2"],
        ("B01", "B05", "B8A", "B11"),
    ),
    ("sar_rotterdam", ["sar_vv.tif", "sar_vh.tif"], ("VH", "VV")),
]


@pytest.mark.realdata
@pytest.mark.parametrize(("folder", "names", "bands"), REAL, ids=[r[0] for r in REAL])
def test_real_band_files_given_explicitly_make_one_cube(
    real_data: Path, tmp_path: Path, folder: str, names: list[str], bands: tuple[str, ...]
) -> None:
    result = ingest([real_data / folder / n for n in names], tmp_path / "c.zarr", tile_size=512)
    assert result.bands == bands and len(result.scenes) == 1 and result.skipped == ()
    data = open_cube(result.path)["data"].isel(time=0)
    for band in bands:  # every band holds its own values: none is a copy of another
        layer = data.sel(band=band).values
        assert np.isfinite(layer).mean() > 0.9
    firsts = [float(np.nanmedian(data.sel(band=b).values)) for b in bands]
    assert len(set(firsts)) == len(bands)
    if folder == "sentinel2_l1c":  # the folder holds exactly these files: the same cube
        whole = ingest([real_data / folder], tmp_path / "folder.zarr", tile_size=512)
        assert whole.bands == bands
        np.testing.assert_array_equal(
            open_cube(whole.path)["data"].values, open_cube(result.path)["data"].values
        )
