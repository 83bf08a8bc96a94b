"""``eoseg sample`` and ``eoseg areas``: a reference sample, and the areas it supports."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from eoseg.cli import console
from eoseg.cli.common import JsonOpt, OverwriteOpt, guard
from eoseg.cli.mapping import DateOpt, RegionFieldOpt, RegionsOpt

if TYPE_CHECKING:
    from eoseg.area_estimate import AreaEstimate


def sample(
    classmap: Annotated[str, typer.Argument(help="Class map store (path or URL).")],
    out: Annotated[
        str,
        typer.Option("--out", help="Sample file to write: .gpkg (points) or .csv (path or URL)."),
    ],
    n: Annotated[int, typer.Option("--n", help="Total points (proportional allocation).")] = 500,
    min_per_class: Annotated[
        int, typer.Option("--min-per-class", help="Least points of each mapped class.")
    ] = 50,
    counts: Annotated[
        str | None,
        typer.Option(
            "--counts",
            help="Points per class instead, e.g. 'forest=100,water=50' (classes left out "
            "get none).",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random draw.")] = 0,
    date: DateOpt = None,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Draw a stratified random sample of points from a class map, for labelling.

    The strata are the mapped classes: each class gets a share of --n proportional to
    its pixels but at least --min-per-class points (or the --counts given). Points are
    pixel centres in the map's CRS (x, y) with lon/lat, each with its map class and an
    empty 'reference' column to fill; then estimate areas with 'eoseg areas':

      eoseg sample map.zarr --out sample.gpkg --n 600 --min-per-class 75 --seed 1
    """
    from eoseg.reachability import check_reachable
    from eoseg.reference_areas import sample_classmap
    from eoseg.reference_sample import SampleDesign, parse_counts
    from eoseg.storage import location

    def body() -> None:
        _check_sizes(n, min_per_class)
        design = SampleDesign(n, min_per_class, parse_counts(counts), seed)
        mapped, target = location(classmap), location(out)
        check_reachable({"CLASSMAP": mapped, "--out": target})
        doc = sample_classmap(mapped, target, design, date=date, overwrite=overwrite)
        if json_out:
            console.emit_json(doc)
            return
        table = Table(title=f"sample: {doc['points']} points in {out}")
        table.add_column("class")
        table.add_column("points", justify="right")
        for name, points in doc["classes"].items():
            table.add_row(name, str(points))
        console.stdout.print(table)

    guard(body)


def areas(
    classmap: Annotated[str, typer.Argument(help="Class map store (path or URL).")],
    reference: Annotated[
        str,
        typer.Option(
            "--reference",
            help="The labelled sample (from eoseg sample): .gpkg or .csv (path or URL).",
        ),
    ],
    reference_field: Annotated[
        str,
        typer.Option("--reference-field", help="Column of the reference labels (names or ids)."),
    ] = "reference",
    regions: RegionsOpt = None,
    region_field: RegionFieldOpt = "name",
    date: DateOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Error-adjusted class areas with 95% confidence intervals, from a reference sample.

    Stratified estimators of Olofsson et al. (2014): per class, the mapped area, the
    error-adjusted area with its standard error and 95% interval, user's and producer's
    accuracy with standard errors, and overall accuracy. Areas are km² on the ellipsoid.
    With --regions, the same per region (the points and mapped areas inside it).
    """
    from eoseg.reachability import check_reachable
    from eoseg.reference_areas import estimate_areas
    from eoseg.storage import location

    def body() -> None:
        mapped, sample_at = location(classmap), location(reference)
        check_reachable({"CLASSMAP": mapped, "--reference": sample_at})
        result = estimate_areas(
            mapped,
            sample_at,
            field=reference_field,
            regions=regions,
            region_field=region_field,
            date=date,
        )
        if json_out:
            console.emit_json(result.to_dict())
            return
        console.stdout.print(areas_table(result.estimate, "Areas (km²)"))
        for name, estimate in result.regions.items():
            if estimate is None:
                console.stdout.print(f"{name}: no estimate ({result.skipped[name]})")
            else:
                console.stdout.print(areas_table(estimate, f"Areas in {name} (km²)"))

    guard(body)


def areas_table(estimate: AreaEstimate, title: str) -> Table:
    """A rich table of mapped and error-adjusted areas with accuracies."""
    caption = (
        f"overall accuracy {_f(estimate.overall_accuracy)} ± "
        f"{_f(estimate.z * estimate.overall_accuracy_se)} (95%) · "
        f"{sum(map(sum, estimate.sample_counts))} points"
    )
    table = Table(title=title, caption=caption)
    for col in (
        "class",
        "points",
        "mapped",
        "adjusted",
        "95% CI",
        "user's acc.",
        "producer's acc.",
    ):
        table.add_column(col, justify="left" if col == "class" else "right")
    for k, name in enumerate(estimate.class_names):
        low, high = estimate.ci(k)
        table.add_row(
            name,
            str(sum(estimate.sample_counts[k])),
            f"{estimate.mapped_area[k]:,.4f}",
            f"{estimate.area[k]:,.4f}",
            f"{low:,.4f} – {high:,.4f}",
            f"{_f(estimate.users_accuracy[k])} ± {_f(estimate.z * estimate.users_accuracy_se[k])}",
            f"{_f(estimate.producers_accuracy[k])} ± "
            f"{_f(estimate.z * estimate.producers_accuracy_se[k])}",
        )
    return table


def _check_sizes(n: int, min_per_class: int) -> None:
    from eoseg.errors import InvalidParameterError

    if n < 1 or min_per_class < 0:
        raise InvalidParameterError(
            f"--n must be >= 1 and --min-per-class >= 0; found --n {n}, --min-per-class "
            f"{min_per_class}"
        )


def _f(v: float) -> str:
    return "–" if math.isnan(v) else f"{v:.3f}"
