"""Sensor profiles: what a sensor's bands are called and how its values are read.

A profile is one declarative entry; adding a sensor means adding one `SensorProfile`
to `PROFILES` (Landsat's are in `eoseg.landsat`, the types in `eoseg.sensor_profile`).
Scenes whose sensor is unknown use ``generic``: band names from the file (or
``band_1..n``), scale/offset from the file's metadata.

Asset keys and aliases follow the catalogs scenes usually come from: Earth Search v1
(``blue``, ``nir08``, ``scl``...), Planetary Computer (``B02``, ``SCL``, ``vv``,
``sur_refl_b01``, ``landsat-c2-l2``), INPE's STAC and the CBERS-on-AWS archive (``BAND5``
keys, ``..._BAND5.tif`` files; ``B5`` in the AMS Kepler static catalog).
"""

from __future__ import annotations

from eoseg.errors import InvalidParameterError
from eoseg.landsat import LANDSAT_PROFILES
from eoseg.sensor_profile import (
    BandKind,
    BandSpec,
    BitTest,
    Conversion,
    PropertyOffset,
    QualityMask,
    SensorProfile,
    StacMatch,
    invalid_by_mask,
    normalize_key,
)

__all__ = [
    "PROFILES",
    "BandKind",
    "BandSpec",
    "BitTest",
    "Conversion",
    "QualityMask",
    "SensorProfile",
    "detect_profile",
    "get_profile",
    "invalid_by_mask",
    "normalize_key",
    "same_band",
]


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
            masks=(QualityMask("SCL", invalid_values=(0, 1, 3, 8, 9, 10)),),
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
            masks=(
                QualityMask(
                    "state_1km",
                    aliases=("sur_refl_state_500m", "state_500m", "qa", "state"),
                    invalid_bits=(BitTest(first=0, count=2, valid=(0,)),),
                ),
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
        *LANDSAT_PROFILES,
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
    item_id: str | None = None,
) -> SensorProfile:
    """The profile whose rules match a STAC item; ``generic`` if none does.

    A scene name (``item_id``, e.g. a Landsat product id, which names sensor and level)
    decides first; then collection rules, tried for every profile before platform rules,
    so a collection id decides even when the platform would fit another profile.
    """
    if item_id:
        for p in PROFILES.values():
            if p.names_scene(item_id):
                return p
    for p in PROFILES.values():
        if p.stac.by_collection(collection, platform, constellation, instruments):
            return p
    for p in PROFILES.values():
        if p.stac.by_platform(platform, constellation, instruments):
            return p
    return PROFILES["generic"]


def same_band(sensor_a: str, sensor_b: str, band: str) -> bool:
    """True unless two sensors give one band name to different physical bands.

    ``SR_B1`` is blue for Landsat TM and ETM+ but coastal aerosol for OLI: those scenes
    must not be composited as one band. A ``generic`` (or unknown) sensor says nothing
    about its bands, so it agrees with every sensor.
    """
    found = [p.band(band) for name in (sensor_a, sensor_b) if (p := PROFILES.get(name))]
    specs = [s for s in found if s is not None]
    if len(specs) < 2:
        return True
    common = [{normalize_key(a) for a in s.aliases} for s in specs]
    return not all(common) or common[0] == common[1]
