"""Per-tile input signatures: a digest of what determines one cube tile's pixels.

When ingest writes a tile it records (key `INPUT_KEY` of the tile's provenance record) a
digest of the scenes that touch the tile, per time step and in source order (their ids,
band and mask files with each file's identity, scaling and sensor), and of the settings
that turn them into the tile's values (the tile's own frame, composite method, storage
encoding, and with ``by_date`` the cube's dates). A tile whose signature is unchanged
between two cubes holds the same pixels; `eoseg predict` copies it into the class map's
tile record, and `eoseg.regenerate` recomputes only the tiles whose signature changed.

A local file's identity is its absolute path, size and modification time (nanoseconds):
cheap to read, and any rewrite of the file changes it. A remote asset (``s3://``,
``https://``) is identified by its URL, which STAC catalogs version per item.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from odc.geo.geobox import GeoBox

from eoseg.composite import TileJob
from eoseg.ingest_plan import CubeEncoding
from eoseg.scene import BandSource, Scene

INPUT_KEY = "input_signature"
"""Key of a cube tile's provenance record (and of a class map tile's) holding the digest."""


def file_identity(href: str) -> list[Any]:
    """A file's identity: ``[path, size, mtime_ns]`` for a local file, ``[url]`` otherwise
    (and ``[path]`` for a local file that is gone)."""
    if "://" in href and not href.startswith("file://"):
        return [href]
    path = Path(href.removeprefix("file://")).absolute()
    try:
        stat = path.stat()
    except OSError:
        return [str(path)]
    return [str(path), stat.st_size, stat.st_mtime_ns]


def scene_identity(scene: Scene) -> dict[str, Any]:
    """Everything about a scene that its pixels on a tile depend on (JSON-ready)."""

    def band(b: BandSource) -> list[Any]:
        return [b.name, b.index, b.kind, *file_identity(b.href)]

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
    identities: dict[str, dict[str, Any]] = {}  # each file is looked at once per run
    shared = {
        "composite": composite,
        "encoding": [encoding.dtype, encoding.scale, encoding.offset, str(encoding.fill)],
        "dates": list(dates) if dates is not None else None,
    }
    out = {}
    for job in jobs:
        box = job.tile.geobox(grid)
        steps = [
            [identities.setdefault(s.id, scene_identity(s)) for s in scenes] for scenes in job.steps
        ]
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
