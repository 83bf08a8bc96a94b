"""The area-change report between two versions of a product: table and change quicklook.

Built on `eoseg.version_diff`: only the tiles whose pixels differ are read, so a report
after a regeneration that recomputed a tenth of the map reads a tenth of it. Each class's
km² before and after are over those tiles (elsewhere nothing changed); over a fixed grid
every pixel is counted once on each side, so the changes of all classes plus nodata sum
to zero.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eoseg.classes import IGNORE_ID, ClassSchema
from eoseg.dates import DateChoice, select_date
from eoseg.grid import grid_of
from eoseg.stats import pixel_areas
from eoseg.storage import resolve
from eoseg.version_diff import VersionDiff, diff_versions
from eoseg.versions import open_version

_AREA_SHAPE = 512
"""The map's area is summed over a grid of at most this many pixels a side (same extent)."""


@dataclass(frozen=True, slots=True)
class ChangeRow:
    """One class's area before and after, over the changed tiles, in km²."""

    name: str
    km2_before: float
    km2_after: float

    @property
    def km2_change(self) -> float:
        """Gained minus lost."""
        return self.km2_after - self.km2_before


@dataclass(frozen=True, slots=True)
class ChangeReport:
    """Per-class area changes from version ``before`` to ``after`` (nodata last).

    Attributes:
        before: Snapshot id of the earlier version.
        after: Snapshot id of the later version.
        tiles: Tiles of the map.
        changed_tiles: Names of the tiles whose pixels differ.
        rows: One per class, then ``nodata``.
        map_km2: The whole map's area on the ellipsoid.
        changed_km2: The area of the changed tiles.
        date: The date compared, for a per-date class map.
    """

    before: str
    after: str
    tiles: int
    changed_tiles: tuple[str, ...]
    rows: tuple[ChangeRow, ...]
    map_km2: float
    changed_km2: float
    date: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``--json`` prints and ``areas.json`` holds)."""
        return {
            "before": self.before,
            "after": self.after,
            "tiles": self.tiles,
            "changed_tiles": list(self.changed_tiles),
            "map_km2": self.map_km2,
            "changed_km2": self.changed_km2,
            "date": self.date,
            "classes": [
                {
                    "class": r.name,
                    "km2_before": r.km2_before,
                    "km2_after": r.km2_after,
                    "km2_change": r.km2_change,
                }
                for r in self.rows
            ],
        }

    def to_csv(self) -> str:
        """One line per class: class, km2_before, km2_after, km2_change."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["class", "km2_before", "km2_after", "km2_change"])
        for r in self.rows:
            writer.writerow([r.name, repr(r.km2_before), repr(r.km2_after), repr(r.km2_change)])
        return out.getvalue()

    def to_markdown(self) -> str:
        """The table in Markdown (`markdown_of`)."""
        return markdown_of(self.to_dict())


def markdown_of(doc: dict[str, Any]) -> str:
    """A change report's table in Markdown, from its dict (`ChangeReport.to_dict`), with
    the tiles changed and the area they cover."""
    changed = doc["changed_km2"]
    lines = [
        f"{len(doc['changed_tiles'])} of {doc['tiles']} tiles changed "
        f"({changed:.4f} of {doc['map_km2']:.4f} km²), "
        f"version `{doc['before']}` → `{doc['after']}`",
        "",
        "| class | km² before | km² after | change (km²) |",
        "|---|---:|---:|---:|",
    ]
    for c in doc["classes"]:
        lines.append(
            f"| {c['class']} | {c['km2_before']:.4f} | {c['km2_after']:.4f} "
            f"| {c['km2_change']:+.4f} |"
        )
    total = sum(c["km2_change"] for c in doc["classes"])
    lines.append(f"| **sum** | {changed:.4f} | {changed:.4f} | {total:+.4f} |")
    return "\n".join(lines) + "\n"


def change_report(
    location: str | Path, before: str, after: str = "latest", *, date: DateChoice = None
) -> ChangeReport:
    """The area-change report between two versions of a product (ids, tags, numbers).

    Args:
        date: For a per-date class map, the date to compare (`eoseg.dates.select_date`).

    Raises:
        InvalidParameterError: No such version, versions on different grids, or a
            multi-date map without ``date``.
    """
    diff = diff_versions(location, before, after, date=date)
    return report_of(diff, location, None if date is None else str(date))


def report_of(diff: VersionDiff, location: str | Path, date: str | None = None) -> ChangeReport:
    """A `ChangeReport` from a version diff (``location``: its repository)."""
    rows = tuple(
        ChangeRow(name, float(diff.km2[i, :].sum()), float(diff.km2[:, i].sum()))
        for i, name in enumerate(diff.class_names)
    )
    grid = grid_of(open_version(location, diff.after), "class map")
    coarse = grid.zoom_to(
        (min(grid.shape.y, _AREA_SHAPE), min(grid.shape.x, _AREA_SHAPE))
    )  # same extent: the sum of its pixels' areas is the map's
    return ChangeReport(
        before=diff.before,
        after=diff.after,
        tiles=diff.tiles,
        changed_tiles=diff.changed_tiles,
        rows=rows,
        map_km2=float(pixel_areas(coarse).sum() / 1e6),
        changed_km2=float(diff.km2.sum()),
        date=date,
    )


def write_change_report(report: ChangeReport, folder: str | Path) -> dict[str, str]:
    """Write ``areas.csv``, ``areas.md`` and ``areas.json`` (last) into ``folder``, a path
    or fsspec URL, each whole (`eoseg.storage.Location.write_text`); their locations."""
    dest = resolve(folder, "--report")
    out = {}
    for name, text in (
        ("areas.csv", report.to_csv()),
        ("areas.md", report.to_markdown()),
        ("areas.json", json.dumps(report.to_dict(), indent=2)),
    ):
        dest.child(name).write_text(text)
        out[name.split(".")[1]] = str(dest.child(name))
    return out


def write_change_quicklook(
    location: str | Path,
    before: str,
    after: str,
    out: str | Path,
    *,
    max_size: int = 1024,
    date: DateChoice = None,
) -> str:
    """A PNG of what changed: each changed pixel in its new class's colour, the rest grey.

    The versions (of one ``date`` for a per-date map) are decimated by striding
    (nearest), so memory stays small for any map.
    """
    import matplotlib  # local: plotting is only needed here

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    purpose = "the versions are compared on one date"
    old = select_date(open_version(location, before), date, purpose=purpose)
    new = select_date(open_version(location, after), date, purpose=purpose)
    schema = ClassSchema.from_dict(new.attrs["classes"])
    step = max(1, -(-max(new.sizes["y"], new.sizes["x"]) // max_size))
    a = np.asarray(old["class"][::step, ::step].values)
    b = np.asarray(new["class"][::step, ::step].values)
    shown = np.where(a != b, b.astype(np.int16), -1)  # -1: unchanged
    shown[(a != b) & (b == IGNORE_ID)] = len(schema)  # became nodata
    colours = ["#d9d9d9", *[c.color for c in schema], "#000000"]
    fig, ax = plt.subplots(figsize=(8, 8 * shown.shape[0] / max(shown.shape[1], 1) + 0.6))
    ax.imshow(
        shown + 1, cmap=ListedColormap(colours), vmin=-0.5, vmax=len(colours) - 0.5,
        interpolation="nearest",
    )  # fmt: skip
    ax.set_axis_off()
    changed = int((a != b).sum())
    ax.set_title(f"changed pixels ({changed} of {a.size} shown): {before} → {after}")
    handles = [Patch(color="#d9d9d9", label="unchanged")]
    handles += [Patch(color=c.color, label=f"→ {c.name}") for c in schema]
    ax.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, -0.12), ncol=4)
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    where = resolve(out, "--report")
    where.write_bytes(png.getvalue())  # whole: a temporary renamed locally, one PUT remotely
    return str(where)
