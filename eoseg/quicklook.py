"""A quicklook of a class map: a small PNG with a legend, for eyes, not for analysis."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from eoseg.classes import IGNORE_ID, ClassSchema
from eoseg.classmap import open_classmap
from eoseg.dates import DATE_FIELD, DateChoice, select_date, selected_date
from eoseg.outputs import PRODUCT_KEY, check_replaceable


def write_quicklook(
    classmap_path: Path | str,
    out: Path,
    *,
    max_size: int = 1024,
    title: str | None = None,
    date: DateChoice = None,
) -> Path:
    """Render a small PNG of the class map (of one date: see `eoseg.cog.write_cog`) with a legend.

    The map is decimated by striding (nearest), so memory stays small for any map size.
    """
    import matplotlib  # local: plotting is only needed here

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    purpose = f"or put {DATE_FIELD} in the --quicklook path to render each"
    ds = select_date(open_classmap(classmap_path), date, purpose=purpose)
    schema = ClassSchema.from_dict(ds.attrs["classes"])
    ny, nx = ds.sizes["y"], ds.sizes["x"]
    step = max(1, -(-max(ny, nx) // max_size))
    small = np.asarray(ds["class"][::step, ::step].values)
    masked = np.ma.masked_equal(small, IGNORE_ID)
    cmap = ListedColormap([c.color for c in schema])
    fig, ax = plt.subplots(figsize=(8, 8 * small.shape[0] / max(small.shape[1], 1) + 0.6))
    ax.imshow(masked, cmap=cmap, vmin=-0.5, vmax=len(schema) - 0.5, interpolation="nearest")
    ax.set_axis_off()
    day = selected_date(ds)
    when = f", {day}" if day else ""
    ax.set_title(title or f"class map ({ds.attrs.get('model_version', '')}{when})")
    handles = [Patch(color=c.color, label=c.name) for c in schema]
    ax.legend(
        handles=handles,
        loc="lower center",
        bbox_to_anchor=(0.5, -0.12),
        ncol=min(len(schema), 6),
        frameon=False,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".quicklook-") as tmp:
        staged = Path(tmp) / "quicklook.png"
        fig.savefig(staged, dpi=100, bbox_inches="tight", metadata={PRODUCT_KEY: "quicklook"})
        plt.close(fig)
        check_replaceable(out, staged)
        os.replace(staged, out)
    return out
