"""Where eoseg reads and writes: a local path or an fsspec URL, resolved in one place.

Every location a command or library function takes (cube, labels, class map, model,
exports, reports) may be a local path (``map.zarr``, ``file:///data/map.zarr``) or an
object-storage URL (``s3://bucket/map.zarr``, ``gs://...``). `resolve` turns it into a
`Location`: a local `Path`, or a URL with the fsspec filesystem that reaches it.

Credentials are never passed here: the filesystems read them from the environment as
their libraries expect (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_ENDPOINT_URL`` for s3fs/botocore; ``GOOGLE_APPLICATION_CREDENTIALS`` for gcsfs), so
no secret ends up in a product's metadata or a log line: a `Location` shows its URL only.

Object storage has no rename. Files are written to a local temporary and uploaded with
one PUT (`Location.writing`), which S3 makes visible whole or not at all. Zarr stores are
staged under a ``<out>.partial/`` prefix, like local ones, and published by a
server-side copy whose last object is the root ``zarr.json`` (`publish_prefix`): until
that marker lands, nothing at ``<out>`` is a store. A long write that resumes from what
it left beside its output (training's checkpoint) is staged in a local folder kept per
URL (`staging_dir`), so a rerun after a kill finds it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fsspec import AbstractFileSystem
from fsspec.core import url_to_fs

from eoseg.errors import InputNotFoundError, InvalidParameterError

log = logging.getLogger(__name__)

ROOT_MARKER = "zarr.json"
"""The object that makes a prefix a Zarr store; published last (`publish_prefix`)."""


def is_url(where: str | Path | Location) -> bool:
    """Whether ``where`` names object storage (a URL other than ``file://``)."""
    if isinstance(where, Location):
        return not where.is_local
    text = str(where)
    return "://" in text and not text.startswith("file://")


@dataclass(frozen=True, slots=True)
class Location:
    """A resolved place to read or write: a local path, or a URL on an fsspec filesystem.

    Attributes:
        url: The location as shown in messages and recorded in products: the local path
            as given, or the URL (never with credentials).
        local: The local path, or None on object storage.
        fs: The filesystem reaching it (fsspec's local one for local paths).
        path: The path inside ``fs`` (``bucket/key`` on S3).
    """

    url: str
    local: Path | None
    fs: AbstractFileSystem = field(compare=False, repr=False)
    path: str = ""

    @property
    def is_local(self) -> bool:
        """Whether this is a local path."""
        return self.local is not None

    def __str__(self) -> str:
        return self.url

    def __fspath__(self) -> str:
        # Only local locations are paths; a URL must never be mistaken for one.
        if self.local is None:
            raise TypeError(f"{self.url} is on object storage, not a local path")
        return str(self.local)

    @property
    def name(self) -> str:
        """The last part of the path (``map.zarr``)."""
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    def child(self, *names: str) -> Location:
        """The location ``names`` below this one."""
        if self.local is not None:
            return _local(self.local.joinpath(*names))
        suffix = "/".join(names)
        return Location(f"{self.url.rstrip('/')}/{suffix}", None, self.fs, f"{self.path}/{suffix}")

    def with_name(self, name: str) -> Location:
        """A sibling of this location (same folder or prefix), named ``name``."""
        if self.local is not None:
            return _local(self.local.with_name(name))
        head = self.url.rstrip("/").rsplit("/", 1)[0]
        parent = self.path.rstrip("/").rsplit("/", 1)[0]
        return Location(f"{head}/{name}", None, self.fs, f"{parent}/{name}")

    def exists(self) -> bool:
        """Whether anything (an object, or a prefix with objects) is there."""
        if self.local is not None:
            return self.local.exists()
        return bool(self.fs.exists(self.path))

    def is_dir(self) -> bool:
        """Whether this is a folder (on object storage: a prefix holding objects)."""
        if self.local is not None:
            return self.local.is_dir()
        return bool(self.fs.isdir(self.path))

    def is_file(self) -> bool:
        """Whether this is a file (object)."""
        if self.local is not None:
            return self.local.is_file()
        return bool(self.fs.isfile(self.path))

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted names of the entries directly inside that match ``pattern`` (none if absent).

        One listing request on object storage (fsspec pages through large prefixes).
        """
        if self.local is not None:
            if not self.local.is_dir():
                return []
            return sorted(p.name for p in self.local.glob(pattern))
        if not self.fs.isdir(self.path):
            return []
        found = (p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.path, detail=False))
        return sorted(n for n in found if fnmatch.fnmatchcase(n, pattern))

    def read_bytes(self) -> bytes:
        """The whole content of the file."""
        if self.local is not None:
            return self.local.read_bytes()
        return bytes(self.fs.cat_file(self.path))

    def read_text(self) -> str:
        """The whole content of the file, as UTF-8 text."""
        return self.read_bytes().decode("utf-8")

    def write_bytes(self, data: bytes) -> None:
        """Write a small file whole: readers see the old or the new content, never a part.

        Locally through a temporary renamed into place; on object storage one PUT.
        """
        if self.local is not None:
            self.local.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.local.with_name(f".{self.local.name}.{uuid.uuid4().hex}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, self.local)
            return
        self.fs.pipe_file(self.path, data)

    def write_text(self, text: str) -> None:
        """`write_bytes` of UTF-8 text."""
        self.write_bytes(text.encode("utf-8"))

    def remove(self) -> None:
        """Delete what is there (a folder or prefix with everything in it); nothing if absent."""
        if self.local is not None:
            if self.local.is_dir() and not self.local.is_symlink():
                shutil.rmtree(self.local, ignore_errors=True)
            elif self.local.exists() or self.local.is_symlink():
                self.local.unlink()
            return
        if self.fs.exists(self.path):
            self.fs.rm(self.path, recursive=True)

    @contextmanager
    def writing(self, suffix: str = "") -> Iterator[Path]:
        """Yield a local temporary file path; on success it becomes this location.

        For writers that need a local file (GDAL, pyarrow, matplotlib): locally the file is
        renamed into place, on object storage uploaded with one PUT, so a failed write
        never leaves a partial file at this location.
        """
        with tempfile.TemporaryDirectory(prefix="eoseg-put-", dir=self._scratch()) as tmp:
            local = Path(tmp) / f"out{suffix or Path(self.name).suffix}"
            yield local
            if self.local is not None:
                self.local.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(local, self.local)
            else:
                self.fs.put_file(str(local), self.path)
                log.debug("uploaded %s", self.url)

    @contextmanager
    def reading(self) -> Iterator[Path]:
        """Yield a local path holding this file or folder: itself, or a downloaded
        temporary copy (of every object under the prefix, for a folder).

        For inputs that GDAL, pyogrio or torch read from local files only (a vector file,
        a GeoTIFF, a model folder); Zarr stores are read through fsspec instead.
        """
        if self.local is not None:
            yield self.local
            return
        if not self.exists():
            raise InputNotFoundError(f"nothing at {self.url}: check the URL")
        with tempfile.TemporaryDirectory(prefix="eoseg-get-") as tmp:
            local = Path(tmp) / self.name
            if self.fs.isdir(self.path):
                for key in self.fs.find(self.path):
                    dest = local / key[len(self.path) :].lstrip("/")
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    self.fs.get_file(key, str(dest))
            else:
                self.fs.get_file(self.path, str(local))
            yield local

    @contextmanager
    def staged(
        self, marker: str | None = None, *, replace: bool = True, resumable: bool = False
    ) -> Iterator[Path]:
        """Yield a local path to write this file or folder at; on success it is published.

        Locally the path itself is yielded: eoseg's local writers already write aside and
        rename. On object storage the path lies in a temporary folder and is uploaded
        when the block ends without error (`upload`), so a failed write publishes nothing.

        Args:
            marker: For a folder, the file that makes it a product (a model card, a
                polygons marker): uploaded last, so a reader never sees a half folder
                that looks complete.
            replace: For a folder, delete what the prefix held first (a product replaced
                whole); False uploads over it, keeping other objects (a report folder).
            resumable: On object storage, stage in `staging_dir` instead of a temporary
                folder: the same folder for every run writing this URL, kept when the
                block fails, so a rerun finds what the writer left beside the path
                (a training checkpoint) and resumes; removed once uploaded.
        """
        if self.local is not None:
            yield self.local
            return
        if resumable:
            folder = staging_dir(self)
            folder.mkdir(parents=True, exist_ok=True)
            yield folder / self.name
            upload(folder / self.name, self, marker, replace=replace)
            shutil.rmtree(folder, ignore_errors=True)
            return
        with tempfile.TemporaryDirectory(prefix="eoseg-put-") as tmp:
            local = Path(tmp) / self.name
            yield local
            upload(local, self, marker, replace=replace)

    def _scratch(self) -> str | None:
        """A folder for temporaries: beside a local output (same disk), else the system's."""
        if self.local is None:
            return None
        parent = self.local.absolute().parent
        parent.mkdir(parents=True, exist_ok=True)
        return str(parent)


def _local(path: Path) -> Location:
    return Location(str(path), path, url_to_fs(str(path.absolute()))[0], str(path.absolute()))


def staging_dir(loc: Location) -> Path:
    """The local folder where an output on object storage is staged resumably
    (`Location.staged`): ``$XDG_CACHE_HOME/eoseg/staging/<digest of the URL>``
    (``~/.cache`` by default), the same for every run writing that URL on this machine.

    A container whose disk goes with it (a Kubernetes pod) resumes only if
    ``XDG_CACHE_HOME`` lies on a volume that outlives it.
    """
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "eoseg" / "staging" / hashlib.sha256(loc.url.encode()).hexdigest()[:20]


def resolve(where: str | Path | Location, flag: str | None = None) -> Location:
    """Resolve a CLI or API location: a local path, ``file://`` URL or fsspec URL.

    Args:
        where: What the user gave.
        flag: The option naming it, for messages.

    Raises:
        InvalidParameterError: A URL whose scheme no installed filesystem handles (e.g.
            ``gs://`` without gcsfs), or a malformed URL.
    """
    if isinstance(where, Location):
        return where
    text = os.fspath(where)
    if text.startswith("file://"):
        return _local(Path(text.removeprefix("file://")))
    if not is_url(text):
        return _local(Path(text))
    try:
        fs, path = url_to_fs(text)
    except (ImportError, ValueError) as exc:
        named = f"{flag} " if flag else ""
        raise InvalidParameterError(
            f"{named}{text} cannot be reached ({exc}): expected a local path or an fsspec URL "
            "(s3://bucket/key with s3fs installed, gs:// with gcsfs); fix the URL or install "
            f"the filesystem package{f', or choose another {flag}' if flag else ''}"
        ) from None
    return Location(text.rstrip("/"), None, fs, path.rstrip("/"))


def location(value: str | Path) -> str | Path:
    """A CLI or API value as a library location: a `Path` for local paths (``file://``
    URLs included), the URL text for object storage.

    Typer's ``Path`` options turn ``s3://b/k`` into ``s3:/b/k``: location options are read
    as text and passed through here instead.
    """
    if isinstance(value, Path):
        return value
    return value.rstrip("/") if is_url(value) else Path(value.removeprefix("file://"))


def publish_prefix(src: Location, dst: Location) -> None:
    """Copy store ``src`` to ``dst`` on object storage (server-side), root marker last.

    Whatever ``dst`` held is deleted first, so a reader sees the old store, no store, or
    the new one whole: the root ``zarr.json`` that makes ``dst`` a store is written after
    every other object. ``src`` is deleted afterwards.
    """
    if src.is_local or dst.is_local:
        raise ValueError("publish_prefix copies between object-storage prefixes")
    fs = src.fs
    if dst.exists():
        # The old marker first: the old store stops being a store before any object changes.
        if fs.exists(f"{dst.path}/{ROOT_MARKER}"):
            fs.rm_file(f"{dst.path}/{ROOT_MARKER}")
        fs.rm(dst.path, recursive=True)
    keys = [k for k in fs.find(src.path) if k != f"{src.path}/{ROOT_MARKER}"]
    fs.copy(keys, [f"{dst.path}{k[len(src.path) :]}" for k in keys])
    fs.copy(f"{src.path}/{ROOT_MARKER}", f"{dst.path}/{ROOT_MARKER}")
    fs.rm(src.path, recursive=True)
    log.debug("copied %d objects from %s to %s", len(keys) + 1, src.url, dst.url)


def upload(local: Path, dst: Location, marker: str | None = None, *, replace: bool = True) -> None:
    """Publish a finished local file or folder at ``dst`` on object storage.

    A file is one PUT (visible whole or not at all). A folder replaces what ``dst`` held:
    the old ``marker`` is deleted first (the old product stops being one), then the rest;
    the new files go up with ``marker`` last (see `Location.staged`).
    """
    if dst.is_local:
        raise ValueError("upload publishes to object storage")
    fs = dst.fs
    if local.is_file():
        if fs.isdir(dst.path):
            fs.rm(dst.path, recursive=True)
        fs.put_file(str(local), dst.path)
        log.debug("uploaded %s", dst.url)
        return
    if marker and fs.exists(f"{dst.path}/{marker}"):
        fs.rm_file(f"{dst.path}/{marker}")
    if replace and fs.exists(dst.path):
        fs.rm(dst.path, recursive=True)
    files = sorted(p for p in local.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.relative_to(local).as_posix() == marker)  # marker last
    for path in files:
        fs.put_file(str(path), f"{dst.path}/{path.relative_to(local).as_posix()}")
    log.debug("uploaded %d files to %s", len(files), dst.url)
