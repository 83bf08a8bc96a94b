"""The real land-cover samples as a user brings them to eoseg: sources, training labels,
held-out truth and a class schema, written as files the CLI reads.

Used by `benchmarks/realdata.py` and the realdata tests. The samples live in
``../shared/data/real`` beside the checkout (see its README.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
from rasterio.features import rasterize

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
PALETTE = ("#fee08b", "#1b7837", "#a6dba0", "#8c510a", "#d73027", "#1f78b4", "#762a83")
IGNORE = 255


@dataclass(frozen=True, slots=True)
class Prepared:
    """What a user brings for one sample, in files eoseg reads."""

    sources: tuple[Path, ...]
    train_labels: Path
    truth: Path
    classes: Path
    code_map: Path | None = None
    ingest_options: tuple[str, ...] = ()  # extra `eoseg ingest` options
    notes: tuple[str, ...] = ()
    probes: tuple[tuple[str, tuple[str, ...]], ...] = ()  # extra commands whose outcome we note


def write_schema(names: Sequence[str], path: Path) -> Path:
    """A JSON class schema (ids 0..n-1 in order) for ``eoseg --classes``."""
    doc = [{"id": i, "name": n, "color": PALETTE[i % len(PALETTE)]} for i, n in enumerate(names)]
    path.write_text(json.dumps(doc, indent=1))
    return path


def schema_from_classes_json(sample: Path, work: Path) -> tuple[Path, Path, tuple[str, ...]]:
    """A schema and a code map from a sample's ``classes.json`` (``{"code": "name"}``).

    eoseg's class ids are 0..n-1, so the sample's codes (1..4, or 1, 2, 3, 4, 8) are
    renumbered by a ``--code-map`` file; ``no data`` is dropped (ignored).
    """
    codes = json.loads((sample / "classes.json").read_text())
    kept = sorted((int(c), n) for c, n in codes.items() if n != "no data")
    names = tuple(n for _, n in kept)
    mapping: dict[str, int | str] = {str(c): i for i, (c, _) in enumerate(kept)}
    mapping.update({c: "ignore" for c, n in codes.items() if n == "no data"})
    (work / "codes.json").write_text(json.dumps(mapping, indent=1))
    return write_schema(names, work / "classes.json"), work / "codes.json", names


def prepare_slovenia(data: Path, work: Path, seed: int) -> Prepared:
    """Three dates, 35 polygons, held-out truth = lulc.tif minus the training polygons."""
    sample = data / "eolearn_slovenia"
    classes, codes, _ = schema_from_classes_json(sample, work)
    polygons = gpd.read_file(sample / "training_polygons.gpkg")
    with rasterio.open(sample / "lulc.tif") as src:
        lulc = src.read(1)
        profile = src.profile | {"nodata": IGNORE}
        # all_touched: also mask pixels a polygon only grazes, so that no training pixel
        # survives the truth's resampling onto the cube grid (its pixels are not square).
        burnt = rasterize(
            polygons.to_crs(src.crs).geometry,
            out_shape=lulc.shape,
            transform=src.transform,
            all_touched=True,
        ).astype(bool)
    truth = np.where(burnt | (lulc == 0), IGNORE, lulc).astype(np.uint8)
    with rasterio.open(work / "heldout.tif", "w", **profile) as dst:
        dst.write(truth, 1)
    dates = tuple(sorted(sample.glob("s2_l1c_*.tif")))
    # What a new user tries first: the three dates as three time steps, and the class
    # ids of classes.json as they are.
    given = json.loads((sample / "classes.json").read_text())
    as_given = [{"id": int(c), "name": n, "color": "#808080"} for c, n in given.items()]
    (work / "classes_as_given.json").write_text(json.dumps(as_given))
    by_date = ("ingest", *map(str, dates), "--out", str(work / "bydate.zarr"), "--by-date")
    naive: tuple[str, ...] = ("rasterize", str(sample / "training_polygons.gpkg"), "--cube")
    naive += ("{cube}", "--out", str(work / "naive.zarr"))
    naive += ("--classes", str(work / "classes_as_given.json"))
    return Prepared(
        sources=dates,
        train_labels=sample / "training_polygons.gpkg",
        truth=work / "heldout.tif",
        classes=classes,
        code_map=codes,
        # One median composite of the three dates (the forest reads the median too).
        ingest_options=("--composite", "median"),
        notes=(f"held-out truth: {int((truth != IGNORE).sum())} px of lulc.tif",),
        probes=(("ingest --by-date", by_date), ("rasterize, classes.json ids as given", naive)),
    )


def prepare_amazon(data: Path, work: Path, seed: int) -> Prepared:
    """25 polygons split per class into ~2/3 training and ~1/3 held-out polygons (seeded)."""
    sample = data / "amazon_s2_l2a"
    classes, codes, _ = schema_from_classes_json(sample, work)
    polygons = gpd.read_file(sample / "training_polygons.gpkg")
    rng = np.random.default_rng(seed)
    held = np.zeros(len(polygons), bool)
    for _, rows in polygons.groupby("class_id").indices.items():
        order = rng.permutation(rows)
        held[order[: max(1, round(len(rows) / 3))]] = True
    polygons[~held].to_file(work / "train.gpkg")
    polygons[held].to_file(work / "heldout.gpkg")
    per_class = polygons[held].groupby("class_name").size().to_dict()
    return Prepared(
        sources=(sample / "s2_l2a.tif",),
        train_labels=work / "train.gpkg",
        truth=work / "heldout.gpkg",
        classes=classes,
        code_map=codes,
        notes=(f"{int(held.sum())}/{len(polygons)} polygons held out (seed {seed}): {per_class}",),
    )


def split_building_rasters(
    scene: Path, footprints: Path, train: Path, heldout: Path, train_cols: int = 600
) -> np.ndarray:
    """Class-id GeoTIFFs on the scene's grid: buildings (1) and background (0) in the west
    ``train_cols`` columns (``train``) and in the rest (``heldout``), 255 elsewhere.

    Returns the full 0/1 building mask.
    """
    shapes = gpd.read_file(footprints)
    with rasterio.open(scene) as src:
        mask = rasterize(
            shapes.to_crs(src.crs).geometry,
            out_shape=(src.height, src.width),
            transform=src.transform,
            fill=0,
            dtype="uint8",
        )
        profile = {
            "driver": "GTiff",
            "width": src.width,
            "height": src.height,
            "count": 1,
            "dtype": "uint8",
            "crs": src.crs,
            "transform": src.transform,
            "nodata": IGNORE,
        }
    for path, keep in ((train, slice(0, train_cols)), (heldout, slice(train_cols, None))):
        part = np.full_like(mask, IGNORE)
        part[:, keep] = mask[:, keep]
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(part, 1)
    return mask


def prepare_spacenet(data: Path, work: Path, seed: int) -> Prepared:
    """Buildings: the west 600 columns trained, the east 300 held out."""
    sample = data / "spacenet_atlanta"
    scene = sample / "sample_geotiff.tif"
    split_building_rasters(
        scene, sample / "geotiff_labels.geojson", work / "train.tif", work / "heldout.tif"
    )
    return Prepared(
        sources=(scene,),
        train_labels=work / "train.tif",
        truth=work / "heldout.tif",
        classes=write_schema(("background", "building"), work / "classes.json"),
    )


SAMPLES: dict[str, Callable[[Path, Path, int], Prepared]] = {
    "eolearn_slovenia": prepare_slovenia,
    "amazon_s2_l2a": prepare_amazon,
    "spacenet_atlanta": prepare_spacenet,
}
