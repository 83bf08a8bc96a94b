from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from eoseg.catalog import discover_scenes, scan_sources
from eoseg.errors import (
    BandMismatchError,
    EosegError,
    GeoreferenceError,
    InputNotFoundError,
    InvalidParameterError,
    UnreadableRasterError,
)


def _write(path: Path, count: int = 1, crs: str | None = "EPSG:32632") -> Path:
    data = np.arange(count * 20 * 30, dtype="uint16").reshape(count, 20, 30)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=30,
        height=20,
        count=count,
        dtype="uint16",
        crs=crs,
        transform=from_origin(500000, 5300000, 10, 10),
        nodata=0,
    ) as dst:
        dst.write(data)
    return path


def test_stac_catalog_gives_two_zone_scenes(demo_data) -> None:  # type: ignore[no-untyped-def]
    scenes = discover_scenes([demo_data.catalog])
    assert len(scenes) == 2
    assert {s.crs.epsg for s in scenes} == {32632, 32633}
    assert all(s.mask is not None for s in scenes)
    assert scenes[0].band_names == scenes[1].band_names == ("B02", "B03", "B04", "B08")


def test_folder_of_band_files_is_one_scene(tmp_path: Path) -> None:
    for band in ("B04", "B8A"):
        _write(tmp_path / f"T32_20240101_{band}.jp2")  # GeoTIFF content behind a .jp2 name
    (scene,) = discover_scenes([tmp_path])
    assert scene.band_names == ("B04", "B8A")
    assert scene.bounds == (500000.0, 5299800.0, 500300.0, 5300000.0)


def test_multiband_file_bands_are_numbered(tmp_path: Path) -> None:
    (scene,) = discover_scenes([_write(tmp_path / "x.tif", count=3)])
    assert scene.band_names == ("band_1", "band_2", "band_3")
    assert scene.nodata == 0 and scene.resolution == 10.0


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="does not exist"):
        discover_scenes([tmp_path / "nope.tif"])


def test_corrupt_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00garbage" * 10)
    with pytest.raises(UnreadableRasterError, match="not a raster GDAL can read"):
        discover_scenes([bad])


def test_truncated_file(tmp_path: Path) -> None:
    good = _write(tmp_path / "good.tif")
    cut = tmp_path / "cut.tif"
    cut.write_bytes(good.read_bytes()[:200])
    with pytest.raises(UnreadableRasterError):
        discover_scenes([cut])


def test_no_crs(tmp_path: Path) -> None:
    path = tmp_path / "nocrs.tif"
    with rasterio.open(path, "w", driver="GTiff", width=4, height=4, count=1, dtype="uint8") as dst:
        dst.write(np.ones((1, 4, 4), dtype="uint8"))
    with pytest.raises(GeoreferenceError, match="no CRS"):
        discover_scenes([path])


# -- per-scene skipping -------------------------------------------------------------------


def _item(folder: Path, item_id: str, assets: dict[str, Path], **props: object) -> Path:
    """A STAC item with one ``data`` asset per key, saved beside its files."""
    import pystac

    bbox = [10.0, 47.8, 10.01, 47.81]
    geom = {
        "type": "Polygon",
        "coordinates": [[[10.0, 47.8], [10.01, 47.8], [10.01, 47.81], [10.0, 47.8]]],
    }
    item = pystac.Item(
        item_id,
        geom,
        bbox,
        datetime(2024, 5, 1, tzinfo=UTC),
        dict(props),
        collection=str(props.pop("collection", "")) or None,
    )
    for key, path in assets.items():
        item.add_asset(key, pystac.Asset(str(path), roles=["data"]))
    out = folder / f"{item_id}.json"
    item.save_object(dest_href=str(out), include_self_link=False)
    return out


def _corrupt(tmp: Path) -> Path:
    path = tmp / "notes.tif"  # a text file whose extension lies
    path.write_text("this is not a raster\n" * 20)
    return path


def _truncated(tmp: Path) -> Path:
    good = _write(tmp / "whole.tif")
    cut = tmp / "cut.tif"
    cut.write_bytes(good.read_bytes()[:-600])  # header intact, pixel data cut short
    good.unlink()
    return cut


def _no_crs(tmp: Path) -> Path:
    return _write(tmp / "nocrs.tif", crs=None)


def _missing_asset(tmp: Path) -> Path:
    return _item(tmp, "S2_missing", {"B04": tmp / "gone_B04.tif"})


def _missing_band(tmp: Path) -> Path:
    bands = {b: _write(tmp / f"{b}.tif") for b in ("B02", "B03", "B04")}  # no B08 ... B12
    return _item(tmp, "S2_partial", bands, collection="sentinel-2-l2a", platform="sentinel-2a")


def _unknown_sensor(tmp: Path) -> Path:
    return _item(tmp, "odd", {"B04": _write(tmp / "B04.tif")}, **{"eoseg:sensor": "landsat-99"})


BAD = [
    (_corrupt, UnreadableRasterError, "not a raster GDAL can read"),
    (_truncated, UnreadableRasterError, "truncated"),
    (_no_crs, GeoreferenceError, "no CRS"),
    (_missing_asset, InputNotFoundError, "gone_B04.tif of STAC item S2_missing does not exist"),
    (_missing_band, BandMismatchError, "lacks band.*B01.*expected assets for"),
    (_unknown_sensor, InvalidParameterError, "unknown sensor 'landsat-99'"),
]


@pytest.mark.parametrize(("make", "error", "reason"), BAD, ids=[b[0].__name__[1:] for b in BAD])
def test_bad_scene_is_skipped_and_others_go_on(
    tmp_path: Path, make: Callable[[Path], Path], error: type[Exception], reason: str
) -> None:
    bad_dir, good_dir = tmp_path / "bad", tmp_path / "good"
    bad_dir.mkdir(), good_dir.mkdir()
    bad = make(bad_dir)
    good = _write(good_dir / "T32_20240101_B04.jp2")  # GeoTIFF content behind a .jp2 name
    result = scan_sources([bad, good])
    assert [s.id for s in result.scenes] == ["T32_20240101_B04"]
    (skipped,) = result.skipped
    assert skipped.source == str(bad)
    assert re.search(reason, skipped.reason), skipped.reason
    assert ":" in skipped.reason  # what was found, then the fix
    with pytest.raises(error, match=reason):
        discover_scenes([bad, good])
    assert isinstance(skipped.error, EosegError)


def test_scan_of_nothing_is_empty_but_discover_raises(tmp_path: Path) -> None:
    result = scan_sources([tmp_path / "nope.tif"])
    assert result.scenes == () and result.skipped[0].id is None
    with pytest.raises(InputNotFoundError, match="does not exist"):
        discover_scenes([tmp_path / "nope.tif"])


def test_folder_tokens_follow_profiles(tmp_path: Path) -> None:
    for band in ("BAND5", "BAND6"):
        _write(tmp_path / f"CBERS_4_MUX_20240101_163_128_L4_{band}.tif")
    (scene,) = discover_scenes([tmp_path])
    assert scene.band_names == ("BAND5", "BAND6") and scene.sensor == "generic"
