"""Landsat scenes as USGS delivers them: folders of product files and STAC items (issue 9,
defect 3). A QA band is the mask of the scene, never a band of the cube."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_sensors import write_item  # the static STAC item writer of the sensor tests

from eoseg.cube import ingest, open_cube
from eoseg.errors import BandMismatchError
from eoseg.landsat import SR_OFFSET, SR_SCALE
from eoseg.sensors import detect_profile, get_profile, invalid_by_mask, same_band
from tests.conftest import write_geotiff

PRODUCT = "LC08_L2SP_042034_20200101_20200113_02_T1"
SR = tuple(f"SR_B{i}" for i in range(1, 8))
KEYS = ("coastal", "blue", "green", "red", "nir08", "swir16", "swir22")
N = 48
ORIGIN = (399990.0, 4100010.0)  # EPSG:32611, a 30 m Landsat-like frame

CLEAR = (1 << 6) | (1 << 8) | (1 << 10) | (1 << 12) | (1 << 14)  # 21824: clear, low confidences
QA_FLAGS = {  # bit set -> patch (rows, cols)
    1: (slice(2, 6), slice(30, 34)),  # dilated cloud
    2: (slice(40, 44), slice(2, 6)),  # cirrus (OLI)
    3: (slice(10, 20), slice(20, 32)),  # cloud
    4: (slice(22, 28), slice(20, 32)),  # cloud shadow
    5: (slice(34, 38), slice(36, 44)),  # snow
}


def _tif(path: Path, data: np.ndarray, nodata: float | None = 0) -> Path:
    return write_geotiff(path, data, crs="EPSG:32611", origin=ORIGIN, res=30.0, nodata=nodata)


@pytest.fixture
def l2_scene(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """A Landsat 8 C2 L2 scene folder as USGS delivers it: SR bands, QA_PIXEL with cloud,
    shadow, snow, cirrus and dilated-cloud patches and a fill corner, plus the layers that
    are not cube bands (ST_B10, QA_RADSAT, SR_QA_AEROSOL, MTL.txt).

    Returns:
        ``(folder, DN (band, y, x), expected valid (y, x))``.
    """
    folder = tmp_path / PRODUCT
    folder.mkdir()
    rng = np.random.default_rng(8)
    dn = rng.integers(7500, 30000, (len(SR), N, N)).astype("uint16")
    qa = np.full((N, N), CLEAR, dtype="uint16")
    valid = np.ones((N, N), dtype=bool)
    for bit, patch in QA_FLAGS.items():
        qa[patch] |= 1 << bit
        valid[patch] = False
    dn[:, :5, :5], qa[:5, :5], valid[:5, :5] = 0, 1, False  # fill: DN 0, QA_PIXEL bit 0
    for band, layer in zip(SR, dn, strict=True):
        _tif(folder / f"{PRODUCT}_{band}.TIF", layer)
    _tif(folder / f"{PRODUCT}_QA_PIXEL.TIF", qa, nodata=1)
    _tif(folder / f"{PRODUCT}_ST_B10.TIF", np.full((N, N), 44000, dtype="uint16"))
    _tif(folder / f"{PRODUCT}_QA_RADSAT.TIF", np.zeros((N, N), dtype="uint16"), None)
    _tif(folder / f"{PRODUCT}_SR_QA_AEROSOL.TIF", np.full((N, N), 2, dtype="uint8"), 1)
    (folder / f"{PRODUCT}_MTL.txt").write_text("GROUP = LANDSAT_METADATA_FILE\n")
    return folder, dn, valid


def _check_cube(path: Path, dn: np.ndarray, valid: np.ndarray) -> None:
    cube = open_cube(path)
    assert tuple(cube["band"].values) == SR
    got_valid = cube["valid"].isel(time=0).values.astype(bool)
    np.testing.assert_array_equal(got_valid, valid)  # invalid exactly at QA flags and fill
    data = cube["data"].isel(time=0).values
    expected = dn.astype("float64") * SR_SCALE + SR_OFFSET
    np.testing.assert_allclose(data[:, valid], expected[:, valid], atol=1e-6)
    assert np.isnan(data[:, ~valid]).all()


def test_landsat_l2_folder_masks_clouds_with_qa_pixel(
    l2_scene: tuple[Path, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    folder, dn, valid = l2_scene
    result = ingest([folder], tmp_path / "c.zarr", tile_size=32)
    assert result.bands == SR  # QA_PIXEL is the mask; ST_B10 and the QA layers are not bands
    assert result.scenes == (PRODUCT,) and result.skipped == ()
    assert result.times == ("2020-01-01",)  # from the product id
    assert open_cube(result.path).attrs["sensor"] == "landsat-oli-l2"
    _check_cube(result.path, dn, valid)


def test_landsat_l2_files_given_explicitly_equal_the_folder(
    l2_scene: tuple[Path, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    folder, dn, valid = l2_scene
    files = sorted(folder.glob("*.TIF"), reverse=True)
    result = ingest(files, tmp_path / "c.zarr", tile_size=32)
    assert result.scenes == (PRODUCT,) and result.skipped == ()
    _check_cube(result.path, dn, valid)


@pytest.mark.parametrize(
    "item_id", ["LC08_L2SP_042034_20200101_02_T1", "my-scene"], ids=["product-id", "other-id"]
)
def test_landsat_c2_l2_stac_item_ingests_the_same(
    l2_scene: tuple[Path, np.ndarray, np.ndarray], tmp_path: Path, item_id: str
) -> None:
    """A landsat-c2-l2 item (Planetary Computer keys): found by its product id, or by its
    collection and platform when the id is not one."""
    folder, dn, valid = l2_scene
    raster = {"nodata": 0, "data_type": "uint16", "scale": 2.75e-05, "offset": -0.2}
    assets: dict[str, tuple[Path, dict]] = {
        key: (
            folder / f"{PRODUCT}_{band}.TIF",
            {"eo:bands": [{"name": band, "common_name": key}], "raster:bands": [raster]},
        )
        for key, band in zip(KEYS, SR, strict=True)
    }
    assets["qa_pixel"] = (folder / f"{PRODUCT}_QA_PIXEL.TIF", {"roles": ["cloud"]})
    assets["lwir11"] = (
        folder / f"{PRODUCT}_ST_B10.TIF",
        {"raster:bands": [{"scale": 0.00341802, "offset": 149.0}], "roles": ["temperature"]},
    )
    assets["qa_radsat"] = (folder / f"{PRODUCT}_QA_RADSAT.TIF", {"roles": ["saturation"]})
    props = {"platform": "landsat-8", "instruments": ["oli", "tirs"], "landsat:correction": "L2SP"}
    item = write_item(tmp_path, item_id, props, assets, "landsat-c2-l2")
    result = ingest([item], tmp_path / "c.zarr", tile_size=32)
    assert result.scenes == (item_id,) and result.skipped == ()
    assert open_cube(result.path).attrs["sensor"] == "landsat-oli-l2"
    _check_cube(result.path, dn, valid)


def test_landsat_c1_l1_keeps_digital_numbers_and_reads_bqa(tmp_path: Path) -> None:
    """Level-1 DN are kept as they are; a Collection 1 BQA masks fill, cloud and
    high-confidence shadow/cirrus, not low-confidence shadow."""
    product = "LC08_L1TP_042034_20170616_20170629_01_T1"
    rng = np.random.default_rng(3)
    dn = rng.integers(5000, 20000, (8, N, N)).astype("uint16")
    clear = 2720  # C1 "clear": low cloud, shadow, snow and cirrus confidence (01 each)

    def high(first: int) -> int:  # a 2-bit confidence field set to 3 (high)
        return clear | (3 << first)

    patches = [  # (first row, BQA value, stays valid), four rows each
        (0, 1, False),  # designated fill
        (8, clear | 1 << 4, False),  # cloud
        (16, high(7), False),  # cloud shadow, high confidence
        (24, clear, True),  # cloud shadow, low confidence: kept
        (32, high(11), False),  # cirrus, high confidence
    ]
    bqa = np.full((N, N), clear, dtype="uint16")
    valid = np.ones((N, N), dtype=bool)
    for row, value, keep in patches:
        bqa[row : row + 4], valid[row : row + 4] = value, keep
    names = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B9")
    files = [_tif(tmp_path / f"{product}_{b}.TIF", d) for b, d in zip(names, dn, strict=True)]
    files.append(_tif(tmp_path / f"{product}_BQA.TIF", bqa, None))
    result = ingest(files, tmp_path / "c.zarr", tile_size=32)
    assert result.bands == names and result.skipped == ()
    cube = open_cube(result.path)
    assert cube.attrs["sensor"] == "landsat-oli-l1"
    np.testing.assert_array_equal(cube["valid"].isel(time=0).values.astype(bool), valid)
    np.testing.assert_array_equal(cube["data"].isel(time=0).values[:, valid], dn[:, valid])


DETECT = [
    (("landsat-c2-l2", "landsat-5", None, ("tm",)), "landsat-tm-l2"),
    (("landsat-c2-l2", "landsat-7", None, ("etm+",)), "landsat-etm-l2"),
    (("landsat-c2-l2", "landsat-9", None, ("oli", "tirs")), "landsat-oli-l2"),
    (("landsat-c2l1", "LANDSAT_8", None, ("OLI_TIRS",)), "landsat-oli-l1"),
    (("landsat-c2-l1", "landsat-5", None, ("mss",)), "generic"),  # MSS has no profile
    ((None, "landsat-8", None, ("oli",)), "generic"),  # a platform names no level
]


@pytest.mark.parametrize(
    ("args", "profile"), DETECT, ids=[d[1] + str(i) for i, d in enumerate(DETECT)]
)
def test_detect_landsat_from_stac_properties(args: tuple, profile: str) -> None:
    assert detect_profile(*args).name == profile


@pytest.mark.parametrize(
    ("item_id", "profile"),
    [
        ("LT05_L2SP_010020_19860219_20200918_02_T1", "landsat-tm-l2"),
        ("LE07_L1TP_167064_20070321_20170105_01_T1", "landsat-etm-l1"),
        ("LC09_L2SP_010065_20220129_02_T1", "landsat-oli-l2"),
        ("LE07_L2SP_092013_20211007_20211104_02_T2_SR", "landsat-etm-l2"),  # USGS STAC id
        ("LM05_L1GS_001001_19850524_20200902_02_T2", "generic"),
    ],
)
def test_detect_landsat_from_product_id(item_id: str, profile: str) -> None:
    assert detect_profile(None, item_id=item_id).name == profile


def test_qa_pixel_cirrus_bit_counts_on_oli_only() -> None:
    codes = np.array([CLEAR, CLEAR | 1 << 2, CLEAR | 1 << 3, 1, CLEAR | 1 << 7])  # 7 = water
    for name, cirrus in (("landsat-tm-l2", False), ("landsat-oli-l2", True)):
        (qa,) = get_profile(name).masks
        bad = invalid_by_mask(codes, qa.values, qa.invalid_bits)
        assert bad.tolist() == [False, cirrus, True, True, False]


def test_sensors_numbering_bands_differently_are_never_composited(tmp_path: Path) -> None:
    """SR_B1..SR_B3 are blue, green, red on Landsat 7 but coastal, blue, green on Landsat 8."""
    assert same_band("landsat-tm-l2", "landsat-etm-l2", "SR_B1")
    assert not same_band("landsat-etm-l2", "landsat-oli-l2", "SR_B1")
    assert same_band("generic", "landsat-oli-l2", "SR_B1")
    files = []
    for product in (PRODUCT, "LE07_L2SP_042034_20200109_20200204_02_T1"):
        for band in ("SR_B1", "SR_B2", "SR_B3"):
            files.append(_tif(tmp_path / f"{product}_{band}.TIF", np.full((8, 8), 9000, "uint16")))
    with pytest.raises(BandMismatchError, match=r"band SR_B1 of scene LE07.*another band"):
        ingest(files, tmp_path / "c.zarr", tile_size=8)
