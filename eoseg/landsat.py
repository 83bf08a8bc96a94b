"""Landsat 4-9 sensor profiles: TM, ETM+ and OLI/TIRS at Level-1 and Level-2.

Facts from the USGS Collection 2 product guides and the ``landsat-c2-l2`` STAC items:

- Level-2 surface reflectance ``SR_B*`` (uint16): reflectance = DN * 0.0000275 - 0.2,
  nodata 0. Surface temperature ``ST_B*`` has another scale (0.00341802 K, offset 149)
  and is not a cube band here, like the other Level-2 layers (``ST_TRAD``,
  ``SR_QA_AEROSOL``...): a cube holds values of one scaling.
- Level-1 digital numbers ``B*`` are kept as they are (no scale), nodata 0. The
  panchromatic band (15 m) and the thermal bands are optional: kept when given.
- ``QA_PIXEL`` (Collection 2) bits: 0 fill, 1 dilated cloud, 2 cirrus (OLI only),
  3 cloud, 4 cloud shadow, 5 snow; any set makes the pixel invalid. ``BQA``
  (Collection 1) bits: 0 fill, 1 dropped pixel / terrain occlusion, 4 cloud, 7-8 cloud
  shadow confidence, 9-10 snow/ice confidence, 11-12 cirrus confidence (OLI); high
  confidence (3) is invalid.
- Product ids ``LXSS_LLLL_PPPRRR_YYYYMMDD[_yyyymmdd]_CC_TX`` name the scene (files
  ``<id>_SR_B4.TIF``, ``<id>_QA_PIXEL.TIF``; STAC item ids; Planetary Computer drops
  the processing date); X is the sensor (T = TM, E = ETM+, C/O = OLI), SS the satellite.
- STAC asset keys are the eo common names (``coastal``, ``blue``, ..., ``nir08``,
  ``swir16``, ``swir22``, ``pan``, ``cirrus``, ``lwir11``) plus ``qa_pixel``.
"""

from __future__ import annotations

from eoseg.sensor_profile import (
    BandSpec,
    BitTest,
    QualityMask,
    SensorProfile,
    StacMatch,
    flag_bits,
)

SR_SCALE = 0.0000275
SR_OFFSET = -0.2

# (band, eo common name used as STAC asset key) per sensor, in Level-1 numbering.
_TM = (("B1", "blue"), ("B2", "green"), ("B3", "red"), ("B4", "nir08"), ("B5", "swir16"))
_OLI = (
    ("B1", "coastal"),
    ("B2", "blue"),
    ("B3", "green"),
    ("B4", "red"),
    ("B5", "nir08"),
    ("B6", "swir16"),
    ("B7", "swir22"),
)

_QA_PIXEL = flag_bits(0, 1, 3, 4, 5)
_HIGH = (0, 1, 2)  # confidence fields: 3 = high confidence is invalid


def _qa_pixel(oli: bool) -> QualityMask:
    bits = _QA_PIXEL + (flag_bits(2) if oli else ())
    return QualityMask("qa_pixel", invalid_bits=bits)


def _bqa(oli: bool) -> QualityMask:
    bits = (
        *flag_bits(0, 1, 4),
        BitTest(7, 2, _HIGH),
        BitTest(9, 2, _HIGH),
        *((BitTest(11, 2, _HIGH),) if oli else ()),
    )
    return QualityMask("BQA", invalid_bits=bits)


def _product_id(sensor: str, level: str) -> str:
    return rf"L{sensor}_{level}_\d{{6}}_(?P<date>\d{{8}})(?:_\d{{8}})?_\d{{2}}_(?:T1|T2|RT)"


def _l1_bands(sensor: str) -> tuple[BandSpec, ...]:
    if sensor == "oli":
        return (
            *(BandSpec(b, 30, aliases=(key,)) for b, key in _OLI),
            BandSpec("B8", 15, aliases=("pan",), optional=True),
            BandSpec("B9", 30, aliases=("cirrus",)),
            BandSpec("B10", 30, aliases=("lwir11",), optional=True),
            BandSpec("B11", 30, aliases=("lwir12",), optional=True),
        )
    reflective = tuple(BandSpec(b, 30, aliases=(key,)) for b, key in _TM)
    swir22 = BandSpec("B7", 30, aliases=("swir22",))
    if sensor == "tm":
        return (*reflective, BandSpec("B6", 30, aliases=("lwir",), optional=True), swir22)
    return (
        *reflective,
        BandSpec("B6_VCID_1", 30, optional=True),
        BandSpec("B6_VCID_2", 30, optional=True),
        swir22,
        BandSpec("B8", 15, aliases=("pan",), optional=True),
    )


def _l2_bands(sensor: str) -> tuple[BandSpec, ...]:
    names = _OLI if sensor == "oli" else (*_TM, ("B7", "swir22"))
    return tuple(BandSpec(f"SR_{b}", 30, aliases=(key,)) for b, key in names)


# sensor -> (product-id sensor/satellite pattern, platforms, instruments)
_SENSORS = {
    "tm": ("T0[45]", ("landsat-4", "landsat-5"), ("tm",)),
    "etm": ("E07", ("landsat-7",), ("etm+",)),
    "oli": ("[CO]0[89]", ("landsat-8", "landsat-9"), ("oli", "oli_tirs")),
}


def _profile(sensor: str, level: int) -> SensorProfile:
    ids, platforms, instruments = _SENSORS[sensor]
    oli = sensor == "oli"
    l2 = level == 2
    return SensorProfile(
        f"landsat-{sensor}-l{level}",
        bands=_l2_bands(sensor) if l2 else _l1_bands(sensor),
        scale=SR_SCALE if l2 else 1.0,
        offset=SR_OFFSET if l2 else 0.0,
        nodata=0,
        masks=(_qa_pixel(oli),) if l2 else (_qa_pixel(oli), _bqa(oli)),
        stac=StacMatch(
            collections=("landsat-c2-l2*",) if l2 else ("landsat-c2-l1*",),
            platforms=platforms,
            instruments=instruments,
            collection_and_platform=True,
        ),
        scene_names=_product_id(ids, "L2S[PR]" if l2 else "L1(?:TP|GT|GS)"),
    )


LANDSAT_PROFILES: tuple[SensorProfile, ...] = tuple(
    _profile(sensor, level) for sensor in _SENSORS for level in (1, 2)
)
