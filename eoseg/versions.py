"""Versioned products: a class map's published versions in an icechunk repository.

A product repository (a folder, or an ``s3://`` / ``gs://`` URL) holds the versions of one
class map as icechunk snapshots on its ``main`` branch. Icechunk gives each snapshot a
copy-on-write view of the Zarr store: a version shares every chunk it did not change with
its parent, a commit is atomic (readers see the old version or the new one, never a mix),
and a publish that dies before its commit leaves the published version as it was.

Besides the class map's own variables and attributes, a version holds one provenance
record per tile (group `TILES_GROUP`, attribute per tile name): what `eoseg predict`
recorded for the tile (model and cube versions, run id, eoseg version, settings) plus the
``digest`` of its pixels, which later publishes and `eoseg.version_diff` compare.
Each snapshot's commit metadata says what published it (`KIND_KEY`: publish or
rollback), the run, model and cube, and how many tiles it wrote.

Writing versions is `eoseg.version_publish`; comparing them `eoseg.version_diff`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import icechunk
import xarray as xr
import zarr

from eoseg.errors import InputNotFoundError, InvalidParameterError

log = logging.getLogger(__name__)

BRANCH = "main"
"""The branch whose head is the product's latest version."""
TILES_GROUP = "_eoseg_tiles"
"""Group whose attributes hold one provenance record per tile (tile name -> record)."""
KIND_KEY = "eoseg_kind"
"""Commit metadata key marking an eoseg version (``"publish"`` or ``"rollback"``)."""
LATEST = "latest"
"""The version name of the branch's head."""

_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_NOT_TAGS = re.compile(r"[0-9]+|[0-9A-Z]{20}")
"""Names that read as a version number or an icechunk snapshot id (20 base32 characters)."""


@dataclass(frozen=True, slots=True)
class ProductVersion:
    """One published version of a product.

    Attributes:
        id: The icechunk snapshot id (what ``--version`` and ``--to`` accept).
        number: Position in the branch's history of versions, 1 = the first.
        written_at: Commit time, ISO 8601 UTC.
        message: The commit message.
        tags: Tags that name this version.
        metadata: What published it (run id, model and cube versions, tile counts...).
    """

    id: str
    number: int
    written_at: str
    message: str
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the version."""
        return {
            "id": self.id,
            "number": self.number,
            "written_at": self.written_at,
            "message": self.message,
            "tags": list(self.tags),
            **dict(sorted(self.metadata.items())),
        }


def product_storage(location: str | Path) -> icechunk.Storage:
    """The icechunk storage of a repository location.

    A local path or ``file://`` URL is a folder; ``s3://bucket/prefix`` and
    ``gs://bucket/prefix`` take credentials (and ``AWS_ENDPOINT_URL`` for an
    S3-compatible server) from the environment, as the storage libraries expect.

    Raises:
        InvalidParameterError: A URL scheme icechunk cannot store to.
    """
    text = str(location)
    url = urlparse(text)
    if url.scheme in ("", "file"):
        path = Path(url.path if url.scheme else text).absolute()
        return icechunk.local_filesystem_storage(str(path))
    prefix = url.path.strip("/") or None
    if url.scheme in ("s3", "s3a"):
        return icechunk.s3_storage(bucket=url.netloc, prefix=prefix, from_env=True)
    if url.scheme in ("gs", "gcs"):
        return icechunk.gcs_storage(bucket=url.netloc, prefix=prefix, from_env=True)
    raise InvalidParameterError(
        f"product repository {text!r} has the scheme {url.scheme!r}; expected a folder, a "
        "file:// URL, s3://bucket/prefix or gs://bucket/prefix: give one of those"
    )


def is_local(location: str | Path) -> bool:
    """Whether a repository location is a local folder (which a lock file can guard)."""
    return urlparse(str(location)).scheme in ("", "file")


def is_repository(location: str | Path) -> bool:
    """Whether a product repository exists at ``location`` (creating nothing)."""
    if is_local(location):
        # Asking icechunk would create a missing folder (and warn on every local open):
        # a local repository is a folder with its `refs` and `snapshots`.
        folder = Path(urlparse(str(location)).path if "://" in str(location) else location)
        return (folder / "refs").is_dir() and (folder / "snapshots").is_dir()
    return bool(icechunk.Repository.exists(product_storage(location)))


def open_repository(location: str | Path, *, create: bool = False) -> icechunk.Repository:
    """Open a product repository; with ``create``, create it when it does not exist.

    Raises:
        InputNotFoundError: No repository at ``location`` (and not ``create``).
    """
    storage = product_storage(location)
    if icechunk.Repository.exists(storage):
        return icechunk.Repository.open(storage)
    if not create:
        raise InputNotFoundError(
            f"no product repository at {location}: check the path, or publish a class map "
            f"there first (eoseg products publish MAP --to {location})"
        )
    log.info("creating product repository %s", location)
    return icechunk.Repository.create(storage)


def list_versions(repo: icechunk.Repository) -> list[ProductVersion]:
    """The versions on the product's branch, newest first."""
    tags: dict[str, list[str]] = {}
    for tag in sorted(repo.list_tags()):
        tags.setdefault(repo.lookup_tag(tag), []).append(tag)
    infos = [s for s in repo.ancestry(branch=BRANCH) if KIND_KEY in (s.metadata or {})]
    return [
        ProductVersion(
            id=s.id,
            number=len(infos) - i,
            written_at=s.written_at.isoformat(timespec="seconds"),
            message=s.message,
            tags=tuple(tags.get(s.id, ())),
            metadata=dict(s.metadata or {}),
        )
        for i, s in enumerate(infos)
    ]


def resolve_version(repo: icechunk.Repository, version: str, flag: str = "--version") -> str:
    """The snapshot id of a version given as ``latest``, a tag, a snapshot id or a number.

    A tag wins over a number that reads the same; numbers count the branch's versions
    from 1 (see `list_versions`).

    Raises:
        InvalidParameterError: No version of that name, or none published yet.
    """
    versions = list_versions(repo)
    if not versions:
        raise InvalidParameterError(
            "the product repository holds no version yet: publish one first "
            "(eoseg products publish MAP --to REPO)"
        )
    if version == LATEST:
        return versions[0].id
    if version in repo.list_tags():
        return repo.lookup_tag(version)
    for v in versions:
        if version in (v.id, str(v.number)):
            return v.id
    try:
        return repo.lookup_snapshot(version).id  # a snapshot off the branch (rolled back)
    except (icechunk.IcechunkError, ValueError):
        pass
    known = ", ".join(f"{v.number}={v.id}" + "".join(f"/{t}" for t in v.tags) for v in versions)
    raise InvalidParameterError(
        f"{flag} {version!r} names no version of the product; expected 'latest', a tag, a "
        f"snapshot id or a version number ({known}): pick one of those "
        "(eoseg products list REPO shows them)"
    )


def check_tag(repo: icechunk.Repository, tag: str) -> None:
    """Refuse a tag name that is taken or could be read as another kind of version name.

    Raises:
        InvalidParameterError: See above.
    """
    if not _TAG.fullmatch(tag) or _NOT_TAGS.fullmatch(tag) or tag == LATEST:
        raise InvalidParameterError(
            f"--tag {tag!r} is not a usable tag: expected letters, digits, '.', '_' or '-' "
            "(up to 100, starting with a letter or digit), neither 'latest' nor a bare "
            "number or snapshot id, which name versions already; e.g. --tag 2026-06"
        )
    if tag in repo.list_tags():
        raise InvalidParameterError(
            f"--tag {tag!r} already names version {repo.lookup_tag(tag)}; tags never move: "
            "choose another --tag"
        )


def version_info(repo: icechunk.Repository, snapshot_id: str) -> ProductVersion:
    """The `ProductVersion` of a snapshot id (number 0 when it is off the branch)."""
    for v in list_versions(repo):
        if v.id == snapshot_id:
            return v
    info = repo.lookup_snapshot(snapshot_id)
    tags = tuple(t for t in sorted(repo.list_tags()) if repo.lookup_tag(t) == snapshot_id)
    return ProductVersion(
        id=info.id,
        number=0,
        written_at=info.written_at.isoformat(timespec="seconds"),
        message=info.message,
        tags=tags,
        metadata=dict(info.metadata or {}),
    )


def version_session(location: str | Path, version: str = LATEST) -> icechunk.Session:
    """A read-only session on one version: everything read through it is that version."""
    repo = open_repository(location)
    return repo.readonly_session(snapshot_id=resolve_version(repo, version))


def open_version(location: str | Path, version: str = LATEST) -> xr.Dataset:
    """Open one version of a product as a lazy class map (``class``, ``confidence``...).

    Every read goes to that version's snapshot, so a publish that commits meanwhile
    changes nothing the dataset shows. The CRS and transform are decoded (``ds.rio``).

    Args:
        location: The product repository (folder or URL).
        version: ``"latest"``, a tag, a snapshot id or a version number.

    Raises:
        InputNotFoundError: No repository at ``location``.
        InvalidParameterError: No such version.
    """
    session = version_session(location, version)
    ds = read_dataset(session)
    ds.attrs["eoseg_product_version"] = session.snapshot_id
    return ds


def read_dataset(session: icechunk.Session) -> xr.Dataset:
    """The class map of a session's snapshot, lazily, with its CRS decoded."""
    return xr.open_zarr(session.store, consolidated=False, zarr_format=3, decode_coords="all")


def tile_records(session: icechunk.Session) -> dict[str, dict[str, Any]]:
    """The per-tile provenance records of a session's version (empty before the first)."""
    try:
        group = zarr.open_group(session.store, mode="r", path=TILES_GROUP)
    except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError):
        return {}
    return {str(k): dict(v) for k, v in group.attrs.asdict().items()}  # type: ignore[arg-type]
