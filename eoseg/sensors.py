"""Sensor profiles: what a sensor's bands are called and how its values are read.

A profile is one declarative entry; adding a sensor means adding one `SensorProfile`
to `PROFILES`. Scenes whose sensor is unknown use ``generic``: band names from the file
(or ``band_1..n``), scale/offset from the file's metadata.

Asset keys and aliases follow the catalogs scenes usually come from: Earth Search v1
(``blue``, ``nir08``, ``scl``...), Planetary Computer (``B02``, ``SCL``, ``vv``,
``sur_refl_b01``), INPE's STAC and the CBERS-on-AWS archive (``BAND5`` keys, ``..._BAND5.tif``
files; ``B5`` in the AMS Kepler static catalog). Keys are compared after `normalize_key`,
so ``band-5``, ``BAND_5`` and ``band5`` are one key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Literal

import numpy as np

from eoseg.errors import InvalidParameterError

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
        name: Band name in the cube (``"B04"``, ``"VV"``, ``"BAND5"``).
        resolution: Native pixel size in metres.
        kind: ``reflectance`` / ``backscatter`` (bilinear or average resampling) or
            ``categorical`` (nearest).
        aliases: Other asset keys / file-name tokens catalogs use for this band.
    """

    name: str
    resolution: float
    kind: BandKind = "reflectance"
    aliases: tuple[str, ...] = ()

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


@dataclass(frozen=True, slots=True)
class QualityMask:
    """A sensor's quality/cloud mask asset and which of its pixels are invalid.

    With neither ``invalid_values`` nor ``invalid_bits`` any non-zero value is invalid.

    Attributes:
        key: Asset key of the mask.
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
    ``instruments`` is given, one of its instruments is listed too.
    """

    collections: tuple[str, ...] = ()
    platforms: tuple[str, ...] = ()
    constellations: tuple[str, ...] = ()
    instruments: tuple[str, ...] = ()


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
            them is complete); empty means all of ``bands``.
        scale: Multiplier from stored integers to physical values.
        offset: Added after scaling.
        nodata: Stored value meaning "no data".
        mask: Quality/cloud mask asset, if the sensor has one.
        conversion: Applied after resampling, e.g. ``linear_to_db`` (10*log10, v <= 0
            is nodata).
        stac: How to recognise the sensor's STAC items.
        offset_rules: Offsets implied by item properties when no offset is declared.
    """

    name: str
    bands: tuple[BandSpec, ...] = ()
    band_sets: tuple[tuple[str, ...], ...] = ()
    scale: float | None = None
    offset: float | None = None
    nodata: float | None = None
    mask: QualityMask | None = None
    conversion: Conversion | None = None
    stac: StacMatch = StacMatch()
    offset_rules: tuple[PropertyOffset, ...] = ()

    @property
    def band_names(self) -> tuple[str, ...]:
        """Names of the profile's bands in cube order."""
        return tuple(b.name for b in self.bands)

    @property
    def complete_sets(self) -> tuple[tuple[str, ...], ...]:
        """The band sets a scene may hold (at least one must be whole)."""
        return self.band_sets or (self.band_names,)

    @property
    def mask_values(self) -> tuple[int, ...] | None:
        """Invalid mask values for a scene; ``None`` (any non-zero) when none are listed."""
        quality = self.mask
        if quality is None or not (quality.invalid_values or quality.invalid_bits):
            return None
        return quality.invalid_values

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

    def matches_item(
        self,
        collection: str | None,
        platform: str | None,
        constellation: str | None,
        instruments: tuple[str, ...],
    ) -> bool:
        """True if a STAC item with these properties comes from this sensor."""
        rules = self.stac
        if collection and any(
            fnmatchcase(normalize_key(collection), _normalize_pattern(p)) for p in rules.collections
        ):
            return True
        known = {normalize_key(p) for p in (*rules.platforms, *rules.constellations)}
        if not known or not (
            {normalize_key(platform or ""), normalize_key(constellation or "")} & known
        ):
            return False
        wanted = {normalize_key(i) for i in rules.instruments}
        return not wanted or bool(wanted & {normalize_key(i) for i in instruments})


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text))


def _s2_band(name: str, res: float, *aliases: str) -> BandSpec:
    return BandSpec(name, res, "reflectance", aliases)


_CBERS4 = ("CBERS-4",)
_CBERS4A = ("CBERS-4A",)

PROFILES: dict[str, SensorProfile] = {
    p.name: p
    for p in (
        SensorProfile("generic"),
        SensorProfile(
            "sentinel-2-l2a",
            # Aliases: Earth Search v1 keys (coastal, blue, ..., nir08, swir16, scl).
            bands=(
                _s2_band("B01", 60, "coastal"),
                _s2_band("B02", 10, "blue"),
                _s2_band("B03", 10, "green"),
                _s2_band("B04", 10, "red"),
                _s2_band("B05", 20, "rededge1"),
                _s2_band("B06", 20, "rededge2"),
                _s2_band("B07", 20, "rededge3"),
                _s2_band("B08", 10, "nir"),
                _s2_band("B8A", 20, "nir08"),
                _s2_band("B09", 60, "nir09"),
                _s2_band("B11", 20, "swir16"),
                _s2_band("B12", 20, "swir22"),
            ),
            scale=1e-4,
            offset=0.0,
            nodata=0,
            # SCL: 0 no data, 1 saturated, 3 cloud shadow, 8/9 cloud, 10 thin cirrus.
            mask=QualityMask("SCL", invalid_values=(0, 1, 3, 8, 9, 10)),
            stac=StacMatch(
                collections=("sentinel-2-l2a*", "sentinel-s2-l2a*"),
                platforms=("sentinel-2a", "sentinel-2b", "sentinel-2c", "sentinel-2d"),
                constellations=("sentinel-2",),
            ),
            # Baseline 04.00 (Jan 2022) added BOA_ADD_OFFSET = -1000 DN; catalogs that
            # declare raster:bands offsets (Earth Search) take precedence over this rule.
            offset_rules=(PropertyOffset("s2:processing_baseline", "04.00", -0.1),),
        ),
        SensorProfile(
            "sentinel-1-grd",
            bands=(
                BandSpec("VV", 10, "backscatter", ("vv",)),
                BandSpec("VH", 10, "backscatter", ("vh",)),
            ),
            scale=1.0,
            offset=0.0,
            nodata=0,
            conversion="linear_to_db",
            stac=StacMatch(
                collections=("sentinel-1-grd*", "sentinel-1-rtc*", "sentinel-s1-l1c*"),
                platforms=("sentinel-1a", "sentinel-1b", "sentinel-1c"),
                constellations=("sentinel-1",),
            ),
        ),
        SensorProfile(
            "modis-sr",
            # MOD09GA/MYD09GA and MOD09A1 keys as on Planetary Computer (modis-09A1-061).
            bands=tuple(
                BandSpec(f"sur_refl_b{i:02d}", 463.313, "reflectance", (f"b{i:02d}",))
                for i in range(1, 8)
            ),
            scale=1e-4,
            offset=0.0,
            nodata=-28672,
            # state_1km / sur_refl_state_500m bits 0-1: cloud state, 00 = clear.
            mask=QualityMask(
                "state_1km",
                aliases=("sur_refl_state_500m", "state_500m", "qa", "state"),
                invalid_bits=(BitTest(first=0, count=2, valid=(0,)),),
            ),
            stac=StacMatch(
                collections=(
                    "modis-09A1*",
                    "modis-09GA*",
                    "MOD09GA*",
                    "MYD09GA*",
                    "MOD09A1*",
                    "MYD09A1*",
                ),
            ),
        ),
        SensorProfile(
            "cbers4-mux",
            bands=tuple(BandSpec(f"BAND{i}", 20, "reflectance", (f"B{i}",)) for i in range(5, 9)),
            nodata=0,
            # INPE: CBERS4-MUX, CBERS4_MUX_L4_DN; AMS Kepler (CBERS on AWS): CBERS4MUX.
            stac=StacMatch(
                collections=("CBERS4MUX*", "CBERS4AMUX*"),
                platforms=(*_CBERS4, *_CBERS4A),
                instruments=("MUX",),
            ),
        ),
        SensorProfile(
            "cbers4-wfi",
            bands=tuple(BandSpec(f"BAND{i}", 64, "reflectance", (f"B{i}",)) for i in range(13, 17)),
            nodata=0,
            # CBERS-4 calls the camera AWFI (CBERS4AWFI), INPE's STAC CBERS4-WFI.
            stac=StacMatch(
                collections=("CBERS4WFI*", "CBERS4AWFI*"),
                platforms=(*_CBERS4, *_CBERS4A),
                instruments=("WFI", "AWFI"),
            ),
        ),
        SensorProfile(
            "cbers4-pan",
            bands=(
                BandSpec("BAND1", 5, "reflectance", ("B1",)),
                *(BandSpec(f"BAND{i}", 10, "reflectance", (f"B{i}",)) for i in range(2, 5)),
            ),
            # PAN5M scenes hold BAND1 only, PAN10M scenes BAND2-4.
            band_sets=(("BAND1",), ("BAND2", "BAND3", "BAND4")),
            nodata=0,
            stac=StacMatch(
                collections=("CBERS4PAN*",),
                platforms=_CBERS4,
                instruments=("PAN5M", "PAN10M", "PAN"),
            ),
        ),
        SensorProfile(
            "cbers4a-wpm",
            bands=(
                BandSpec("BAND0", 2, "reflectance", ("B0", "pan")),
                *(BandSpec(f"BAND{i}", 8, "reflectance", (f"B{i}",)) for i in range(1, 5)),
            ),
            nodata=0,
            stac=StacMatch(collections=("CBERS4AWPM*",), platforms=_CBERS4A, instruments=("WPM",)),
        ),
    )
}


def get_profile(name: str) -> SensorProfile:
    """Look a profile up by name.

    Raises:
        InvalidParameterError: Unknown sensor, naming the known ones.
    """
    try:
        return PROFILES[name]
    except KeyError:
        raise InvalidParameterError(
            f"unknown sensor {name!r}; known sensors: {', '.join(sorted(PROFILES))}: "
            "fix the name, or use 'generic' to take band names and scaling from the files"
        ) from None


def detect_profile(
    collection: str | None,
    platform: str | None = None,
    constellation: str | None = None,
    instruments: tuple[str, ...] = (),
) -> SensorProfile:
    """The profile whose STAC rules match an item's properties; ``generic`` if none does.

    Collection rules are tried for every profile before platform rules, so a collection
    id decides even when the platform would fit another profile.
    """
    for p in PROFILES.values():
        if p.matches_item(collection, None, None, ()):
            return p
    for p in PROFILES.values():
        if p.matches_item(None, platform, constellation, instruments):
            return p
    return PROFILES["generic"]
