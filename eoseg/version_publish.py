"""Publish a class map as a new version of a product, or roll a product back.

`publish_classmap` copies a finished class map (``eoseg predict``'s store) into the
product repository (`eoseg.versions`) in one icechunk transaction: only the tiles whose
pixels differ from the latest version are written, so storage grows with what changed,
not with the map. A tile whose provenance record equals the latest version's is taken as
unchanged without reading it (``compare="provenance"``, the default; ``"pixels"`` reads
and digests every tile); one whose pixels turn out equal gets its new record only.
Nothing is visible until the commit; a publish killed before it leaves the product as it
was (its orphan chunks are what `icechunk.Repository.garbage_collect` removes).

`rollback` makes an earlier version the latest again by the same tile copy, as a new
version whose metadata names the one it restores: history is never rewritten, so every
version stays listed and readable and the rollback itself is on record.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import icechunk
import numpy as np
import xarray as xr
import zarr
from distributed import Client
from odc.geo.geobox import GeoBox

from eoseg import __version__
from eoseg.classmap import PARTIAL_KEY
from eoseg.errors import InvalidParameterError, InvalidStoreError, OutputExistsError
from eoseg.grid import Tile, grid_of, iter_tiles
from eoseg.locks import output_lock
from eoseg.store import open_product, tile_provenance
from eoseg.version_tiles import Compare, CopyJob, ProgressFn, copy_tiles
from eoseg.versions import (
    BRANCH,
    KIND_KEY,
    TILES_GROUP,
    check_tag,
    is_local,
    open_repository,
    read_dataset,
    resolve_version,
    tile_records,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PublishResult:
    """What a publish (or rollback) did.

    Attributes:
        repository: The product repository.
        version: Snapshot id of the latest version afterwards.
        parent: The version before (None for the first).
        committed: False when nothing changed (``version`` is then ``parent``).
        tag: The tag given to ``version``, if any.
        tiles: Tiles of the map.
        tiles_written: Tiles whose pixels were written.
        tiles_unchanged: Tiles taken as they were.
        tiles_recorded: Tiles with a new provenance record but the same pixels.
        seconds: Wall time.
    """

    repository: str
    version: str
    parent: str | None
    committed: bool
    tag: str | None
    tiles: int
    tiles_written: int
    tiles_unchanged: int
    tiles_recorded: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class _Source:
    """What a new version is copied from: a class map store or an earlier version."""

    dataset: xr.Dataset
    store: str | icechunk.Session
    records: dict[str, dict[str, Any]]
    tiles: tuple[Tile, ...]
    name: str
    partial: bool = False


def publish_classmap(
    classmap: Path | str,
    repository: str | Path,
    *,
    tag: str | None = None,
    message: str = "",
    compare: Compare = "provenance",
    client: Client | None = None,
    progress: ProgressFn | None = None,
    partial: bool = False,
    base: str | None = None,
) -> PublishResult:
    """Publish a finished class map as the product's new latest version.

    Args:
        classmap: A class map written by ``eoseg predict`` (checked complete and intact).
        repository: The product repository (folder or URL); created by the first publish.
        tag: Also name the new version so (tags never move).
        message: The version's message (default: says the map, run and tiles written).
        compare: How unchanged tiles are found: ``"provenance"`` trusts equal provenance
            records; ``"pixels"`` digests every tile of the map.
        client: Copy the tiles on this Dask cluster (default: threads in this process).
        progress: Called with ``(done, total)`` tiles.
        partial: ``classmap`` holds only some tiles (``eoseg predict``'s ``tiles=``, see
            `eoseg.classmap.PARTIAL_KEY`); every other tile is carried over from the
            latest version, unread and unwritten (`eoseg.regenerate`).
        base: The version the caller expects to be the latest (its snapshot id): a
            publish on top of another one is refused, nothing committed.

    Raises:
        InputNotFoundError: No class map at ``classmap``.
        InvalidStoreError: The class map is incomplete, damaged or lacks tile records.
        InvalidParameterError: A bad or taken ``tag``; a partial map on an empty product
            or one of another layout.
        OutputExistsError: Another publish holds or moved the repository meanwhile, or
            the latest version is not ``base``.
    """
    source = _classmap_source(Path(classmap), partial=partial)
    extra = {"source": str(Path(classmap).absolute())}
    options = _Options(tag, compare, client, progress, base)
    return _commit(repository, source, "publish", message, extra, options)


def rollback(
    repository: str | Path,
    to: str,
    *,
    message: str = "",
    tag: str | None = None,
    client: Client | None = None,
    progress: ProgressFn | None = None,
) -> PublishResult:
    """Make version ``to`` (tag, id or number) the latest again, as a new version.

    Raises:
        InputNotFoundError: No repository at ``repository``.
        InvalidParameterError: No such version, or a bad or taken ``tag``.
        OutputExistsError: Another publish holds or moved the repository meanwhile.
    """
    repo = open_repository(repository)
    target = resolve_version(repo, to, flag="--to")
    session = repo.readonly_session(snapshot_id=target)
    ds = read_dataset(session)
    source = _Source(
        dataset=ds,
        store=session,
        records=tile_records(session),
        tiles=_tiles(ds),
        name=f"version {target}",
    )
    extra = {"rollback_to": target}
    options = _Options(tag, "provenance", client, progress, None)
    return _commit(repository, source, "rollback", message, extra, options)


def _classmap_source(path: Path, *, partial: bool = False) -> _Source:
    # A partial map lacks the chunks of the tiles it does not hold: not checked.
    ds = open_product(path, "classmap", check=not partial)
    tiles = _tiles(ds)
    records = {str(r["tile"]): r for r in tile_provenance(path)}
    if partial:
        held = set(ds.attrs.get(PARTIAL_KEY, ()))
        if not held or set(records) != held:
            raise InvalidStoreError(
                f"{path} is not a partial class map with a record for each of its tiles "
                f"(it lists {len(held)} tiles, records {len(records)}): expected one written "
                "by 'eoseg predict' for a subset of tiles; predict it again"
            )
        return _Source(ds, str(path), records, tiles, str(path), partial=True)
    missing = [t.name for t in tiles if t.name not in records]
    if missing:
        raise InvalidStoreError(
            f"{path} has no provenance record for {len(missing)} of its {len(tiles)} tiles "
            f"(e.g. {missing[0]}): expected a class map written by 'eoseg predict', which "
            "records every tile; re-run 'eoseg predict --overwrite'"
        )
    return _Source(ds, str(path), records, tiles, str(path))


def _tiles(ds: xr.Dataset) -> tuple[Tile, ...]:
    return tuple(iter_tiles(grid_of(ds, "class map"), int(ds.attrs["tile_size"])))


def _commit(
    repository: str | Path,
    source: _Source,
    kind: str,
    message: str,
    extra: dict[str, Any],
    options: _Options,
) -> PublishResult:
    """Copy ``source`` into a new version (one transaction) and commit it."""
    tag = options.tag
    start = time.perf_counter()
    with _repository_lock(repository, str(source.dataset.attrs.get("run_id", ""))):
        repo = open_repository(repository, create=True)
        if tag is not None:
            check_tag(repo, tag)
        session = repo.writable_session(BRANCH)
        parent = _parent(repo)
        _check_base(repository, parent, options.base)
        old = read_dataset(session) if parent else None
        incremental = old is not None and _layout(old) == _layout(source.dataset)
        if source.partial and not incremental:
            raise InvalidParameterError(
                f"{source.name} holds only some tiles, but {repository} has "
                f"{'a version of another grid or layout' if parent else 'no version'} to take "
                "the others from: predict every tile and publish that map"
            )
        # With a cluster the tiles are written through forks of a clean session.
        writer = session if options.client is None else session.fork()
        if not incremental:
            log.info("%s: writing the whole map (first version or a new layout)", repository)
            source.dataset.to_zarr(
                writer.store, mode="w", compute=False, zarr_format=3, consolidated=False
            )
        counts, records = _copy(session, writer, source, incremental, options)
        _put_attrs(session, "", _root_attrs(source.dataset))
        _put_attrs(session, TILES_GROUP, records)
        committed = session.has_uncommitted_changes
        version = parent or ""
        if committed:
            meta = _metadata(kind, source, records, counts, extra)
            text = message or _message(kind, source, counts, extra)
            version = _commit_session(session, text, meta, repository)
        if tag is not None:
            repo.create_tag(tag, version)
        log.info("%s: version %s (%s)", repository, version, counts)
    return PublishResult(
        repository=str(repository),
        version=version,
        parent=parent,
        committed=committed,
        tag=tag,
        tiles=len(source.tiles),
        seconds=round(time.perf_counter() - start, 3),
        **counts,
    )


@dataclass(frozen=True, slots=True)
class _Options:
    tag: str | None
    compare: Compare
    client: Client | None
    progress: ProgressFn | None
    base: str | None


def _check_base(repository: str | Path, parent: str | None, base: str | None) -> None:
    """Refuse to publish on top of another version than the one the caller planned on."""
    if base is not None and parent != base:
        raise OutputExistsError(
            f"the latest version of {repository} is {parent}, not {base} that this run "
            "planned its tiles on: another publish came first; nothing of this one was "
            "published: run it again to plan on the new latest version"
        )


def _copy(
    session: icechunk.Session,
    writer: icechunk.Session | icechunk.session.ForkSession,
    source: _Source,
    incremental: bool,
    options: _Options,
) -> tuple[dict[str, int], dict[str, dict[str, Any]]]:
    """Write the tiles that changed (`eoseg.version_tiles`); counts and new records."""
    current = tile_records(session) if incremental else {}
    # A partial source's other tiles keep the latest version's records: equal, unread.
    new = {**current, **source.records} if source.partial else source.records
    pairs = {t.name: (new[t.name], current.get(t.name)) for t in source.tiles}
    names = tuple(str(n) for n in source.dataset.data_vars)
    job = CopyJob(source.store, names, options.compare)
    results = copy_tiles(
        options.client, session, writer, source.tiles, job, pairs, options.progress
    )
    counts = {"tiles_written": 0, "tiles_unchanged": 0, "tiles_recorded": 0}
    for what, _ in results:
        counts[what] += 1
    return counts, {t.name: r for t, (_, r) in zip(source.tiles, results, strict=True)}


def _parent(repo: icechunk.Repository) -> str | None:
    """The latest eoseg version, None when the repository holds none yet."""
    for snapshot in repo.ancestry(branch=BRANCH):
        if KIND_KEY in (snapshot.metadata or {}):
            return snapshot.id
    return None


@contextmanager
def _repository_lock(repository: str | Path, run_id: str) -> Iterator[None]:
    """One writer at a time on a local repository (icechunk's local storage does not
    guard concurrent commits); on object storage icechunk's commit detects conflicts."""
    if not is_local(repository):
        yield
        return
    path = Path(str(repository).removeprefix("file://"))
    with output_lock(path, run_id=run_id, flag="--to"):
        yield


def _layout(ds: xr.Dataset) -> tuple[Any, ...]:
    """What must match for a version to be written on top of another tile by tile."""
    grid: GeoBox = grid_of(ds, "class map")
    variables = tuple(
        (str(n), v.dims, v.shape, str(v.dtype), v.encoding.get("chunks"))
        for n, v in sorted(ds.data_vars.items())
    )
    other = tuple(
        (str(n), tuple(np.asarray(c.values).tolist()))
        for n, c in sorted(ds.coords.items())
        if n not in ("x", "y", "spatial_ref")
    )
    return (grid.shape, tuple(grid.affine), str(grid.crs), variables, other)


def _root_attrs(ds: xr.Dataset) -> dict[str, Any]:
    # A version holds every tile: the partial map's list of its own is not the version's.
    attrs = {k: v for k, v in ds.attrs.items() if k != PARTIAL_KEY}
    return {**attrs, "eoseg_published_by": __version__}


def _put_attrs(session: icechunk.Session, path: str, attrs: dict[str, Any]) -> None:
    """Set a group's attributes (creating it), only when they differ: an unchanged
    attribute must not make a version out of nothing."""
    root = zarr.open_group(session.store, mode="r+")
    group = root.require_group(path) if path else root
    if _jsonable(dict(group.attrs)) != _jsonable(attrs):
        group.attrs.put(attrs)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _metadata(
    kind: str,
    source: _Source,
    records: dict[str, dict[str, Any]],
    counts: dict[str, int],
    extra: dict[str, Any],
) -> dict[str, Any]:
    """The commit metadata: what made the version (per-tile detail is in the records)."""
    attrs = source.dataset.attrs
    models = sorted({str(r.get("model", "")) for r in records.values()})
    cubes = sorted({str(r.get("cube", "")) for r in records.values()})
    runs = sorted({str(r.get("run_id", "")) for r in records.values()})
    return {
        KIND_KEY: kind,
        "eoseg_version": __version__,
        "run_id": attrs.get("run_id", ""),
        "model": attrs.get("model", ""),
        "model_version": attrs.get("model_version", ""),
        "cube_signature": attrs.get("cube_signature", ""),
        "tile_models": models,
        "tile_cubes": cubes,
        "tile_runs": runs,
        "tiles": len(source.tiles),
        **counts,
        **extra,
    }


def _message(kind: str, source: _Source, counts: dict[str, int], extra: dict[str, Any]) -> str:
    written = f"{counts['tiles_written']} of {len(source.tiles)} tiles written"
    if kind == "rollback":
        return f"rollback to {extra['rollback_to']}: {written}"
    run = source.dataset.attrs.get("run_id") or "-"
    return f"publish {source.name} (run {run}): {written}"


def _commit_session(
    session: icechunk.Session, message: str, metadata: dict[str, Any], repository: str | Path
) -> str:
    try:
        return session.commit(message, metadata=metadata)
    except icechunk.ConflictError as exc:
        raise OutputExistsError(
            f"another publish committed a version of {repository} while this one ran "
            f"({exc}): nothing of this one was published; run it again to publish on top "
            "of the new latest version"
        ) from exc
