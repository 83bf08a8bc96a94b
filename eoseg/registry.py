"""The model registry: a folder, local or on object storage, of model versions.

Layout, under a local path or any fsspec URL (``file://``, ``memory://``, ``s3://``,
``gs://`` ...)::

    <registry>/<name>/<version>/weights.safetensors
    <registry>/<name>/<version>/model.json
    <registry>/<name>/PRODUCTION          # the version mapping runs use by default

Object stores have no atomic rename, so a version is written in place with its model
card uploaded *last*: a version exists only once its card does. A half upload (weights,
no card) is invisible to `list_models` and to production lookups, and registering the
model again completes it. The ``PRODUCTION`` pointer is one small object put (atomic on
object stores; ``os.replace`` locally). `fetch_model` gives a local folder for
`eoseg.models.load_model`: the version folder itself for a local registry, a verified
download published into a cache by rename for a remote one.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fsspec.implementations.local import LocalFileSystem

from eoseg.errors import InputNotFoundError, InvalidParameterError, InvalidStoreError
from eoseg.models.card import CARD_FILE, WEIGHTS_FILE, ModelCard, parse_card
from eoseg.models.weights import verify_model
from eoseg.storage import resolve
from eoseg.store import staged_folder

logger = logging.getLogger(__name__)

PRODUCTION_FILE = "PRODUCTION"
_REGISTRY_FIX = (
    "delete that version from the registry and register the model folder again "
    "('eoseg models register')"
)
Location = str | os.PathLike[str]
"""A local path or an fsspec URL."""


def _resolve(location: Location, flag: str = "--registry") -> tuple[Any, str]:
    """The fsspec filesystem and the protocol-less root path of ``location``
    (`eoseg.storage.resolve`, the one resolver of every location)."""
    loc = resolve(os.fspath(location), flag)
    return loc.fs, loc.path.rstrip("/")


def _open_registry(registry_dir: Location) -> tuple[Any, str]:
    """`_resolve` for a registry: refuses a file (a registry is a folder or a prefix).

    Raises:
        InvalidParameterError: ``registry_dir`` is a file.
    """
    fs, root = _resolve(registry_dir)
    if fs.isfile(root):
        raise InvalidParameterError(
            f"--registry {os.fspath(registry_dir)} is a file; expected a registry folder "
            "(or an fsspec URL of one) holding <name>/<version>/ model folders: give the "
            "folder, e.g. --registry models/"
        )
    return fs, root


def _is_local(fs: Any) -> bool:
    return isinstance(fs, LocalFileSystem)


def _put_atomic(fs: Any, path: str, data: bytes) -> None:
    """Write a small file so that readers see the old or the new content, never half."""
    parent = path.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    if _is_local(fs):
        tmp = Path(parent) / f".{Path(path).name}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.write_bytes(data)
        os.replace(tmp, path)
    else:
        fs.pipe_file(path, data)  # a single put: atomic on object stores


def _parse_card(data: bytes, where: str) -> ModelCard:
    try:
        return ModelCard.from_dict(json.loads(data))
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidStoreError(
            f"model card {where} is not a valid {CARD_FILE} ({exc}): expected the JSON "
            "written by eoseg.models.save_model; delete that version and register it again"
        ) from exc


def _read_card_at(fs: Any, folder: str, shown: str) -> bytes:
    try:
        return bytes(fs.cat_file(f"{folder}/{CARD_FILE}"))
    except FileNotFoundError:
        raise InputNotFoundError(
            f"no model card at {shown}/{CARD_FILE}: a model folder holds {CARD_FILE} and "
            f"{WEIGHTS_FILE}; pass the folder written by 'eoseg train' (or a registry "
            "version folder)"
        ) from None


def _files(fs: Any, folder: str) -> dict[str, int]:
    """Relative path -> size of every file under ``folder`` (hidden temp files skipped)."""
    found = fs.find(folder, detail=True)
    files = {}
    for path, info in found.items():
        rel = path[len(folder) :].lstrip("/")
        if rel and not any(part.startswith(".") for part in rel.split("/")):
            files[rel] = int(info.get("size") or 0)
    return files


def _copy(src_fs: Any, src: str, dst_fs: Any, dst: str) -> None:
    dst_fs.makedirs(dst.rsplit("/", 1)[0], exist_ok=True)
    with src_fs.open(src, "rb") as fin, dst_fs.open(dst, "wb") as fout:
        while chunk := fin.read(8 << 20):
            fout.write(chunk)


def register(model_dir: Location, registry_dir: Location) -> ModelCard:
    """Copy a model folder into the registry as ``<name>/<version>/``.

    The card is uploaded last, so an interrupted upload stays invisible until the model
    is registered again. Registering a complete version again is a no-op (versions are
    content hashes).

    Args:
        model_dir: Folder written by `eoseg.models.save_model` (path or fsspec URL).
        registry_dir: Registry root, path or fsspec URL (created if missing).

    Returns:
        The card of the registered model.

    Raises:
        InputNotFoundError: If the model folder is incomplete.
        InvalidStoreError: If its card or weights are damaged, or its content does not
            hash to its version (see `eoseg.models.verify_model`).
        InvalidParameterError: If the model's name cannot be a registry folder.
    """
    src_fs, src = _resolve(model_dir, "MODEL_DIR")
    shown = os.fspath(model_dir)
    card_data = _read_card_at(src_fs, src, shown)
    files = _files(src_fs, src)
    if WEIGHTS_FILE not in files:
        raise InputNotFoundError(
            f"no {WEIGHTS_FILE} in {shown}: register a complete model folder written by training"
        )
    fix = "register the model folder written by 'eoseg train', or retrain"
    card_doc, card = parse_card(card_data, shown, fix)
    # The version is a content hash: recompute it, so that a truncated, replaced or
    # edited model never enters the registry under a version it does not have.
    weights = bytes(src_fs.cat_file(f"{src}/{WEIGHTS_FILE}"))
    verify_model(weights, card_doc, shown, fix)
    if not card.name or "/" in card.name or card.name.startswith(".") or not card.version:
        raise InvalidParameterError(
            f"model card in {shown} has name {card.name!r} and version "
            f"{card.version!r}: a registered model needs a name without '/' or a leading "
            "'.' and a version; save it with eoseg.models.save_model"
        )
    fs, root = _open_registry(registry_dir)
    dest = f"{root}/{card.name}/{card.version}"
    if fs.isfile(f"{dest}/{CARD_FILE}"):
        logger.info("model %s %s already registered", card.name, card.version)
        return card
    for rel in sorted(files):
        if rel not in (CARD_FILE, WEIGHTS_FILE):
            _copy(src_fs, f"{src}/{rel}", fs, f"{dest}/{rel}")
    fs.makedirs(dest, exist_ok=True)
    fs.pipe_file(f"{dest}/{WEIGHTS_FILE}", weights)  # the bytes verified above
    _put_atomic(fs, f"{dest}/{CARD_FILE}", card_data)
    logger.info("registered model %s %s in %s", card.name, card.version, registry_dir)
    return card


def _version_dirs(fs: Any, root: str) -> list[tuple[str, str, str]]:
    """``(name, version, card path)`` of every registered version."""
    try:
        paths = fs.glob(f"{root}/*/*/{CARD_FILE}")
    except FileNotFoundError:
        return []
    out = []
    for path in sorted(paths):
        name, version = path[len(root) :].strip("/").split("/")[:2]
        if not name.startswith(".") and not version.startswith("."):
            out.append((name, version, path))
    return out


def list_models(registry_dir: Location) -> list[ModelCard]:
    """Cards of every registered model, sorted by name then creation time.

    Reads only the cards (never the weights). A missing registry gives an empty list.

    Raises:
        InvalidStoreError: If a registered card is not valid JSON.
    """
    fs, root = _open_registry(registry_dir)
    entries = _version_dirs(fs, root)
    blobs = fs.cat([path for _, _, path in entries]) if entries else {}
    cards = []
    for name, version, path in entries:
        card = _parse_card(blobs[path], path)
        if (card.name, card.version) != (name, version):
            logger.warning("skipping %s: its card names %s %s", path, card.name, card.version)
            continue
        cards.append(card)
    return sorted(cards, key=lambda c: (c.name, c.created, c.version))


def _require_version(fs: Any, root: str, registry: Location, name: str, version: str) -> str:
    path = f"{root}/{name}/{version}"
    if not fs.isfile(f"{path}/{CARD_FILE}"):
        known = [v for n, v, _ in _version_dirs(fs, root) if n == name]
        raise InputNotFoundError(
            f"model {name!r} version {version!r} is not in registry {os.fspath(registry)}; "
            f"registered versions: {known or 'none'}: register it first "
            "(eoseg models register, or eoseg.registry.register)"
        )
    return path


def set_production(registry_dir: Location, name: str, version: str) -> None:
    """Mark ``name``/``version`` as the production model of its name.

    Raises:
        InputNotFoundError: If that version is not registered.
    """
    fs, root = _open_registry(registry_dir)
    _require_version(fs, root, registry_dir, name, version)
    _put_atomic(fs, f"{root}/{name}/{PRODUCTION_FILE}", (version + "\n").encode())
    logger.info("production model %s is now %s", name, version)


def production_versions(registry_dir: Location) -> dict[str, str]:
    """Production version of every model name that has one set."""
    fs, root = _open_registry(registry_dir)
    try:
        paths = fs.glob(f"{root}/*/{PRODUCTION_FILE}")
    except FileNotFoundError:
        return {}
    blobs = fs.cat(sorted(paths)) if paths else {}
    return {p[len(root) :].strip("/").split("/")[0]: b.decode().strip() for p, b in blobs.items()}


def production_version(registry_dir: Location, name: str) -> str:
    """The registered version the ``PRODUCTION`` pointer of ``name`` names.

    Raises:
        InputNotFoundError: If no production version is set or it is not registered.
    """
    fs, root = _open_registry(registry_dir)
    try:
        version = fs.cat_file(f"{root}/{name}/{PRODUCTION_FILE}").decode().strip()
    except FileNotFoundError:
        raise InputNotFoundError(
            f"model {name!r} has no production version in registry "
            f"{os.fspath(registry_dir)}: promote one first (eoseg models promote, or "
            "eoseg.registry.set_production)"
        ) from None
    _require_version(fs, root, registry_dir, name, version)
    return version


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/eoseg/models`` (``~/.cache/eoseg/models`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "eoseg" / "models"


def _verify_folder(folder: Path, version: str, where: str) -> None:
    """Refuse a local copy of a registry version that is not exactly that version.

    Raises:
        InvalidStoreError: Files missing, or a card or weights not of ``version``.
    """
    card_path, weights_path = folder / CARD_FILE, folder / WEIGHTS_FILE
    if not (card_path.is_file() and weights_path.is_file()):
        raise InvalidStoreError(
            f"{where} lacks {CARD_FILE} or {WEIGHTS_FILE}: it is damaged; {_REGISTRY_FIX}"
        )
    card_doc, card = parse_card(card_path.read_bytes(), where, _REGISTRY_FIX)
    if card.version != version:
        raise InvalidStoreError(
            f"{where} holds a card of version {card.version!r}, not {version!r}: the "
            f"registry was edited by hand; {_REGISTRY_FIX}"
        )
    verify_model(weights_path.read_bytes(), card_doc, where, _REGISTRY_FIX)


def _cached(folder: Path, version: str) -> bool:
    try:
        _verify_folder(folder, version, str(folder))
    except InvalidStoreError:
        return False  # a missing or damaged cache entry is fetched again
    return True


def _download(
    fs: Any, src: str, files: Iterable[tuple[str, int]], dest: Path, version: str
) -> None:
    """Copy ``files`` into ``dest`` (replaced atomically) once every size and the content
    hash check."""
    with staged_folder(dest) as tmp:
        for rel, size in files:
            local = tmp / rel
            local.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(f"{src}/{rel}", str(local))
            if local.stat().st_size != size:
                raise InvalidStoreError(
                    f"download of {src}/{rel} has {local.stat().st_size} bytes, the "
                    f"registry lists {size}: the copy was cut short; fetch again"
                )
        _verify_folder(tmp, version, f"registry version {src}")


def fetch_model(
    registry_dir: Location,
    name: str,
    version: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    out_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """A local model folder of ``name`` (its production version by default).

    A local registry returns the version folder itself. A remote one is downloaded into
    ``<cache_dir>/<name>/<version>``; the download is checked and published by rename,
    so an interrupted one is never used, and a finished one is reused.

    Args:
        registry_dir: Registry root, path or fsspec URL.
        name: Model name.
        version: Version to fetch; the production version when None.
        cache_dir: Cache root for remote registries; default `default_cache_dir`.
        out_dir: Copy the model folder exactly here instead (replaced if it exists),
            whatever the registry.

    Returns:
        A folder holding ``weights.safetensors`` and ``model.json``.

    Raises:
        InputNotFoundError: If the name, version or production pointer is missing.
        InvalidStoreError: If the registered version is incomplete, damaged (its content
            does not hash to its version) or a download is short.
    """
    fs, root = _open_registry(registry_dir)
    if version is None:
        version = production_version(registry_dir, name)
    src = _require_version(fs, root, registry_dir, name, version)
    if out_dir is None and _is_local(fs):
        _verify_folder(Path(src), version, src)  # what predict will load, verified here
        return Path(src)
    dest = Path(out_dir) if out_dir is not None else Path(cache_dir or default_cache_dir())
    if out_dir is None:
        dest = dest / name / version
        if _cached(dest, version):
            logger.info("model %s %s found in cache %s", name, version, dest)
            return dest
    files = _files(fs, src)
    if WEIGHTS_FILE not in files:
        raise InvalidStoreError(
            f"registry version {src} has a card but no {WEIGHTS_FILE}: it is damaged; "
            "delete it and register the model folder again"
        )
    ordered = sorted(files.items(), key=lambda kv: (kv[0] == CARD_FILE, kv[0]))
    _download(fs, src, ordered, dest, version)
    logger.info("fetched model %s %s to %s", name, version, dest)
    return dest
