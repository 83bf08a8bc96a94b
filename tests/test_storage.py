"""eoseg.storage: local paths, file:// URLs and object-storage URLs resolved in one place."""

from __future__ import annotations

from pathlib import Path

import pytest

from eoseg.errors import InvalidParameterError
from eoseg.storage import is_url, location, resolve
from tests.s3 import S3


@pytest.mark.parametrize(
    ("given", "url"),
    [("s3://b/k.zarr", True), ("gs://b/k", True), ("file:///tmp/x", False), ("a/b.zarr", False)],
    ids=["s3", "gs", "file", "relative"],
)
def test_is_url(given: str, url: bool) -> None:
    assert is_url(given) is url
    assert isinstance(location(given), str if url else Path)


def test_file_url_resolves_to_local_path(tmp_path: Path) -> None:
    loc = resolve(f"file://{tmp_path}/map.zarr")
    assert loc.is_local and loc.local == tmp_path / "map.zarr"
    assert loc == resolve(tmp_path / "map.zarr")
    assert str(loc.with_name("map.zarr.partial")) == str(tmp_path / "map.zarr.partial")
    assert location(f"file://{tmp_path}/a") == tmp_path / "a"


def test_write_read_list_remove_local(tmp_path: Path) -> None:
    root = resolve(tmp_path / "store")
    assert not root.exists() and root.names() == []
    root.child("t", "r0_c1.json").write_text('{"a": 1}')
    root.child("t", "r0_c0.json").write_text("{}")
    root.child("t", "other.txt").write_text("x")
    assert root.is_dir() and root.child("t", "r0_c1.json").is_file()
    assert root.child("t").names("r*_c*.json") == ["r0_c0.json", "r0_c1.json"]
    assert root.child("t", "r0_c1.json").read_text() == '{"a": 1}'
    # No temporaries are left beside an atomically written file.
    assert sorted(p.name for p in (tmp_path / "store" / "t").iterdir()) == [
        "other.txt", "r0_c0.json", "r0_c1.json"
    ]  # fmt: skip
    root.remove()
    assert not (tmp_path / "store").exists()


def test_writing_moves_into_place_only_on_success(tmp_path: Path) -> None:
    out = resolve(tmp_path / "sub" / "map.tif")
    with pytest.raises(RuntimeError), out.writing() as local:
        local.write_bytes(b"half")
        raise RuntimeError("writer failed")
    assert not out.exists()
    with out.writing() as local:
        assert local.suffix == ".tif"
        local.write_bytes(b"whole")
    assert (tmp_path / "sub" / "map.tif").read_bytes() == b"whole"
    with out.reading() as local:
        assert local == tmp_path / "sub" / "map.tif"


def test_url_without_filesystem_is_refused() -> None:
    with pytest.raises(InvalidParameterError, match="--out nosuch://b/k cannot be reached"):
        resolve("nosuch://b/k", "--out")


def test_url_location_is_never_a_local_path() -> None:
    loc = resolve("memory://bucket/map.zarr")
    assert not loc.is_local and loc.path.endswith("bucket/map.zarr")
    assert str(loc.child("zarr.json")) == "memory://bucket/map.zarr/zarr.json"
    assert str(loc.with_name("map.zarr.partial")) == "memory://bucket/map.zarr.partial"
    with pytest.raises(TypeError, match="object storage"):
        Path(loc)


def test_publish_prefix_copies_everything_marker_last() -> None:
    import uuid

    base = f"memory://eoseg-{uuid.uuid4().hex[:8]}"
    src, dst = resolve(f"{base}/map.zarr.partial"), resolve(f"{base}/map.zarr")
    src.child("zarr.json").write_text('{"new": 1}')
    src.child("class", "c", "0", "0").write_bytes(b"\x01\x02")
    dst.child("zarr.json").write_text('{"old": 1}')
    dst.child("class", "c", "9").write_bytes(b"stale")
    from eoseg.storage import publish_prefix

    publish_prefix(src, dst)
    assert not src.exists()
    assert dst.child("zarr.json").read_text() == '{"new": 1}'
    assert dst.child("class", "c", "0", "0").read_bytes() == b"\x01\x02"
    assert not dst.child("class", "c", "9").exists()  # nothing of the old store is left


def test_s3_write_list_publish_on_loopback_server(s3: S3) -> None:
    """The same operations on a real S3 server (moto on 127.0.0.1)."""
    from eoseg.storage import publish_prefix

    src, dst = resolve(s3.url("a/map.zarr.partial")), resolve(s3.url("a/map.zarr"))
    assert not src.is_local and not src.exists() and src.names() == []
    src.child("zarr.json").write_text("{}")
    src.child("_eoseg_tiles", "r0_c0.json").write_text('{"tile": "r0_c0"}')
    assert src.child("_eoseg_tiles").names("r*_c*.json") == ["r0_c0.json"]
    with dst.with_name("map.tif").writing() as local:
        local.write_bytes(b"tif")
    assert resolve(s3.url("a/map.tif")).read_bytes() == b"tif"
    publish_prefix(src, dst)
    assert dst.child("_eoseg_tiles", "r0_c0.json").read_text() == '{"tile": "r0_c0"}'
    assert not src.exists()
