"""What a sensor profile is: its bands, quality masks, scaling and how to recognise it.

The declarations themselves live in `eoseg.sensors` (Sentinel, MODIS, CBERS) and
`eoseg.landsat`; this module holds only the value types they are written in. Keys, file
tokens and STAC values are compared after `normalize_key`, so ``band-5``, ``BAND_5`` and
``band5`` are one key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Literal

import numpy as np

BandKind = Literal["reflectance", "backscatter", "categorical"]
Conversion = Literal["linear_to_db"]


def normalize_key(key: str) -> str:
    """Lower-case alphanumerics only: how asset keys, tokens and STAC values are compared."""
    return re.sub(r"[^0-9a-z]", "", key.lower())


def _normalize_pattern(pattern: str) -> str:
    return re.sub(r"[^0-9a-z*?]", "", pattern.lower())


@dataclass(frozen=True, slots=True)
class BandSpec:
    """One band of a sensor.

    Attributes:
        name: Band name in the cube (``"B04"``, ``"VV"``, ``"SR_B4"``).
        resolution: Pixel size of the delivered band, in metres.
        kind: ``reflectance`` / ``backscatter`` (bilinear or average resampling) or
            ``categorical`` (nearest).
        aliases: Other asset keys / file-name tokens catalogs use for this band.
        optional: Kept when a scene has it, but a scene without it is still complete
            (e.g. Landsat's panchromatic and thermal bands at Level-1).
    """

    name: str
    resolution: float
    kind: BandKind = "reflectance"
    aliases: tuple[str, ...] = ()
    optional: bool = False

    def matches(self, key: str) -> bool:
        """True if ``key`` (an asset key, ``eo:bands`` name or file token) names this band."""
        k = normalize_key(key)
        return any(k == normalize_key(n) for n in (self.name, *self.aliases))


@dataclass(frozen=True, slots=True)
class BitTest:
    """A bit field of a QA band and the field values that keep a pixel valid.

    ``BitTest(first=0, count=2, valid=(0,))`` is MODIS "cloud state (bits 0-1) must be 00".
    """

    first: int
    count: int
    valid: tuple[int, ...]

    def invalid(self, codes: np.ndarray) -> np.ndarray:
        """True where the field's value is not one of ``valid``."""
        field = (codes >> self.first) & ((1 << self.count) - 1)
        return ~np.isin(field, np.asarray(self.valid))


def flag_bits(*bits: int) -> tuple[BitTest, ...]:
    """Single-bit flags that make a pixel invalid when set (Landsat QA_PIXEL style)."""
    return tuple(BitTest(first=b, count=1, valid=(0,)) for b in bits)


@dataclass(frozen=True, slots=True)
class QualityMask:
    """A sensor's quality/cloud mask asset and which of its pixels are invalid.

    With neither ``invalid_values`` nor ``invalid_bits`` any non-zero value is invalid.

    Attributes:
        key: Asset key (or file-name token) of the mask.
        aliases: Other keys catalogs use for it.
        invalid_values: Mask values meaning invalid (e.g. Sentinel-2 SCL classes).
        invalid_bits: Bit tests; a pixel failing any of them is invalid.
    """

    key: str
    aliases: tuple[str, ...] = ()
    invalid_values: tuple[int, ...] = ()
    invalid_bits: tuple[BitTest, ...] = ()

    def matches(self, key: str) -> bool:
        """True if ``key`` names this mask asset."""
        k = normalize_key(key)
        return any(k == normalize_key(n) for n in (self.key, *self.aliases))

    @property
    def values(self) -> tuple[int, ...] | None:
        """Invalid values as a scene stores them; ``None`` means any non-zero value."""
        if not (self.invalid_values or self.invalid_bits):
            return None
        return self.invalid_values


def invalid_by_mask(
    codes: np.ndarray, values: tuple[int, ...] | None, bits: tuple[BitTest, ...] = ()
) -> np.ndarray:
    """True where integer mask ``codes`` mark a pixel invalid.

    Args:
        codes: Integer mask values.
        values: Invalid values; ``None`` (and no ``bits``) means any non-zero value.
        bits: Bit tests; failing any makes the pixel invalid.
    """
    if bits:
        bad = np.zeros(codes.shape, dtype=bool)
        for test in bits:
            bad |= test.invalid(codes)
        if values:
            bad |= np.isin(codes, np.asarray(values))
        return bad
    if values is None:
        return codes != 0
    return np.isin(codes, np.asarray(values))


@dataclass(frozen=True, slots=True)
class StacMatch:
    """How to recognise a sensor's STAC items (values compared with `normalize_key`).

    An item matches when its collection id matches one of ``collections`` (glob
    patterns), or when its ``platform`` or ``constellation`` is listed and, if
    ``instruments`` is given, one of its instruments is listed too. With
    ``collection_and_platform`` both must match: the collection holds several sensors
    (``landsat-c2-l2`` holds TM, ETM+ and OLI) and the platform alone names no level.
    """

    collections: tuple[str, ...] = ()
    platforms: tuple[str, ...] = ()
    constellations: tuple[str, ...] = ()
    instruments: tuple[str, ...] = ()
    collection_and_platform: bool = False

    def by_collection(
        self,
        collection: str | None,
        platform: str | None,
        constellation: str | None,
        instruments: tuple[str, ...],
    ) -> bool:
        """True if the item's collection names this sensor."""
        if not collection or not any(
            fnmatchcase(normalize_key(collection), _normalize_pattern(p)) for p in self.collections
        ):
            return False
        return not self.collection_and_platform or self._by_platform(
            platform, constellation, instruments
        )

    def by_platform(
        self, platform: str | None, constellation: str | None, instruments: tuple[str, ...]
    ) -> bool:
        """True if the item's platform/constellation (and instrument) name this sensor."""
        return not self.collection_and_platform and self._by_platform(
            platform, constellation, instruments
        )

    def _by_platform(
        self, platform: str | None, constellation: str | None, instruments: tuple[str, ...]
    ) -> bool:
        known = {normalize_key(p) for p in (*self.platforms, *self.constellations)}
        if not known or not (
            {normalize_key(platform or ""), normalize_key(constellation or "")} & known
        ):
            return False
        wanted = {normalize_key(i) for i in self.instruments}
        return not wanted or bool(wanted & {normalize_key(i) for i in instruments})


@dataclass(frozen=True, slots=True)
class PropertyOffset:
    """An offset implied by an item property at or above a version (used when the
    catalog declares none), e.g. Sentinel-2 processing baseline 04.00 and later."""

    prop: str
    since: str
    offset: float


@dataclass(frozen=True, slots=True)
class SensorProfile:
    """How to read one sensor's scenes.

    Attributes:
        name: Profile id, e.g. ``"sentinel-2-l2a"``.
        bands: Bands in the order a cube stores them (empty: take the scene's own).
        band_sets: Alternative complete sets of band names (a scene holding any one of
            them is complete); empty means all of ``bands`` that are not optional.
        scale: Multiplier from stored integers to physical values.
        offset: Added after scaling.
        nodata: Stored value meaning "no data".
        masks: Quality/cloud mask assets the sensor ships, first match wins (Landsat
            Collection 2 ``QA_PIXEL`` or Collection 1 ``BQA``, with different bits).
        conversion: Applied after resampling, e.g. ``linear_to_db`` (10*log10, v <= 0
            is nodata).
        stac: How to recognise the sensor's STAC items.
        offset_rules: Offsets implied by item properties when no offset is declared.
        scene_names: Regular expression matching the start of the sensor's scene names
            (file-name stems and STAC item ids), e.g. a Landsat product id; what follows
            it in a file name, after ``_``, is the band or mask token; a group named
            ``date`` (``YYYYMMDD``) is the acquisition date.
    """

    name: str
    bands: tuple[BandSpec, ...] = ()
    band_sets: tuple[tuple[str, ...], ...] = ()
    scale: float | None = None
    offset: float | None = None
    nodata: float | None = None
    masks: tuple[QualityMask, ...] = ()
    conversion: Conversion | None = None
    stac: StacMatch = StacMatch()
    offset_rules: tuple[PropertyOffset, ...] = ()
    scene_names: str = ""

    @property
    def band_names(self) -> tuple[str, ...]:
        """Names of the profile's bands in cube order."""
        return tuple(b.name for b in self.bands)

    @property
    def complete_sets(self) -> tuple[tuple[str, ...], ...]:
        """The band sets a scene may hold (at least one must be whole)."""
        return self.band_sets or (tuple(b.name for b in self.bands if not b.optional),)

    def implied_offset(self, props: dict[str, Any]) -> float | None:
        """The offset the first matching `PropertyOffset` rule gives an item, if any."""
        for rule in self.offset_rules:
            value = props.get(rule.prop)
            if value is not None and _version(str(value)) >= _version(rule.since):
                return rule.offset
        return None

    def band(self, key: str) -> BandSpec | None:
        """The band ``key`` names (by name or alias), if any."""
        return next((b for b in self.bands if b.matches(key)), None)

    def mask(self, key: str) -> QualityMask | None:
        """The quality mask ``key`` names, if any."""
        return next((m for m in self.masks if m.matches(key)), None)

    def split_name(self, stem: str) -> tuple[str, str] | None:
        """``(scene name, token)`` if ``stem`` is a file of one of this sensor's scenes.

        ``LC08_L2SP_042034_20200101_20200113_02_T1_SR_B4`` gives the product id and
        ``SR_B4`` for a Landsat OLI Level-2 profile; ``None`` when the name is not the
        sensor's or nothing follows the scene name.
        """
        if not self.scene_names:
            return None
        match = re.match(self.scene_names, stem, flags=re.IGNORECASE)
        if match is None or stem[match.end() : match.end() + 1] not in ("_", "-", "."):
            return None
        return stem[: match.end()], stem[match.end() + 1 :]

    def scene_date(self, name: str) -> str | None:
        """The acquisition date in a scene name (``scene_names``' ``date`` group), ISO."""
        match = re.match(self.scene_names, name, flags=re.IGNORECASE) if self.scene_names else None
        day = match.groupdict().get("date") if match else None
        return f"{day[:4]}-{day[4:6]}-{day[6:8]}" if day else None

    def names_scene(self, name: str) -> bool:
        """True if ``name`` (a STAC item id) is one of this sensor's scene names."""
        return bool(self.scene_names) and (
            re.match(self.scene_names, name, flags=re.IGNORECASE) is not None
        )


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text))
