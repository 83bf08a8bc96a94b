"""Synthetic demo landscape: two Sentinel-2-like scenes across a UTM zone boundary.

`make_demo_data` builds, from one seed and without network, everything `eoseg demo` and the
test fixtures need. The ground truth is defined once, as a class raster on a reference grid
(``DemoSpec.crs``, default EPSG:3035) centred on a UTM zone boundary (default 12°E, 48°N).
Each scene is rendered from that truth on its own native north-up grid in its own UTM CRS
(EPSG:32632 west, EPSG:32633 east, overlapping by ``overlap_m``), so both show the same ground.

Layout of ``out_dir``::

    catalog/catalog.json                 static, self-contained STAC catalog (relative hrefs)
    catalog/<item id>/<item id>.json     one Item per scene
    catalog/<item id>/B02.tif ...        one COG per band: uint16, reflectance x 10000, nodata 0
    catalog/<item id>/cloud_mask.tif     uint8 COG: 1 cloud, 0 clear, 255 outside the footprint
    labels_noisy.gpkg                    OSM-like labels over the whole area (EPSG:4326)
    labels_clean.gpkg                    exact truth clipped to the clean training box
    holdout_truth.gpkg                   exact truth clipped to the held-out box
    truth.tif                            truth class ids on the reference grid (uint8, 255 nodata)

Asset convention of each STAC Item: band assets keyed ``B02``, ``B03``, ``B04``, ``B08``
(blue, green, red, NIR) with ``roles=["data"]`` and ``raster:bands`` giving nodata 0 and
scale 1e-4; the cloud mask keyed ``cloud_mask`` with ``roles=["cloudmask"]``. Items carry
``proj:code``, ``proj:transform`` and ``proj:shape`` (projection extension) and
``eo:cloud_cover`` in percent. Every vector layer has an integer field ``class_id``
(`eoseg.classes.DEMO_CLASSES`) and no overlapping polygons.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pystac
import shapely
from affine import Affine
from pyproj import CRS, Transformer
from rasterio import features
from rasterio.warp import transform_bounds
from scipy import ndimage

from eoseg.classes import IGNORE_ID
from eoseg.errors import InvalidParameterError
from eoseg.synthetic_scenes import (
    BANDS,
    CLOUD_ASSET,
    REFLECTANCE_SCALE,
    SCENE_DATES,
    SPECTRA,
    Ground,
    render_scene,
    smooth_noise,
    write_cog,
)

log = logging.getLogger(__name__)

BBox = tuple[float, float, float, float]
__all__ = [
    "BANDS",
    "CLOUD_ASSET",
    "REFLECTANCE_SCALE",
    "SPECTRA",
    "DemoData",
    "DemoSpec",
    "make_demo_data",
]

# Which class wins where shifted noisy labels overlap (first wins): roads on top, as in OSM.
_PRIORITY = (5, 0, 4, 1, 3, 2)


@dataclass(frozen=True, slots=True)
class DemoSpec:
    """Size and knobs of the synthetic landscape; defaults make a ~1.5 Mpx demo at 10 m.

    Attributes:
        seed: Seed of every random draw; the same spec gives the same data.
        resolution: Pixel size in metres of the reference grid and of both scenes.
        width_m: East-west extent of the area, across both UTM zones.
        height_m: North-south extent of the area.
        center_lon: Longitude of the centre; the scenes split at the nearest UTM zone boundary.
        center_lat: Latitude of the centre (northern hemisphere).
        crs: CRS of the reference grid that holds the truth.
        overlap_m: East-west overlap of the two scenes around the zone boundary.
        forest_fraction: Share of the area that is forest before other classes are painted.
        field_size_m: Range of field parcel side lengths.
        road_width_m: Width of roads (2-3 px at 10 m).
        river_width_m: Width of the river.
        clouds_per_scene: Number of cloud blobs per scene (kept off the held-out box).
        cloud_radius_m: Typical cloud radius (capped at 12 % of the scene's smaller side).
        label_shift_m: Standard deviation of the per-feature shift of noisy labels.
        omission_rate: Share of noisy label features dropped (left unlabelled).
        clean_fraction: Share of the area covered by the clean training box.
        holdout_fraction: Share of the area covered by the held-out box, which straddles
            the zone boundary where it holds every class (see `BOX_MIN_CLASS_SHARE`).
        noise: Standard deviation of sensor noise, in reflectance.
    """

    seed: int = 0
    resolution: float = 10.0
    width_m: float = 15360.0
    height_m: float = 10240.0
    center_lon: float = 12.0
    center_lat: float = 48.0
    crs: str = "EPSG:3035"
    overlap_m: float = 1000.0
    forest_fraction: float = 0.25
    field_size_m: tuple[float, float] = (150.0, 450.0)
    road_width_m: float = 24.0
    river_width_m: float = 40.0
    clouds_per_scene: int = 3
    cloud_radius_m: float = 700.0
    label_shift_m: float = 15.0
    omission_rate: float = 0.25
    clean_fraction: float = 0.06
    holdout_fraction: float = 0.10
    noise: float = 0.005

    def __post_init__(self) -> None:
        if min(self.width_m, self.height_m) < 50 * self.resolution or self.resolution <= 0:
            raise InvalidParameterError(
                f"demo area must be at least 50 px a side; found {self.width_m} x "
                f"{self.height_m} m at {self.resolution} m: enlarge the area"
            )
        if not (0 < self.clean_fraction <= 0.15 and 0 < self.holdout_fraction <= 0.15):
            raise InvalidParameterError(
                f"clean_fraction and holdout_fraction must be in (0, 0.15]; found "
                f"{self.clean_fraction}, {self.holdout_fraction}: the boxes must stay disjoint"
            )
        if not 0 <= self.omission_rate < 1:
            raise InvalidParameterError(
                f"omission_rate must be in [0, 1); found {self.omission_rate}"
            )


@dataclass(frozen=True, slots=True)
class DemoData:
    """Paths of the generated demo data (see the module docstring for the layout)."""

    catalog: Path
    scenes: tuple[Path, ...]
    noisy_labels: Path
    clean_labels: Path
    holdout_truth: Path
    holdout_bbox: BBox
    clean_bbox: BBox
    truth: Path


def make_demo_data(out_dir: Path, spec: DemoSpec = DemoSpec()) -> DemoData:
    """Generate the demo landscape, scenes, STAC catalog, labels and truth under ``out_dir``.

    Args:
        out_dir: Folder to write into (created if missing; files of a previous run replaced).
        spec: Size and knobs of the landscape.

    Returns:
        The paths of everything written, and the clean and held-out boxes (EPSG:4326).
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    ref_crs = CRS.from_user_input(spec.crs)
    cx, cy = Transformer.from_crs(4326, ref_crs, always_xy=True).transform(
        spec.center_lon, spec.center_lat
    )
    res = spec.resolution
    w, h = round(spec.width_m / res), round(spec.height_m / res)
    left, top = round((cx - w * res / 2) / res) * res, round((cy + h * res / 2) / res) * res
    ref_tf = Affine(res, 0, left, 0, -res, top)
    cls, seg, seg_class, tex, roads = _landscape(spec, rng, h, w, ref_tf)
    write_cog(out_dir / "truth.tif", cls[None], ref_crs, ref_tf, IGNORE_ID, "nearest")

    truth = _vectorise(seg, seg_class, ref_tf, ref_crs)
    noisy = _noisy_labels(truth, roads, spec, rng, shapely.box(*_bounds(ref_tf, h, w)))
    clean_bbox, holdout_bbox = _boxes(spec, ref_crs, ref_tf, cls)
    truth_ll = truth.to_crs(4326)
    a, b, c = (out_dir / f"{n}.gpkg" for n in ("labels_noisy", "labels_clean", "holdout_truth"))
    gpkgs = (a, b, c)
    layers = (noisy.to_crs(4326), _clip(truth_ll, clean_bbox), _clip(truth_ll, holdout_bbox))
    for path, gdf in zip(gpkgs, layers, strict=True):
        path.unlink(missing_ok=True)
        gdf.to_file(path, driver="GPKG", layer=path.stem, engine="pyogrio")

    factor = rng.normal(1.0, 0.07, seg_class.size).astype(np.float32)  # per field / patch
    ground = Ground(ref_crs, ref_tf, seg, seg_class, factor, tex)
    boundary = round(spec.center_lon / 6) * 6
    bx = Transformer.from_crs(4326, ref_crs, always_xy=True).transform(boundary, spec.center_lat)[0]
    x0, y1, x1, y0 = ref_tf.c, ref_tf.f, ref_tf.c + w * res, ref_tf.f - h * res
    halves = ((x0, y0, bx + spec.overlap_m / 2, y1), (bx - spec.overlap_m / 2, y0, x1, y1))
    catalog = pystac.Catalog("eoseg-demo", "Synthetic Sentinel-2-like demo scenes (eoseg)")
    scenes = []
    for i, part in enumerate(halves):
        epsg = 32600 + (boundary + 180) // 6 + i
        item = render_scene(
            out_dir / "catalog", spec, rng, ground, epsg, part, SCENE_DATES[i], holdout_bbox
        )
        catalog.add_item(item)
        scenes.append(out_dir / "catalog" / item.id)
    catalog.normalize_hrefs(str(out_dir / "catalog"))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    log.info("demo data (%d x %d px) in %s: %.1f s", w, h, out_dir, time.perf_counter() - t0)
    cat = out_dir / "catalog" / "catalog.json"
    return DemoData(cat, tuple(scenes), *gpkgs, holdout_bbox, clean_bbox, out_dir / "truth.tif")


def _bounds(tf: Affine, h: int, w: int) -> BBox:
    return tf.c, tf.f + h * tf.e, tf.c + w * tf.a, tf.f


def _polyline(rng: np.random.Generator, length: float, across: float, vertical: bool):
    """A wobbly edge-to-edge line in pixel coordinates (x = column, y = row)."""
    t = np.linspace(-5, length + 5, 8)
    s = across * rng.uniform(0.15, 0.85) + np.cumsum(rng.normal(0, across * 0.04, t.size))
    return shapely.LineString(np.c_[s, t] if vertical else np.c_[t, s])


def _landscape(spec: DemoSpec, rng: np.random.Generator, h: int, w: int, tf: Affine):
    """Paint the truth: fields, forest, lakes, river, towns, roads (pixel space)."""
    res = spec.resolution
    lo, hi = (max(2, round(s / res)) for s in spec.field_size_m)
    field = np.zeros((h, w), np.int32)
    n_fields, x = 0, 0
    while x < w:
        dx, y = int(rng.integers(lo, hi)), 0
        while y < h:
            dy = int(rng.integers(lo, hi))
            field[y : y + dy, x : x + dx] = n_fields
            n_fields, y = n_fields + 1, y + dy
        x += dx
    field_class = rng.choice(np.array([2, 3], np.uint8), n_fields, p=[0.4, 0.6])
    cls = field_class[field]
    forest = smooth_noise(rng, (h, w), 300 / res)
    cls[forest > np.quantile(forest, 1 - spec.forest_fraction)] = 1

    area_km2 = h * w * res * res / 1e6
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    wobble = smooth_noise(rng, (h, w), 80 / res)
    cap = 0.3 * min(h, w)  # keeps lakes and towns inside small areas
    for _ in range(max(1, round(area_km2 / 35))):
        r, ly, lx = min(rng.uniform(250, 600) / res, cap), rng.uniform(0, h), rng.uniform(0, w)
        d = np.hypot((xx - lx) / 1.4, yy - ly) / r
        cls[d + 0.25 * wobble < 1] = 0
    river = _polyline(rng, w, h, vertical=False).buffer(spec.river_width_m / 2 / res)
    cls[features.rasterize([river], (h, w), default_value=1).astype(bool)] = 0

    lines = [_polyline(rng, w, h, False) for _ in range(max(1, round(h * res / 4000)))]
    lines += [_polyline(rng, h, w, True) for _ in range(max(1, round(w * res / 4000)))]
    pairs = [a.intersection(b) for i, a in enumerate(lines) for b in lines[i + 1 :]]
    crossings = [p for p in shapely.get_parts(pairs) if p.geom_type == "Point"]
    crossings = [p for p in crossings if 0 <= p.x < w and 0 <= p.y < h]
    for k in range(max(1, round(area_km2 / 30))):
        c = crossings[int(rng.integers(len(crossings)))] if crossings and k % 2 == 0 else None
        tx, ty = (c.x, c.y) if c else (rng.uniform(0, w), rng.uniform(0, h))
        radius, step = min(rng.uniform(400, 900) / res, cap), max(3, round(60 / res))
        for by in range(int(ty - radius), int(ty + radius), step):
            for bx in range(int(tx - radius), int(tx + radius), step):
                d = np.hypot(bx - tx, by - ty) / radius
                if d < 1 and rng.random() < 0.95 - 0.5 * d:
                    bh, bw = rng.integers(max(2, step - 2), step + 1, 2)
                    block = cls[max(by, 0) : by + bh, max(bx, 0) : bx + bw]
                    block[block != 0] = 4
    roads = shapely.buffer(lines, spec.road_width_m / 2 / res)
    cls[features.rasterize(roads, (h, w), default_value=1).astype(bool)] = 5

    # Segments: one id per field parcel, one per connected patch of the other classes.
    seg = field.copy()
    seg_class = [field_class]
    offset = n_fields
    for c in (0, 1, 4, 5):
        comp, n = ndimage.label(cls == c)
        seg[comp > 0] = comp[comp > 0] + offset - 1
        seg_class.append(np.full(n, c, np.uint8))
        offset += n
    tex = 1 + 0.05 * smooth_noise(rng, (h, w), 1.5)
    theta = rng.uniform(0, np.pi, n_fields)[field]
    rows = np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / 4)
    tex += np.where(cls == 3, 0.06 * rows, 0).astype(np.float32)
    world = [
        shapely.transform(ln, lambda p: np.c_[tf.c + p[:, 0] * tf.a, tf.f + p[:, 1] * tf.e])
        for ln in lines
    ]
    return cls, seg, np.concatenate(seg_class), tex.astype(np.float32), world


def _vectorise(seg: np.ndarray, seg_class: np.ndarray, tf: Affine, crs: CRS) -> gpd.GeoDataFrame:
    """Polygons of the segments (4-connectivity keeps them valid), with ``class_id``."""
    shapes = list(features.shapes(seg, connectivity=4, transform=tf))
    geoms = shapely.make_valid(np.array([shapely.geometry.shape(g) for g, _ in shapes]))
    ids = np.array([int(v) for _, v in shapes])
    gdf = gpd.GeoDataFrame({"class_id": seg_class[ids].astype(np.int32)}, geometry=geoms, crs=crs)
    return _polygons(gdf)


def _polygons(gdf: gpd.GeoDataFrame, min_area: float = 0.0) -> gpd.GeoDataFrame:
    """Single polygons only (drops slivers, lines and points left by set operations)."""
    gdf = gdf.explode(index_parts=False).reset_index(drop=True)
    keep = (gdf.geom_type == "Polygon") & (shapely.area(gdf.geometry.to_numpy()) > min_area)
    return gdf[keep].reset_index(drop=True)


def _noisy_labels(
    truth: gpd.GeoDataFrame,
    roads: list[shapely.LineString],
    spec: DemoSpec,
    rng: np.random.Generator,
    area: shapely.Polygon,
) -> gpd.GeoDataFrame:
    """OSM-like labels: shifted, simplified, partly omitted polygons; roads as buffered lines."""
    keep = (truth["class_id"] != 5).to_numpy() & (rng.random(len(truth)) >= spec.omission_rate)
    src = truth[keep]
    shift = rng.normal(0, spec.label_shift_m, (len(src), 2))
    polys = [
        shapely.affinity.translate(g, dx, dy)
        for g, (dx, dy) in zip(src.geometry, shift, strict=True)
    ]
    polys = list(shapely.make_valid(shapely.simplify(polys, spec.resolution)))
    road_shift = rng.normal(0, spec.label_shift_m / 2, (len(roads), 2))
    half = spec.road_width_m / 2 * rng.uniform(0.8, 1.3, len(roads))
    lanes = [
        shapely.affinity.translate(ln, dx, dy).buffer(r)
        for ln, (dx, dy), r in zip(roads, road_shift, half, strict=True)
    ]
    geoms = np.array(lanes + polys, dtype=object)
    cids = np.array([5] * len(lanes) + list(src["class_id"]), np.int32)
    order = np.argsort([_PRIORITY.index(c) for c in cids], kind="stable")
    geoms, cids = geoms[order], cids[order]
    # Subtracting the untrimmed higher-priority neighbours leaves no overlaps at all.
    tree = shapely.STRtree(geoms)
    out = geoms.copy()
    for i, g in enumerate(geoms):
        cand = tree.query(g, predicate="intersects")
        cand = cand[cand < i]
        if cand.size:
            out[i] = g.difference(shapely.union_all(geoms[cand]))
    out = shapely.intersection(out, area)
    gdf = gpd.GeoDataFrame({"class_id": cids}, geometry=out, crs=truth.crs)
    return _polygons(gdf, min_area=spec.resolution**2 / 2)


BOX_MIN_CLASS_SHARE = 0.005
"""Least share of its pixels each class should cover in the held-out box."""
_BOX_STEP = 0.025
"""Step, as a fraction of the area's side, between candidate box centres."""


def _boxes(spec: DemoSpec, crs: CRS, tf: Affine, cls: np.ndarray) -> tuple[BBox, BBox]:
    """Clean training box (north-west) and held-out box (across the zone boundary).

    The clean box sits at a fixed place (25 % east, 72 % north), chosen without looking at
    the landscape, as a small clean set would be: it may lack a rare class, which is what
    noisy pretraining is for (and what fine-tuning's rehearsal covers).

    The held-out box goes to the candidate position nearest its nominal one (centred on the
    zone boundary, 30 % north) that keeps it across the boundary, clear of the clean box,
    and where every class covers at least `BOX_MIN_CLASS_SHARE` of it; where no position
    does, to the one where the most classes do. Why: a reference that lacks a class cannot
    score it, and its mIoU then counts any false positive of that class as an IoU of 0
    (`eoseg.metrics`), so a few stray pixels move the score by a sixth. At a fixed place
    the box held no built-up pixel on some seeds. The search reads only the truth, never a
    model, so the reference is the same for every training compared.
    """
    h, w = cls.shape
    x0, y0, x1, y1 = _bounds(tf, h, w)
    lon, lat = Transformer.from_crs(crs, 4326, always_xy=True).transform(
        [x0, x0, x1, x1], [y0, y1, y0, y1]
    )
    west, east = max(lon[0], lon[1]), min(lon[2], lon[3])
    south, north = max(lat[0], lat[2]), min(lat[1], lat[3])
    n_classes = int(cls[cls != IGNORE_ID].max()) + 1

    def box(fx: float, fy: float, frac: float) -> BBox:
        hw, hh = np.sqrt(frac) / 2 * (east - west), np.sqrt(frac) / 2 * (north - south)
        cx, cy = west + fx * (east - west), south + fy * (north - south)
        return tuple(round(float(v), 7) for v in (cx - hw, cy - hh, cx + hw, cy + hh))  # type: ignore[return-value]

    def classes_covered(b: BBox) -> int:
        bx0, by0, bx1, by1 = transform_bounds(4326, crs, *b, densify_pts=21)
        c0, c1 = (max(0, min(w, round((x - tf.c) / tf.a))) for x in (bx0, bx1))
        r0, r1 = (max(0, min(h, round((y - tf.f) / tf.e))) for y in (by1, by0))
        window = cls[r0:r1, c0:c1]
        counts = np.bincount(window[window != IGNORE_ID], minlength=n_classes)[:n_classes]
        return int((counts >= BOX_MIN_CLASS_SHARE * max(window.size, 1)).sum())

    def place(
        nominal: tuple[float, float], frac: float, xs: np.ndarray, avoid: BBox | None
    ) -> BBox:
        half = np.sqrt(frac) / 2
        ys = np.arange(half, 1 - half + 1e-9, _BOX_STEP)
        cands = [(float(x), float(y)) for x in xs for y in ys if half <= x <= 1 - half]
        cands.sort(key=lambda c: (np.hypot(c[0] - nominal[0], c[1] - nominal[1]), c))
        cands.insert(0, nominal)
        best, best_n = box(*nominal, frac), -1
        for fx, fy in cands:
            b = box(fx, fy, frac)
            if avoid is not None and shapely.box(*b).intersects(shapely.box(*avoid)):
                continue
            n = classes_covered(b)
            if n > best_n:
                best, best_n = b, n
            if n == n_classes:
                break
        if best_n < n_classes:
            log.warning(
                "no %.0f %% box of the demo area holds all %d classes (best %d)",
                100 * frac,
                n_classes,
                best_n,
            )
        return best

    fx = (round(spec.center_lon / 6) * 6 - west) / (east - west)
    clean = box(0.25, 0.72, spec.clean_fraction)
    # The held-out box slides east-west by at most 80 % of its half width: it keeps
    # straddling the zone boundary, which is what it tests (the two scenes' mosaic).
    reach = 0.8 * np.sqrt(spec.holdout_fraction) / 2
    xs = fx + np.arange(-reach, reach + 1e-9, _BOX_STEP / 2)
    return clean, place((fx, 0.3), spec.holdout_fraction, xs, clean)


def _clip(gdf: gpd.GeoDataFrame, bbox: BBox) -> gpd.GeoDataFrame:
    """The polygons of ``gdf`` clipped to ``bbox``."""
    return _polygons(gdf.set_geometry(gdf.geometry.clip_by_rect(*bbox)))
