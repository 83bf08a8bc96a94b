"""Sensor profiles: what a sensor's bands are called and how its values are read.

A profile is one declarative entry; adding a sensor means adding one `SensorProfile`
to `PROFILES`. Scenes whose sensor is unknown use ``generic``: band names from the file
(or ``band_1..n``), scale/offset from the file's metadata.
"""

from __future__ import annotations

from dataclasses import dataclass

from eoseg.errors import InvalidParameterError


@dataclass(frozen=True, slots=True)
class SensorProfile:
    """How to read one sensor's scenes.

    Attributes:
        name: Profile id, e.g. ``"sentinel-2-l2a"``.
        bands: Band names in the order a cube stores them (empty: take the scene's own).
        scale: Multiplier from stored integers to physical values (reflectance, dB).
        offset: Added after scaling.
        nodata: Stored value meaning "no data".
        mask_band: Name of the quality/cloud mask asset, if the sensor has one.
        mask_invalid: Mask values that make a pixel invalid; ``None`` means any non-zero.
    """

    name: str
    bands: tuple[str, ...] = ()
    scale: float | None = None
    offset: float | None = None
    nodata: float | None = None
    mask_band: str | None = None
    mask_invalid: tuple[int, ...] | None = None


PROFILES: dict[str, SensorProfile] = {
    p.name: p
    for p in (
        SensorProfile("generic"),
        SensorProfile(
            "sentinel-2-l2a",
            bands=(
                "B01",
                "B02",
                "B03",
                "B04",
                "B05",
                "B06",
                "B07",
                "B08",
                "B8A",
                "B09",
                "B11",
                "B12",
            ),
            scale=1e-4,
            offset=0.0,
            nodata=0,
            mask_band="SCL",
            # SCL: 0 no data, 1 saturated, 3 cloud shadow, 8/9 cloud, 10 thin cirrus.
            mask_invalid=(0, 1, 3, 8, 9, 10),
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
            f"unknown sensor {name!r}; known sensors: {', '.join(sorted(PROFILES))}"
        ) from None
