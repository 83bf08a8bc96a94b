"""A landscape where two classes share their spectra and differ only by their surroundings.

`make_context_scene` draws, from one seed, a Sentinel-2-like scene where ``park`` (grass
inside built-up districts) and ``grassland`` (open grass) have one spectrum, one
brightness field and one texture: only what lies around a pixel tells them apart. Parks
are wider than a chip (64-96 px against 32 px chips), so a network that reads one chip
sees green on every side in the middle of a park as in the middle of a meadow; a window
four chips wide shows the district around it. Forest and a lake complete the scene.

It writes a real scene (``scene.tif``: four bands B02, B03, B04, B08 as reflectance x
10000, uint16, nodata 0, in a UTM CRS) and its truth (``truth.tif``: class ids of
`CONTEXT_CLASSES`, uint8, 255 nodata) on the same grid, which ``eoseg ingest`` and
``eoseg rasterize`` take like any scene and labels. Used by ``benchmarks/context.py``
and ``tests/test_contexts.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin
from scipy import ndimage

from eoseg.classes import ClassSchema, LandClass
from eoseg.synthetic_scenes import BANDS, REFLECTANCE_SCALE, SPECTRA, smooth_noise

CONTEXT_CLASSES = ClassSchema(
    (
        LandClass(0, "grassland", "#a6dba0"),
        LandClass(1, "park", "#4dac26"),
        LandClass(2, "built-up", "#d73027"),
        LandClass(3, "forest", "#1b7837"),
        LandClass(4, "water", "#1f78b4"),
    )
)
"""Classes of the context landscape; grassland and park share one spectrum."""
_SPECTRUM = (2, 2, 4, 1, 0)
"""Row of `eoseg.synthetic_scenes.SPECTRA` of each class: park is grassland's."""


@dataclass(frozen=True, slots=True)
class ContextSpec:
    """Size and knobs of the context landscape.

    Attributes:
        seed: Seed of every draw; the same spec gives the same scene.
        size: Side of the square scene in pixels.
        resolution: Pixel size in metres.
        epsg: UTM CRS of the grid.
        districts: Built-up districts placed (fewer when they do not fit).
        district_size: Least and largest side of a district in pixels.
        park_size: Least and largest diameter of a park in pixels.
        ring: Least built-up width around a park, in pixels.
        noise: Standard deviation of sensor noise, in reflectance.
    """

    seed: int = 0
    size: int = 512
    resolution: float = 10.0
    epsg: int = 32632
    districts: int = 4
    district_size: tuple[int, int] = (150, 190)
    park_size: tuple[int, int] = (64, 96)
    ring: int = 16
    noise: float = 0.01


@dataclass(frozen=True, slots=True)
class ContextScene:
    """The files of a context landscape and its truth."""

    scene: Path
    truth: Path
    classes: np.ndarray


def make_context_scene(out_dir: Path, spec: ContextSpec = ContextSpec()) -> ContextScene:
    """Draw a context landscape and write ``scene.tif`` and ``truth.tif`` in ``out_dir``."""
    rng = np.random.default_rng(spec.seed)
    classes = _layout(spec, rng)
    out_dir.mkdir(parents=True, exist_ok=True)
    transform = from_origin(500_000.0, 5_300_000.0, spec.resolution, spec.resolution)
    profile = {"driver": "GTiff", "width": spec.size, "height": spec.size,
               "crs": f"EPSG:{spec.epsg}", "transform": transform}  # fmt: skip
    scene, truth = out_dir / "scene.tif", out_dir / "truth.tif"
    with rasterio.open(scene, "w", count=4, dtype="uint16", nodata=0, **profile) as dst:
        dst.write(_render(classes, spec, rng))
        dst.descriptions = BANDS
    with rasterio.open(truth, "w", count=1, dtype="uint8", nodata=255, **profile) as dst:
        dst.write(classes[None])
    return ContextScene(scene, truth, classes)


def _layout(spec: ContextSpec, rng: np.random.Generator) -> np.ndarray:
    """Class ids: grassland with forest and a lake, districts of built-up with parks."""
    n = spec.size
    cls = np.zeros((n, n), np.uint8)
    cls[smooth_noise(rng, (n, n), n / 24) > 1.0] = 3  # forest patches
    lake = smooth_noise(rng, (n, n), n / 10)
    cls[lake > np.quantile(lake, 0.96)] = 4
    placed: list[tuple[int, int, int, int]] = []
    for _ in range(50 * spec.districts):
        if len(placed) == spec.districts:
            break
        h, w = rng.integers(spec.district_size[0], spec.district_size[1] + 1, 2)
        y, x = int(rng.integers(0, n - h)), int(rng.integers(0, n - w))
        gap = spec.ring
        if any(
            y < b[0] + b[2] + gap
            and b[0] < y + h + gap
            and x < b[1] + b[3] + gap
            and b[1] < x + w + gap
            for b in placed
        ):
            continue
        placed.append((y, x, int(h), int(w)))
        cls[y : y + h, x : x + w] = 2
        _parks(cls, (y, x, int(h), int(w)), spec, rng)
    return cls


def _parks(
    cls: np.ndarray, box: tuple[int, int, int, int], spec: ContextSpec, rng: np.random.Generator
) -> None:
    """One park (an ellipse) inside a district, a built-up ring of ``spec.ring`` around it."""
    y, x, h, w = box
    ry = min(int(rng.integers(*spec.park_size)) // 2, h // 2 - spec.ring)
    rx = min(int(rng.integers(*spec.park_size)) // 2, w // 2 - spec.ring)
    if min(ry, rx) < 4:
        return
    cy = int(rng.integers(y + spec.ring + ry, y + h - spec.ring - ry + 1))
    cx = int(rng.integers(x + spec.ring + rx, x + w - spec.ring - rx + 1))
    yy, xx = np.ogrid[y : y + h, x : x + w]
    inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    cls[y : y + h, x : x + w][inside] = 1


def _render(cls: np.ndarray, spec: ContextSpec, rng: np.random.Generator) -> np.ndarray:
    """uint16 ``(4, y, x)`` reflectance x 10000 of the classes: one brightness field and
    one texture over all grass (park or not), so only the surroundings differ."""
    n = cls.shape[0]
    spectra = SPECTRA[np.asarray(_SPECTRUM)]
    bright = 1.0 + 0.08 * smooth_noise(rng, (n, n), 6.0)
    texture = 1.0 + 0.04 * ndimage.gaussian_filter(rng.standard_normal((n, n)), 1.0)
    refl = spectra[cls].transpose(2, 0, 1) * (bright * texture)[None]
    refl += rng.normal(0, spec.noise, refl.shape)
    return np.clip(np.rint(refl / REFLECTANCE_SCALE), 1, 65535).astype(np.uint16)
