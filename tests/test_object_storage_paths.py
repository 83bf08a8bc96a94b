"""Object-storage locations that cannot be reached (issue 12): a missing bucket or
missing credentials are refused naming the option, with no traceback, no secret and no
output; AOI and regions files on s3:// read as local ones. The chain of every command on
s3:// is tests/test_object_storage.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import pytest
import s3fs
from typer.testing import CliRunner

from eoseg.cli import app
from tests.s3 import S3, SECRET, fresh_bucket

pytestmark = pytest.mark.slow
runner = CliRunner()


@pytest.fixture(scope="module")
def bucket(s3_endpoint: str) -> Iterator[S3]:
    """One bucket for the module, credentials and endpoint in the environment."""
    with fresh_bucket(s3_endpoint) as made:
        yield made


NO_BUCKET = "s3://eoseg-no-such-bucket/x"
BAD = [
    ("missing-bucket-out", False, ["rasterize", "{noisy}", "--cube", "{cube}", "--out",
                                   f"{NO_BUCKET}/labels.zarr"], "--out"),
    ("missing-bucket-classmap", False, ["evaluate", f"{NO_BUCKET}/map.zarr", "--truth",
                                        "{truth}"], "CLASSMAP"),
    ("missing-bucket-model", False, ["predict", "--cube", "{cube}", "--model",
                                     f"{NO_BUCKET}/model", "--out", "{tmp}/m.zarr"], "--model"),
    ("no-credentials-cube", True, ["train", "--cube", "{s3}/cube.zarr", "--labels",
                                   "{s3}/labels.zarr", "--out", "{tmp}/model"], "--cube"),
    ("no-credentials-registry", True, ["models", "list", "--registry", "{s3}/models"],
     "--registry"),
    ("no-credentials-classmap", True, ["sample", "{s3}/map.zarr", "--out", "{tmp}/s.csv"],
     "CLASSMAP"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "anonymous", "args", "flag"), BAD, ids=[c[0] for c in BAD])
def test_unreachable_url_is_refused_naming_the_option(
    case: str,
    anonymous: bool,
    args: list[str],
    flag: str,
    bucket: S3,
    demo_data,
    cube_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if anonymous:  # no credentials anywhere botocore looks
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            monkeypatch.delenv(name)
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    s3fs.S3FileSystem.clear_instance_cache()
    values = {"noisy": str(demo_data.noisy_labels), "cube": str(cube_path), "tmp": str(tmp_path),
              "truth": str(demo_data.truth), "s3": bucket.url("run")}  # fmt: skip
    try:
        result = runner.invoke(app, [a.format(**values) for a in args])
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
    assert result.exit_code == 2, result.output
    assert flag in result.output and "Traceback" not in result.output
    assert ("does not exist" if not anonymous else "credentials") in result.output
    assert SECRET not in result.output
    assert not list(tmp_path.glob("*.zarr")) and not (tmp_path / "model").exists()


def test_aoi_and_regions_files_on_s3_read_as_local_ones(s3: S3, tmp_path: Path) -> None:
    """`query`/`evaluate`/`areas` read --aoi and --regions through `eoseg.aoi`: a file on
    object storage gives the geometries the same file gives locally."""
    import s3fs
    import shapely

    from eoseg.aoi import read_aoi, read_regions

    parts = [shapely.box(500_000, 5_000_000, 501_000, 5_001_000),
             shapely.box(501_000, 5_000_000, 502_500, 5_000_800)]  # fmt: skip
    gdf = gpd.GeoDataFrame({"name": ["a", "b"]}, geometry=parts, crs=32633)
    local = tmp_path / "regions.gpkg"
    gdf.to_file(local, engine="pyogrio")
    s3fs.S3FileSystem().put_file(str(local), f"{s3.bucket}/in/regions.gpkg")
    url = s3.url("in/regions.gpkg")
    assert read_aoi(url).equals(read_aoi(str(local)))
    remote, here = read_regions(url, "name"), read_regions(local, "name")
    assert remote.keys() == here.keys() == {"a", "b"}
    assert all(remote[k].equals(here[k]) for k in here)
    assert read_aoi(url).area > 0
