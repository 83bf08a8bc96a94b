"""Per-tile input signatures: a digest of what determines one cube tile's pixels.

When ingest writes a tile it records (key `INPUT_KEY` of the tile's provenance record) a
digest of the scenes that touch the tile, per time step and in source order (their ids,
band and mask files with each file's identity, scaling and sensor), and of the settings
that turn them into the tile's values (the tile's own frame, composite method, storage
encoding, and with ``by_date`` the cube's dates). A tile whose signature is unchanged
between two cubes holds the same pixels; `eoseg predict` copies it into the class map's
tile record, and `eoseg.regenerate` recomputes only the tiles whose signature changed.

A local file's identity is its absolute path, size and modification time (nanoseconds):
cheap to read, and any rewrite of the file changes it. A file on object storage or a web
server (``s3://``, ``https://``) is identified by its URL and what one HEAD request
through `eoseg.storage` returns (ETag, version id, size, last modified): an object
replaced at the same URL changes it. Each file is looked at once per run, not per tile.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from typing import Any

from odc.geo.geobox import GeoBox

from eoseg.composite import TileJob
from eoseg.errors import EosegError
from eoseg.ingest_plan import CubeEncoding
from eoseg.scene import BandSource, Scene
from eoseg.storage import resolve

log = logging.getLogger(__name__)

INPUT_KEY = "input_signature"
"""Key of a cube tile's provenance record (and of a class map tile's) holding the digest."""


def file_identity(href: str) -> list[Any]:
    """What identifies a file's content, cheaply (no byte of it is read).

    A local file: ``[absolute path, size, mtime_ns]``. A URL, through `eoseg.storage`:
    the URL and what one HEAD request returns (the ETag or the filesystem's checksum or
    generation, version id, size, last-modified time), so an object replaced at the same
    URL is told apart even within the same second. ``[path or URL]`` alone for a file
    that is gone or cannot be reached, or a scheme no installed filesystem reads.
    """
    try:
        loc = resolve(href)
    except EosegError:
        return [href]
    if loc.local is not None:
        path = loc.local.absolute()
        try:
            stat = path.stat()
        except OSError:
            return [str(path)]
        return [str(path), stat.st_size, stat.st_mtime_ns]
    try:
        loc.fs.invalidate_cache(loc.path)  # a listing cached earlier may be stale
        info = loc.fs.info(loc.path)
    except Exception as exc:  # gone, denied, unreachable: all mean "not identified"
        log.warning("cannot read the identity of %s (%s)", loc.url, type(exc).__name__)
        return [loc.url]
    return [loc.url, *(f"{k}={info[k]}" for k in _CONTENT_KEYS if info.get(k) is not None)]


_CONTENT_KEYS = ("ETag", "etag", "Content-MD5", "Digest", "md5Hash", "generation", "VersionId",
                 "size", "LastModified", "last_modified", "updated", "mtime")  # fmt: skip
"""Keys of an fsspec ``info`` that identify an object's content: s3fs (``ETag``,
``VersionId``, ``LastModified``), gcsfs (``md5Hash``, ``generation``, ``updated``), Azure
(``etag``, ``last_modified``), HTTP (``ETag``, ``Content-MD5``, ``Digest``)."""


def scene_identity(scene: Scene, cache: dict[str, list[Any]] | None = None) -> dict[str, Any]:
    """Everything about a scene that its pixels on a tile depend on (JSON-ready).

    ``cache`` holds the `file_identity` of each file already looked at, by href.
    """
    known = {} if cache is None else cache

    def band(b: BandSource) -> list[Any]:
        if b.href not in known:
            known[b.href] = file_identity(b.href)
        return [b.name, b.index, b.kind, *known[b.href]]

    return {
        "id": scene.id,
        "sensor": scene.sensor,
        "bands": [band(b) for b in scene.bands],
        "mask": band(scene.mask) if scene.mask else None,
        "mask_invalid": list(scene.mask_invalid) if scene.mask_invalid is not None else None,
        "mask_bits": [repr(t) for t in scene.mask_bits],
        "scaling": [scene.scale, scene.offset, scene.nodata, scene.dtype],
        "conversion": repr(scene.conversion),
    }


def input_signatures(
    jobs: Sequence[TileJob],
    grid: GeoBox,
    *,
    encoding: CubeEncoding,
    composite: str,
    dates: Sequence[str] | None,
) -> dict[str, str]:
    """The input signature of every tile job, by tile name.

    Args:
        jobs: The tiles and the scenes touching each, per time step (`plan_jobs`).
        grid: The cube's grid.
        encoding: How the cube stores values.
        composite: The composite method.
        dates: The cube's time steps when they are dates (``by_date``), else None: the
            single composite's date label does not change its pixels.
    """
    identities: dict[str, dict[str, Any]] = {}  # each scene (and file) looked at once per run
    files: dict[str, list[Any]] = {}
    shared = {
        "composite": composite,
        "encoding": [encoding.dtype, encoding.scale, encoding.offset, str(encoding.fill)],
        "dates": list(dates) if dates is not None else None,
    }
    out = {}
    for job in jobs:
        box = job.tile.geobox(grid)
        for scene in (s for scenes in job.steps for s in scenes if s.id not in identities):
            identities[scene.id] = scene_identity(scene, files)
        steps = [[identities[s.id] for s in scenes] for scenes in job.steps]
        doc = {
            **shared,
            "frame": [str(box.crs), list(box.affine)[:6], list(box.shape.yx)],
            "steps": steps,
        }
        out[job.tile.name] = _digest(doc)
    return out


def _digest(doc: dict[str, Any]) -> str:
    text = json.dumps(doc, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]
