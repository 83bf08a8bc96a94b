"""What eoseg may write where: the one rule every command follows before it writes.

Every product has a kind, recognised by its content (`identify`): a store records
``eoseg_product`` in its Zarr attributes (cube, labels, class map), a model folder holds
its card and weights, a training checkpoint its state and tensors, an export carries an
``eoseg_product`` tag (COG), text chunk (quicklook PNG) or metadata (polygons), and the
demo's work dir a marker file. Before any work, `check_output` refuses an output path
that

- is, lies inside or contains one of the command's inputs;
- cannot be written: its folder is read-only, or a file stands where a folder must be;
- holds anything but a product of the same kind: that is never replaced, not even with
  ``--overwrite`` (an empty folder or file counts as nothing to lose);
- holds a product of the same kind, unless ``--overwrite`` is given;
- has beside it a staging store (``<out>.partial``) or a training checkpoint
  (``<out>.ckpt``) that eoseg did not write;
- is being written by another run (`eoseg.locks`).

`check_replaceable` applies the kind rule once more when a finished product is moved
into place, so library calls that skip `check_output` cannot destroy anything either.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar, cast

from eoseg.errors import InvalidParameterError, OutputExistsError
from eoseg.locks import check_unlocked
from eoseg.storage import Location, is_url, resolve

OutputKind = Literal[
    "cube", "labels", "classmap", "model", "checkpoint", "cog", "polygons", "quicklook", "demo"
]
PRODUCT_KEY = "eoseg_product"
"""The attribute, tag or metadata key naming an eoseg product's kind."""
STAGING_SUFFIX = ".partial"
CHECKPOINT_SUFFIX = ".ckpt"
DEMO_MARKER = "eoseg-demo.json"
"""The file that makes a folder the demo's work dir."""
POLYGONS_MARKER = "_eoseg.json"
"""The file that makes a folder a partitioned polygon product (`eoseg.polygon_io`)."""

_NAMES: dict[str, str] = {
    "cube": "a cube store",
    "labels": "a labels store",
    "classmap": "a class map store",
    "model": "a model folder",
    "checkpoint": "a training checkpoint",
    "cog": "a class map COG",
    "polygons": "a class map's polygons file",
    "quicklook": "a class map quicklook PNG",
    "demo": "a demo work dir",
}
_FOLDER_KINDS = frozenset({"cube", "labels", "classmap", "model", "checkpoint", "demo"})
_STORE_KINDS = frozenset({"cube", "labels", "classmap"})
Inputs = Mapping[str, "Path | str | Sequence[Path | str] | None"]
"""What a command reads, by the option or argument that names it."""
_HEAD_BYTES = 1 << 16
"""How much of a GeoJSON file is searched for its marker (it comes first)."""


@dataclass(frozen=True, slots=True)
class Found:
    """What a path holds.

    Attributes:
        kind: The eoseg product recognised there, if any.
        what: A few words for messages ("a labels store", "a folder of 2 entries (a, b)").
        empty: Nothing there, an empty folder or an empty file: nothing to lose.
        is_dir: A folder (or a link to one).
        exists: Anything at all is there.
    """

    kind: OutputKind | None
    what: str
    empty: bool = False
    is_dir: bool = False
    exists: bool = True


_Where = TypeVar("_Where", bound="str | Path")


def staging_path(path: _Where) -> _Where:
    """Where a store is written before it is published: ``<out>.partial`` (on object
    storage the prefix ``<out>.partial/``)."""
    if isinstance(path, Path):
        return cast(_Where, path.with_name(path.name + STAGING_SUFFIX))
    return cast(_Where, str(path).rstrip("/") + STAGING_SUFFIX)


def checkpoint_path(path: Path) -> Path:
    """Where training keeps its checkpoint while writing model folder ``path``."""
    return path.with_name(path.name + CHECKPOINT_SUFFIX)


def identify(path: Path | str) -> Found:
    """Recognise what ``path`` (a local path or URL) holds, by content (never by name alone)."""
    if is_url(path):
        return _identify_remote(resolve(path))
    path = Path(path)
    try:
        if not path.exists():
            return Found(None, "nothing", empty=True, exists=False)
        if path.is_dir():
            return _identify_folder(path)
        if path.is_file():
            return _identify_file(path)
    except PermissionError:  # what cannot be seen is never assumed to be nothing to lose
        return Found(None, "something this user may not read (permission denied)")
    return Found(None, "a special file (not a regular file or folder)")


def _identify_remote(loc: Location) -> Found:
    """What an object-storage location holds: a store is recognised by its root
    ``zarr.json``; an object by its head (read whole only when it is a small export)."""
    if loc.child("zarr.json").is_file():
        try:
            attrs = json.loads(loc.child("zarr.json").read_text()).get("attributes") or {}
        except (OSError, ValueError, AttributeError):
            attrs = {}
        kind = attrs.get(PRODUCT_KEY)
        if kind in _STORE_KINDS:
            return Found(kind, _NAMES[kind], is_dir=True)
        return Found(None, "a Zarr store not written by eoseg", is_dir=True)
    if loc.is_file():
        with loc.reading() as local:  # an export: GDAL, pyarrow and pyogrio read it locally
            return _identify_file(local)
    names = loc.names()
    if not names:
        return Found(None, "nothing", empty=True, exists=False)
    from eoseg.models.card import CARD_FILE, WEIGHTS_FILE

    if set(names) == {CARD_FILE, WEIGHTS_FILE}:  # a model folder, and nothing added to it
        return Found("model", _NAMES["model"], is_dir=True)
    if POLYGONS_MARKER in names:
        marker = json.loads(loc.child(POLYGONS_MARKER).read_text()).get(PRODUCT_KEY)
        if marker == "polygons":
            return Found("polygons", "a class map's polygons folder", is_dir=True)
    return Found(None, f"a prefix of {_entries(names)}", is_dir=True)


def _identify_folder(path: Path) -> Found:
    from eoseg.models.card import CARD_FILE, WEIGHTS_FILE
    from eoseg.train.checkpoint import STATE_FILE, TENSORS_FILE

    if (path / "zarr.json").is_file():
        try:
            attrs = json.loads((path / "zarr.json").read_text()).get("attributes") or {}
        except (OSError, ValueError, AttributeError):
            attrs = {}
        kind = attrs.get(PRODUCT_KEY)
        if kind in _STORE_KINDS:
            return Found(kind, _NAMES[kind], is_dir=True)
        return Found(None, "a Zarr store not written by eoseg", is_dir=True)
    if (path / DEMO_MARKER).is_file():
        return Found("demo", _NAMES["demo"], is_dir=True)
    if _folder_marker(path / POLYGONS_MARKER) == "polygons":  # partitioned GeoParquet
        return Found("polygons", "a class map's polygons folder", is_dir=True)
    names = sorted(p.name for p in path.iterdir())
    folders = {"model": {CARD_FILE, WEIGHTS_FILE}, "checkpoint": {STATE_FILE, TENSORS_FILE}}
    for kind, files in folders.items():
        if files <= set(names):
            # Replacing the folder would delete anything else put in it.
            others = [n for n in names if n not in files]
            if others:
                return Found(None, f"{_NAMES[kind]} with {_entries(others)} added", is_dir=True)
            return Found(kind, _NAMES[kind], is_dir=True)  # type: ignore[arg-type]
    if not names:
        return Found(None, "an empty folder", empty=True, is_dir=True)
    return Found(None, f"a folder of {_entries(names)}", is_dir=True)


def _folder_marker(path: Path) -> str | None:
    """The product kind a folder's marker file names, if it has one."""
    try:
        return json.loads(path.read_text()).get(PRODUCT_KEY) if path.is_file() else None
    except (OSError, ValueError, AttributeError):
        return None


def _entries(names: list[str]) -> str:
    """A folder's contents, for messages: ``2 entries (a, b)``."""
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return f"{len(names)} {'entry' if len(names) == 1 else 'entries'} ({shown})"


def _identify_file(path: Path) -> Found:
    size = path.stat().st_size
    if size == 0:
        return Found(None, "an empty file", empty=True)
    with path.open("rb") as f:
        head = f.read(16)
    fmt, marker = _file_marker(path, head)
    if marker in ("cog", "polygons", "quicklook"):
        return Found(marker, _NAMES[marker])  # type: ignore[arg-type]
    return Found(None, f"{fmt} not written by eoseg" if fmt else f"a file of {size} bytes")


def _file_marker(path: Path, head: bytes) -> tuple[str | None, str | None]:
    """The format of an export file and the product kind its marker names."""
    try:
        if head[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
            import rasterio

            with rasterio.open(path) as src:
                return "a GeoTIFF", src.tags().get(PRODUCT_KEY)
        if head.startswith(b"\x89PNG"):
            from PIL import Image

            with Image.open(path) as img:
                return "a PNG image", img.info.get(PRODUCT_KEY)
        if head.startswith(b"PAR1"):
            import pyarrow.parquet as pq

            meta = pq.read_schema(path).metadata or {}
            attrs = json.loads(meta.get(b"PANDAS_ATTRS", b"{}"))
            return "a Parquet file", attrs.get(PRODUCT_KEY)
        if head.startswith(b"SQLite format 3\0"):
            import pyogrio

            info = pyogrio.read_info(path)  # eoseg writes one layer
            return "a GeoPackage", (info.get("layer_metadata") or {}).get(PRODUCT_KEY)
        if head.lstrip().startswith(b"{"):
            with path.open("rb") as f:
                text = f.read(_HEAD_BYTES).decode("utf-8", "replace")
            found = re.search(rf'"{PRODUCT_KEY}"\s*:\s*"(\w+)"', text)
            return "a JSON file", found.group(1) if found else None
    except Exception:  # unreadable as what its first bytes say: certainly not ours
        return "a damaged file", None
    return None, None


def check_output(
    path: Path | str,
    kind: OutputKind,
    *,
    overwrite: bool,
    inputs: Inputs | None = None,
    flag: str = "--out",
    overwrite_flag: str | None = "--overwrite",
) -> None:
    """Refuse an output that would destroy anything, before any work (module docstring).

    Args:
        path: The output to write.
        kind: The product the command writes there.
        overwrite: Whether the user allowed replacing a product of the same kind.
        inputs: What the command reads, by the option or argument naming it
            (``{"--cube": cube, "SOURCES": [a, b]}``); URLs and None are skipped.
        flag: The option naming ``path``, for messages.
        overwrite_flag: The option allowing replacement; None where the command reuses
            its own kind of output without asking (the demo's work dir).

    Raises:
        InvalidParameterError: ``path`` is, lies inside or contains an input, or cannot
            be written.
        OutputExistsError: ``path`` (or its staging store, checkpoint or lock) holds
            something that may not be replaced.
    """
    if is_url(path):
        _check_remote_output(str(path), kind, overwrite, inputs or {}, flag, overwrite_flag)
        return
    path = Path(path)
    check_not_input(path, inputs or {}, flag)
    check_existing(path, kind, overwrite=overwrite, flag=flag, overwrite_flag=overwrite_flag)
    check_writable(path, flag)
    for side, side_kind in _side_paths(path, kind):
        held = identify(side)
        if not (held.empty or held.kind == side_kind):
            raise OutputExistsError(
                f"{side} holds {held.what}, but eoseg keeps {_NAMES[side_kind]} there while "
                f"it writes {flag} {path}: move it away, or choose another {flag}"
            )
    check_unlocked(path, flag, demo_lock(path) if kind == "demo" else None)


def _check_remote_output(
    url: str,
    kind: OutputKind,
    overwrite: bool,
    inputs: Inputs,
    flag: str,
    overwrite_flag: str | None,
) -> None:
    """`check_output` on object storage: the same kind rules; no write probe (a bucket's
    permissions show on the first write) and no lock (object storage has no exclusive
    create that every S3-compatible server honours)."""
    for name, value in inputs.items():
        given = [value] if isinstance(value, str | os.PathLike) else list(value or [])
        for one in given:
            src = str(one).rstrip("/")
            if url.rstrip("/") == src or src.startswith(url.rstrip("/") + "/"):
                raise InvalidParameterError(
                    f"{flag} {url} is or contains the {name} input {one}: writing there would "
                    f"destroy what the command reads; choose another {flag}"
                )
    check_existing(url, kind, overwrite=overwrite, flag=flag, overwrite_flag=overwrite_flag)
    if kind in _STORE_KINDS:
        held = identify(staging_path(url))
        if not (held.empty or held.kind == kind):
            raise OutputExistsError(
                f"{staging_path(url)} holds {held.what}, but eoseg keeps {_NAMES[kind]} "
                f"there while it writes {flag} {url}: move it away, or choose another {flag}"
            )


def check_existing(
    path: Path | str,
    kind: OutputKind,
    *,
    overwrite: bool,
    flag: str = "--out",
    overwrite_flag: str | None = "--overwrite",
) -> None:
    """Refuse to replace what ``path`` holds: anything but ``kind``, or ``kind`` itself
    without ``overwrite`` (see `check_output`).

    Raises:
        OutputExistsError: Saying what was found there and what to do.
    """
    found = identify(path)
    if not _replaceable(found, kind):
        how = f" (with {overwrite_flag})" if overwrite_flag else ""
        raise OutputExistsError(
            f"{flag} {path} holds {found.what}, not {_NAMES[kind]}: eoseg replaces only "
            f"{_NAMES[kind]}{how} and never deletes anything else; choose another {flag}, "
            "or move that away yourself"
        )
    if found.exists and not overwrite:
        raise OutputExistsError(
            f"{flag} {path} already holds {found.what}: pass {overwrite_flag} to replace it, "
            f"or choose another {flag}"
        )


def _replaceable(found: Found, kind: OutputKind | None) -> bool:
    """A product of the same kind, nothing, or an empty folder (file) where a folder (file)
    is written."""
    if kind is not None and found.kind == kind:
        return True
    if not found.empty:
        return False
    return not found.exists or found.is_dir == (kind in _FOLDER_KINDS)


def _side_paths(path: Path, kind: OutputKind) -> list[tuple[Path, OutputKind]]:
    """Paths beside an output that writing it uses, with the kind each may hold."""
    if kind in _STORE_KINDS:
        return [(staging_path(path), kind)]
    if kind == "model":
        return [(checkpoint_path(path), "checkpoint")]
    return []


def check_not_input(path: Path, inputs: Inputs, flag: str = "--out") -> None:
    """Refuse an output that is, lies inside or contains one of ``inputs`` (see
    `check_output`).

    Raises:
        InvalidParameterError: Naming the input and the flag to change.
    """
    out = _absolute(path)
    for name, value in inputs.items():
        given = [value] if isinstance(value, str | os.PathLike) else list(value or [])
        for one in given:
            if "://" in str(one):
                continue
            src = _absolute(Path(one))
            if out == src or (out.exists() and src.exists() and os.path.samefile(out, src)):
                relation = "is"
            elif src in out.parents:
                relation = "lies inside"
            elif out in src.parents:
                relation = "contains"
            else:
                continue
            raise InvalidParameterError(
                f"{flag} {path} {relation} the {name} input {one}: writing there would "
                f"destroy what the command reads; choose another {flag}"
            )


def _absolute(path: Path) -> Path:
    return Path(os.path.abspath(path)).resolve()


def check_writable(path: Path, flag: str = "--out") -> None:
    """Refuse an output whose folder cannot be written (or is a file).

    The folder that will hold ``path`` (its nearest existing ancestor, when folders are
    still to be created) is tried by creating and removing a temporary file in it: that is
    what the write will need, whatever the reason it fails (permissions, a read-only mount).

    Raises:
        InvalidParameterError: Naming the folder, the reason and the flag to change.
    """
    folder = _absolute(path).parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise InvalidParameterError(
            f"{flag} {path} cannot be created: {folder} is a file, not a folder; choose "
            f"another {flag}"
        )
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".eoseg-write-test-")
    except OSError as exc:
        raise InvalidParameterError(
            f"{flag} {path} cannot be written: folder {folder} is not writable "
            f"({exc.strerror}); choose another {flag}, or get write access to {folder}"
        ) from None
    os.close(fd)
    os.unlink(probe)


def check_replaceable(out: Path, new: Path) -> None:
    """Refuse to move the finished product ``new`` onto ``out`` unless ``out`` holds nothing
    to lose or a product of the same kind.

    Raises:
        OutputExistsError: ``out`` holds something else.
    """
    if not out.exists():
        return
    kind = identify(new).kind
    found = identify(out)
    if not _replaceable(found, kind):
        what = _NAMES[kind] if kind else f"the new {new.name}"
        raise OutputExistsError(
            f"{out} holds {found.what}: eoseg never replaces it with {what}; choose another "
            "output path, or move it away yourself"
        )


def demo_lock(path: Path) -> Path:
    """The lock file of demo work dir ``path``: inside it, as everything the demo writes."""
    return path / "eoseg-demo.lock"


def mark_demo_workdir(path: Path) -> None:
    """Make ``path`` (created if needed) a demo work dir, which later demos may reuse."""
    path.mkdir(parents=True, exist_ok=True)
    (path / DEMO_MARKER).write_text(json.dumps({PRODUCT_KEY: "demo"}) + "\n")


def scratch_dir(near: Path) -> Path | None:
    """A folder for temporary files near ``near`` (same disk), or None (the system's) when
    ``near`` cannot be written: a read-only product can still be read and evaluated."""
    try:
        check_writable(near / "scratch")
    except InvalidParameterError:
        return None
    return near
