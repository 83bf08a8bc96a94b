"""Scene discovery: GeoTIFF files and folders, and static STAC catalogs.

A source is a GeoTIFF/COG file, a folder of them, or a STAC catalog / collection / item
JSON file. Files are opened by content through GDAL, never by extension (some real files
named ``.jp2`` are GeoTIFFs). Raster files form scenes by their names, by one rule for a
folder and for the files given on the command line (`eoseg.scene_files`): single-band
files sharing a stem and ending in a band token (``x_B04.tif``, ``x_B8A.jp2``,
``x_SR_B4.TIF``, ``x_VV.tif``) are one multi-band scene, and names that start with a
Landsat product id are scenes of the matching Landsat profile, their ``QA_PIXEL`` /
``BQA`` file the mask. STAC items are read by `eoseg.stac`. A scene's date is the STAC
``datetime`` or the Landsat product id's; a plain file's comes from its acquisition tags
or its name (`eoseg.scene_dates`), and each scene records where (``datetime_source``).

`scan_sources` skips bad scenes with a reason and goes on; `discover_scenes` is strict.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from eoseg.errors import EosegError, InputNotFoundError
from eoseg.scene import BandSource, Scene, scene_from_files
from eoseg.scene_files import FileGroup, group_band_files
from eoseg.stac import item_scenes

__all__ = ["BandSource", "ScanResult", "Scene", "SkippedScene", "discover_scenes", "scan_sources"]

log = logging.getLogger(__name__)

_RASTER_SUFFIXES = {".tif", ".tiff", ".jp2", ".vrt", ".img"}


@dataclass(frozen=True, slots=True)
class SkippedScene:
    """A scene (or a whole source) left out of a scan, and why.

    Attributes:
        source: The source it came from, as given.
        id: Scene id, or ``None`` when the source itself could not be read.
        reason: What was expected, what was found, and the fix.
        error: The error that made it skipped (what `discover_scenes` raises).
    """

    source: str
    id: str | None
    reason: str
    error: EosegError = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class ScanResult:
    """Scenes found in the sources, and those skipped with their reasons."""

    scenes: tuple[Scene, ...]
    skipped: tuple[SkippedScene, ...]


def scan_sources(sources: Sequence[str | Path]) -> ScanResult:
    """Turn user sources into scenes, skipping every bad one with its reason.

    A corrupt or truncated file, a missing asset file, a raster without CRS, a band the
    sensor needs but the item lacks, or an unknown sensor named in ``eoseg:sensor`` skips
    that scene (logged as a warning); the others go on.
    """
    scenes: list[Scene] = []
    skipped: list[SkippedScene] = []
    for found in _iter_scan(sources):
        if isinstance(found, Scene):
            scenes.append(found)
        else:
            log.warning("skipped %s: %s", found.id or found.source, found.reason)
            skipped.append(found)
    return ScanResult(tuple(scenes), tuple(skipped))


def discover_scenes(sources: Sequence[str | Path]) -> list[Scene]:
    """Turn user sources into scenes, in the order given; stop at the first bad one.

    Raises:
        InputNotFoundError: A source or asset file does not exist, or nothing was found.
        UnreadableRasterError: A file is not a raster GDAL can read, or is truncated.
        GeoreferenceError: A raster has no CRS or transform.
        BandMismatchError: A STAC item lacks a band its sensor needs.
        InvalidParameterError: An item names an unknown sensor.
    """
    scenes: list[Scene] = []
    for found in _iter_scan(sources):
        if isinstance(found, SkippedScene):
            raise found.error
        scenes.append(found)
    if not scenes:
        raise InputNotFoundError(
            f"no scenes found in {', '.join(map(str, sources)) or 'no sources'}: expected "
            "GeoTIFF/COG files, folders of them or STAC JSON; give at least one source"
        )
    return scenes


_Unit = tuple[str, Callable[[], Scene]]


def _iter_scan(sources: Sequence[str | Path]) -> Iterator[Scene | SkippedScene]:
    # Files given one by one group into scenes as a folder's files do; each scene comes
    # at the place of its first file among the sources.
    files = list(dict.fromkeys(Path(s) for s in sources if _is_file(Path(s))))
    owner = {Path(p): g for g in group_band_files(files) for p in g.paths}
    done: set[str] = set()
    seen: dict[str, int] = {}
    for source in sources:
        path = Path(source)
        try:
            if path in owner:
                group = owner[path]
                units = [] if group.id in done else [_group_unit(group)]
                done.add(group.id)
            else:
                units = _units(path)
        except EosegError as exc:
            yield SkippedScene(str(source), None, str(exc), exc)
            continue
        for scene_id, build in units:
            try:
                scene = build()
            except EosegError as exc:
                yield SkippedScene(str(source), scene_id, str(exc), exc)
                continue
            # Ids key a run's bookkeeping: a repeated id (same stem in two sources) is
            # made unique rather than silently merged.
            seen[scene.id] = seen.get(scene.id, 0) + 1
            yield (
                scene if seen[scene.id] == 1 else replace(scene, id=f"{scene.id}#{seen[scene.id]}")
            )


def _is_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() != ".json"


def _units(path: Path) -> list[_Unit]:
    """The scenes a folder or STAC source holds, each as (id, builder), without reading
    pixels yet."""
    if not path.exists():
        raise InputNotFoundError(
            f"source {path} does not exist: give GeoTIFF/COG files, folders of them, "
            "or a STAC catalog/collection/item JSON file"
        )
    if path.is_dir():
        stac = [p for p in (path / "catalog.json", path / "collection.json") if p.exists()]
        return item_scenes(stac[0]) if stac else _folder_units(path)
    return item_scenes(path)


def _folder_units(folder: Path) -> list[_Unit]:
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _RASTER_SUFFIXES
    )
    if not files:
        raise InputNotFoundError(
            f"folder {folder} holds no raster files: expected .tif/.tiff/.jp2/.vrt/.img "
            "files or a catalog.json; point at the folder that holds the scenes"
        )
    return [_group_unit(g) for g in group_band_files(files)]


def _group_unit(group: FileGroup) -> _Unit:
    return group.id, lambda: _scene_from_group(group)


def _scene_from_group(group: FileGroup) -> Scene:
    mask = quality = None
    if group.mask is not None:
        mask = BandSource("mask", group.mask[0], 1, "categorical")
        quality = group.mask[1]
    elif group.profile.masks:
        log.warning(
            "scene %s (%s) has no %s file: no pixel is masked as cloud",
            group.id,
            group.profile.name,
            group.profile.masks[0].key.upper(),
        )
    return scene_from_files(
        group.id,
        group.bands,
        profile=group.profile,
        datetime=group.datetime,
        datetime_source=f"product id {group.id}",
        mask=mask,
        quality=quality,
    )
