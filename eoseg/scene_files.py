"""Which raster files form one scene, by their names alone.

One rule for a folder and for files given one by one: files whose names share a stem
and end in a band token are the bands of one scene. Tokens are the band names and
aliases of the sensor profiles and the usual patterns (``_B2``, ``_B02``, ``_B8A``,
``_SR_B4``, ``_BAND5``, ``_VV``; a trailing resolution such as ``_10m`` is allowed).
A name that starts with a sensor's scene name (a Landsat product id) belongs to that
sensor: its token is a band of the profile, or its quality mask (``_QA_PIXEL``,
``_BQA``), or another product layer that is not a band of the cube (``_QA_RADSAT``,
``_ST_B10``...) and is left out with a log line. A file without a token is a scene of
its own, with the band names its metadata gives.

Grouping reads no pixels; `eoseg.catalog` opens the files when it builds the scenes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from eoseg.sensor_profile import BandKind, QualityMask, SensorProfile
from eoseg.sensors import PROFILES

log = logging.getLogger(__name__)

_PROFILE_BANDS = {b.name.upper(): b.name for p in PROFILES.values() for b in p.bands}
_BAND_TOKEN = re.compile(
    r"(?:^|[_\-.])("
    + "|".join(re.escape(n) for n in sorted(_PROFILE_BANDS.values(), key=len, reverse=True))
    + r"|(?:SR_|ST_)?B\d{1,2}A?|BAND\d{1,2}|HH|HV|VV|VH)(?:_\d{1,3}m)?$",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class BandFile:
    """One file of a scene: the band it holds (``None``: named by its metadata)."""

    name: str | None
    path: str
    kind: BandKind = "reflectance"


@dataclass(frozen=True, slots=True)
class FileGroup:
    """Raster files that form one scene.

    Attributes:
        id: Scene id: the shared stem (a Landsat product id, ``T33TUL_20240501``), or
            the file's stem when a generic scene has one file.
        profile: The sensor profile the names belong to (``generic`` if none).
        bands: The band files, in the profile's band order (natural order of the band
            names for ``generic``: ``B2 < B10``, ``B8 < B8A < B11``).
        mask: The quality mask file and how to read it, if any.
        ignored: Files of the scene that are neither a band nor its mask.
        datetime: Acquisition date the names give (Landsat product ids), if any.
    """

    id: str
    profile: SensorProfile
    bands: tuple[BandFile, ...]
    mask: tuple[str, QualityMask] | None = None
    ignored: tuple[str, ...] = ()
    datetime: str | None = None

    @property
    def paths(self) -> tuple[str, ...]:
        """Every file of the group."""
        masked = (self.mask[0],) if self.mask else ()
        return (*(b.path for b in self.bands), *masked, *self.ignored)


def group_band_files(paths: Sequence[Path]) -> list[FileGroup]:
    """Group raster files into scenes by their names, in order of first appearance.

    Files in different folders are never one scene. Scene ids are unique in the result
    (a repeated stem gets its folder's name in front).
    """
    members: dict[tuple[str, str, str, bool], list[tuple[Path, str | None]]] = {}
    for path in paths:
        profile, key, token = _split(path)
        members.setdefault((str(path.parent), profile.name, key, token is not None), []).append(
            (path, token)
        )
    groups = [
        _group(PROFILES[name], key or Path(parent).name, files)
        for (parent, name, key, _), files in members.items()
    ]
    return _unique_ids(groups, [Path(parent).name for parent, *_ in members])


def _split(path: Path) -> tuple[SensorProfile, str, str | None]:
    """``(profile, scene key, token)`` of one file name."""
    stem = path.stem
    for profile in PROFILES.values():
        named = profile.split_name(stem)
        if named is not None:
            return profile, *named
    match = _BAND_TOKEN.search(stem)
    if match is None:
        return PROFILES["generic"], stem, None
    return PROFILES["generic"], stem[: match.start()], match.group(1)


def _group(profile: SensorProfile, key: str, files: list[tuple[Path, str | None]]) -> FileGroup:
    if profile.name == "generic":
        if files[0][1] is None:  # no token: the file is the scene, named by its metadata
            return FileGroup(key, profile, tuple(BandFile(None, str(p)) for p, _ in files))
        named = [BandFile(_PROFILE_BANDS.get(t.upper(), t.upper()), str(p)) for p, t in files if t]
        scene_id = files[0][0].stem if len(files) == 1 else key  # a lone file names its scene
        return FileGroup(scene_id, profile, tuple(sorted(named, key=_natural)))
    found: list[tuple[int, BandFile]] = []
    mask: tuple[str, QualityMask] | None = None
    ignored: list[str] = []
    order = profile.band_names
    for path, token in files:
        spec = profile.band(token or "")
        quality = profile.mask(token or "")
        if spec is not None:
            found.append((order.index(spec.name), BandFile(spec.name, str(path), spec.kind)))
        elif quality is not None and mask is None:
            mask = (str(path), quality)
        else:
            ignored.append(str(path))
    if ignored:
        log.info(
            "scene %s: %d file(s) are not bands of %s and are left out: %s",
            key,
            len(ignored),
            profile.name,
            ", ".join(Path(p).name for p in ignored),
        )
    bands = tuple(b for _, b in sorted(found, key=lambda f: f[0]))
    return FileGroup(key, profile, bands, mask, tuple(ignored), profile.scene_date(key))


def _natural(band: BandFile) -> tuple[tuple[int, str], ...]:
    """Sort key: digit runs compare as numbers, so ``B2 < B10`` and ``B8A < B11``."""
    parts = re.findall(r"\d+|\D+", band.name or "")
    return tuple((int(p), "") if p.isdigit() else (-1, p) for p in parts)


def _unique_ids(groups: list[FileGroup], folders: list[str]) -> list[FileGroup]:
    seen: dict[str, int] = {}
    for g in groups:
        seen[g.id] = seen.get(g.id, 0) + 1
    out = []
    for g, folder in zip(groups, folders, strict=True):
        if seen[g.id] > 1:
            g = replace(g, id=f"{folder}/{g.id}")
        out.append(g)
    return out
