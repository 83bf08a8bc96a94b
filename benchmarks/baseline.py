"""A per-pixel random forest beside eoseg's U-Net: same cube, labels and held-out truth.

The forest (scikit-learn, 200 trees) learns from the pixels a labels store labels
(``!= 255``) that are valid in the cube, on the same model input eoseg samples its chips
from (`eoseg.sampling.read_window`: the cube's bands, the per-pixel median over valid
dates), predicts the whole grid and is scored against held-out truth (a labels store, a
class-id GeoTIFF or a vector file) with the scoring of ``eoseg evaluate``. Given eoseg's
class map, both are scored on the same truth and printed side by side.

Usage:
  python benchmarks/baseline.py --cube cube.zarr --labels labels.zarr --truth heldout.tif \\
      [--classmap map.zarr] [--classes classes.json] [--code-map codes.json] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from rich.console import Console
from rich.table import Table
from sklearn.ensemble import RandomForestClassifier

from eoseg.classes import IGNORE_ID, ClassSchema, generic_schema, load_schema
from eoseg.classmap import open_classmap
from eoseg.code_map import CodeMapSpec, load_code_map
from eoseg.cube import open_cube
from eoseg.errors import NoOverlapError
from eoseg.labels import open_labels, open_truth
from eoseg.metrics import AccuracyReport, evaluate
from eoseg.publish import evaluate_classmap
from eoseg.sampling import read_window


@dataclass(frozen=True, slots=True)
class ForestOptions:
    """Options of the random forest.

    Attributes:
        trees: Number of trees.
        n_jobs: Worker processes of scikit-learn (the machine is shared: keep it small).
        seed: Seed of the pixel subsample and the forest.
        max_train_pixels: Labelled pixels kept for training (a seeded subsample beyond).
        window: Side in pixels of the windows the cube is read and predicted in.
    """

    trees: int = 200
    n_jobs: int = 2
    seed: int = 0
    max_train_pixels: int = 500_000
    window: int = 1024


@dataclass(frozen=True, slots=True)
class Score:
    """One map's scores on the held-out truth.

    Attributes:
        name: What made the map.
        report: Its accuracy report.
        train_seconds: Training time, when known.
        train_pixels: Labelled pixels it was trained on, when known.
    """

    name: str
    report: AccuracyReport
    train_seconds: float | None = None
    train_pixels: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: the figures, then the full accuracy report."""
        return {
            "name": self.name,
            "overall_accuracy": _none_if_nan(self.report.overall_accuracy),
            "miou": _none_if_nan(self.report.miou),
            "train_seconds": self.train_seconds,
            "train_pixels": self.train_pixels,
            "report": self.report.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class Comparison:
    """The forest's scores and, when a class map was given, eoseg's, on the same truth."""

    forest: Score
    eoseg: Score | None = None

    @property
    def scores(self) -> tuple[Score, ...]:
        """eoseg's score first (when present), then the forest's."""
        return (self.forest,) if self.eoseg is None else (self.eoseg, self.forest)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of both scores."""
        return {
            "forest": self.forest.to_dict(),
            "eoseg": None if self.eoseg is None else self.eoseg.to_dict(),
        }


def windows(height: int, width: int, size: int) -> Iterator[tuple[slice, slice]]:
    """Row-major windows of at most ``size`` px a side covering a ``height x width`` grid."""
    for r in range(0, height, size):
        for c in range(0, width, size):
            yield slice(r, min(r + size, height)), slice(c, min(c + size, width))


def training_pixels(
    cube: xr.Dataset, labels: xr.DataArray, options: ForestOptions
) -> tuple[np.ndarray, np.ndarray]:
    """Features ``(n, band)`` and class ids ``(n,)`` of the labelled pixels valid in the cube.

    Raises:
        NoOverlapError: No labelled pixel is valid in the cube.
    """
    bands = np.arange(cube.sizes["band"])
    xs, ys = [], []
    for rows, cols in windows(cube.sizes["y"], cube.sizes["x"], options.window):
        lab = np.asarray(labels.isel(y=rows, x=cols).values)
        if not (lab != IGNORE_ID).any():
            continue  # no label here: skip reading the imagery
        img = read_window(cube, bands, rows, cols)[0]  # (band, h, w): the median model input
        keep = (lab != IGNORE_ID) & np.isfinite(img).all(axis=0)
        xs.append(img[:, keep].T)
        ys.append(lab[keep])
    x = np.concatenate(xs) if xs else np.zeros((0, bands.size), np.float32)
    y = np.concatenate(ys) if ys else np.zeros(0, np.uint8)
    if y.size == 0:
        raise NoOverlapError(
            "no labelled pixel (label != 255) is valid in the cube: rasterize the labels "
            "onto this cube ('eoseg rasterize --cube') and check that they overlap its data"
        )
    if y.size > options.max_train_pixels:
        rng = np.random.default_rng(options.seed)
        pick = rng.choice(y.size, options.max_train_pixels, replace=False)
        x, y = x[pick], y[pick]
    return x, y


def fit_forest(
    cube: xr.Dataset, labels: xr.DataArray, options: ForestOptions
) -> tuple[RandomForestClassifier, int, float]:
    """Train the forest; returns it, the pixels it saw and the seconds it took."""
    start = time.perf_counter()
    x, y = training_pixels(cube, labels, options)
    forest = RandomForestClassifier(
        n_estimators=options.trees, n_jobs=options.n_jobs, random_state=options.seed
    )
    forest.fit(x, y)
    return forest, int(y.size), time.perf_counter() - start


def predict_forest(
    forest: RandomForestClassifier, cube: xr.Dataset, options: ForestOptions
) -> xr.DataArray:
    """The forest's class map ``(y, x)`` uint8 on the cube's grid, 255 where no valid input."""
    bands = np.arange(cube.sizes["band"])
    height, width = cube.sizes["y"], cube.sizes["x"]
    out = np.full((height, width), IGNORE_ID, dtype=np.uint8)
    for rows, cols in windows(height, width, options.window):
        img = read_window(cube, bands, rows, cols)[0]
        ok = np.isfinite(img).all(axis=0)
        if ok.any():
            block = out[rows, cols]
            block[ok] = forest.predict(img[:, ok].T).astype(np.uint8)
    template = cube["data"].isel(time=0, band=0, drop=True)
    return xr.DataArray(out, coords=template.coords, dims=template.dims, name="class")


def known_schema(classes: Path | None, classmap: Path | None) -> ClassSchema | None:
    """The classes of the comparison: a schema file, else the class map's, else None."""
    if classes is not None:
        return load_schema(classes)
    if classmap is not None:
        return ClassSchema.from_dict(open_classmap(classmap).attrs["classes"])
    return None


def generic_classes(*rasters: xr.DataArray) -> ClassSchema:
    """Generic classes (``class_0`` ...) up to the largest id of the rasters (255 aside)."""
    top = max(int(r.where(r != IGNORE_ID, 0).max().compute()) for r in rasters)
    return generic_schema(top + 1)


def compare(
    cube_path: Path,
    labels_path: Path,
    truth: Path,
    *,
    classmap: Path | None = None,
    classes: Path | None = None,
    class_field: str = "class_id",
    code_map: CodeMapSpec | None = None,
    options: ForestOptions = ForestOptions(),
    workdir: Path | None = None,
) -> Comparison:
    """Train and score the forest; score eoseg's class map on the same truth when given.

    Args:
        cube_path: The cube both models map.
        labels_path: The labels store the forest trains on (eoseg's training labels).
        truth: Held-out truth: a labels store, a class-id GeoTIFF or a vector file.
        classmap: eoseg's class map of the cube, to score beside the forest.
        classes: Class schema file; default the class map's classes, else generic ones.
        class_field: The class field of a vector truth (as ``eoseg evaluate --class-field``).
        code_map: Translation of the truth's codes to class ids (as ``--code-map``).
        options: The forest's options.
        workdir: Where a GeoTIFF or vector truth is rasterized; default a temporary folder.

    Returns:
        The scores.
    """
    with tempfile.TemporaryDirectory(prefix="eoseg-baseline-") as tmp:
        work = workdir or Path(tmp)
        cube = open_cube(cube_path)
        labels = open_labels(labels_path)
        schema = known_schema(classes, classmap)
        mapping = None if code_map is None else load_code_map(code_map, schema)
        reference = open_truth(
            truth,
            cube_path,
            class_field=class_field,
            schema=schema,
            code_map=mapping,
            workdir=work,
        )
        schema = schema or generic_classes(labels, reference)
        forest, n_train, seconds = fit_forest(cube, labels, options)
        pred = predict_forest(forest, cube, options)
        forest_score = Score(
            f"random forest ({options.trees} trees)",
            evaluate(pred, reference, schema),
            seconds,
            n_train,
        )
        eoseg_score = None
        if classmap is not None:
            report = evaluate_classmap(
                classmap, truth, class_field=class_field, code_map=code_map, workdir=work
            )
            eoseg_score = Score("eoseg U-Net", report)
    return Comparison(forest_score, eoseg_score)


def format_table(comparison: Comparison, title: str = "Held-out accuracy") -> Table:
    """A rich table, one row per map: overall accuracy, mIoU, pixels scored, training."""
    table = Table(title=title)
    for col in ("map", "OA", "mIoU", "pixels", "train s", "train px"):
        table.add_column(col, justify="left" if col == "map" else "right")
    for s in comparison.scores:
        r = s.report
        table.add_row(
            s.name,
            _fmt(r.overall_accuracy),
            _fmt(r.miou),
            f"{r.n_pixels:,}",
            "–" if s.train_seconds is None else f"{s.train_seconds:.1f}",
            "–" if s.train_pixels is None else f"{s.train_pixels:,}",
        )
    return table


def format_classes(comparison: Comparison) -> Table:
    """A rich table, one row per class: each map's IoU and the truth pixels."""
    table = Table(title="IoU per class")
    table.add_column("class")
    for s in comparison.scores:
        table.add_column(s.name, justify="right")
    table.add_column("truth px", justify="right")
    forest = comparison.forest.report
    for i, name in enumerate(forest.class_names):
        table.add_row(
            name, *(_fmt(s.report.iou[i]) for s in comparison.scores), f"{forest.support[i]:,}"
        )
    return table


def _fmt(v: float) -> str:
    return "–" if math.isnan(v) else f"{v:.3f}"


def _none_if_nan(v: float) -> float | None:
    return None if math.isnan(v) else v


DEFAULTS = ForestOptions()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cube", type=Path, required=True)
    parser.add_argument("--labels", type=Path, required=True, help="training labels store")
    parser.add_argument("--truth", type=Path, required=True, help="held-out truth")
    parser.add_argument("--classmap", type=Path, help="eoseg's class map to score beside")
    parser.add_argument("--classes", type=Path, help="class schema (TOML or JSON)")
    parser.add_argument("--class-field", default="class_id")
    parser.add_argument("--code-map", help="truth codes to classes, as for eoseg evaluate")
    parser.add_argument("--class-map", dest="code_map", help=argparse.SUPPRESS)  # old name
    parser.add_argument("--trees", type=int, default=DEFAULTS.trees)
    parser.add_argument("--jobs", type=int, default=DEFAULTS.n_jobs)
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    comparison = compare(
        args.cube,
        args.labels,
        args.truth,
        classmap=args.classmap,
        classes=args.classes,
        class_field=args.class_field,
        code_map=args.code_map,
        options=ForestOptions(trees=args.trees, n_jobs=args.jobs, seed=args.seed),
    )
    if args.json:
        sys.stdout.write(json.dumps(comparison.to_dict(), indent=1) + "\n")
    else:
        console = Console()
        console.print(format_table(comparison))
        console.print(format_classes(comparison))


if __name__ == "__main__":
    main()
